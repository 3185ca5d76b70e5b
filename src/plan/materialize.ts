import { formatError } from "../errors.js";
import { readInto } from "../io/byte-source.js";
import { castBytes, type CastStats } from "../tensors/cast.js";
import { byteSize, DTYPES, numel } from "../tensors/dtypes.js";
import { DEFAULT_BLOCK_BYTES } from "./pool.js";
import type { Recipe } from "./recipe.js";

/** Rows along dim 0 (a 0-d tensor is one row). */
export function rowCount(r: Recipe): number {
  return r.shape.length === 0 ? 1 : (r.shape[0] as number);
}

export function rowBytes(r: Recipe): number {
  return byteSize(r.dtype, r.shape.slice(1));
}

/**
 * The bytes of rows [start, end) of a recipe's output, reading only what those rows need. The executor walks a
 * tensor in row blocks, so memory stays at a block, not a tensor, for every recipe kind. Given `into` (a reused
 * block buffer at least that large), the rows are made in its first bytes and the result is that view.
 */
export async function materializeRows(r: Recipe, start: number, end: number, stats: CastStats, into?: Uint8Array): Promise<Uint8Array> {
  const made = await rows(r, start, end, stats, into?.subarray(0, (end - start) * rowBytes(r)));
  if (into === undefined || made.buffer === into.buffer) return made;
  const out = into.subarray(0, made.byteLength);
  out.set(made);
  return out;
}

/** materializeRows, free to ignore `into` where no fresh buffer is made (pass-through slices). */
async function rows(r: Recipe, start: number, end: number, stats: CastStats, into: Uint8Array | undefined): Promise<Uint8Array> {
  const rb = rowBytes(r);
  switch (r.kind) {
    case "read":
      if (into) {
        await readInto(r.source, into, r.offset + start * rb);
        return into;
      }
      return r.source.read(r.offset + start * rb, (end - start) * rb);
    case "strided":
      return gatherStrided(r, start, end);
    case "cast":
      return castBytes(await materializeRows(r.input, start, end, stats), r.input.dtype, r.dtype, stats);
    case "padRows": {
      const have = rowCount(r.input);
      const out = into ?? new Uint8Array((end - start) * rb);
      const realEnd = Math.min(end, have);
      if (start < realEnd) {
        out.set(await materializeRows(r.input, start, realEnd, stats), 0);
      }
      if (end > have) {
        const last = await materializeRows(r.input, have - 1, have, stats);
        for (let row = Math.max(start, have); row < end; row++) out.set(last, (row - start) * rb);
      }
      return out;
    }
    case "concat":
      return r.dim === 0 ? concatRows(r.parts, start, end, rb, stats, into) : concatInner(r, start, end, stats, into);
    case "select":
      return r.dim === 0 ? selectRows(r.input, r.indices, start, end, rb, stats, into) : selectInner(r, start, end, stats, into);
  }
}

async function concatRows(parts: readonly Recipe[], start: number, end: number, rb: number, stats: CastStats, into?: Uint8Array) {
  let base = 0;
  for (const p of parts) {
    const n = rowCount(p);
    // Rows inside one part (the usual case for row blocks): hand that part's bytes through without a copy.
    if (start >= base && end <= base + n) return rows(p, start - base, end - base, stats, into);
    base += n;
  }
  const out = into ?? uninitialized((end - start) * rb);
  base = 0;
  for (const p of parts) {
    const n = rowCount(p);
    const lo = Math.max(start, base);
    const hi = Math.min(end, base + n);
    if (lo < hi) {
      out.set(await materializeRows(p, lo - base, hi - base, stats), (lo - start) * rb);
    }
    base += n;
  }
  return out;
}

/** Concatenation on dim k > 0: the same rows of every part, interleaved block by block (row-parallel merges). */
async function concatInner(r: Recipe & { kind: "concat" }, start: number, end: number, stats: CastStats, into?: Uint8Array) {
  const blocks = await Promise.all(r.parts.map((p) => materializeRows(p, start, end, stats)));
  const outer = (end - start) * numel(r.shape.slice(1, r.dim));
  const inner = r.parts.map((p) => byteSize(p.dtype, p.shape.slice(r.dim)));
  const total = inner.reduce((a, b) => a + b, 0);
  const out = asBuffer(into ?? uninitialized(outer * total));
  // Buffer.copy moves a range without creating a view per row (views made the GC the hot spot of row merges).
  const sources = blocks.map(asBuffer);
  for (let o = 0; o < outer; o++) {
    let at = o * total;
    for (const [i, b] of sources.entries()) {
      const w = inner[i] as number;
      b.copy(out, at, o * w, (o + 1) * w);
      at += w;
    }
  }
  return out;
}

/**
 * Row selection reads each run of consecutive source rows once, and runs that lie close together (pruned rows keep
 * most of their neighbours) in one request covering them all, so a scattered selection costs a few large reads
 * instead of one small read per row. The reads of one block run concurrently.
 */
async function selectRows(input: Recipe, indices: readonly number[], start: number, end: number, rb: number, stats: CastStats, into?: Uint8Array) {
  const first = indices[start] as number;
  if (indices[end - 1] === first + (end - 1 - start) && isRun(indices, start, end)) {
    return rows(input, first, first + (end - start), stats, into); // a slice: no copy
  }
  const out = into ?? uninitialized((end - start) * rb);
  const runs: { from: number; count: number; at: number }[] = [];
  for (let i = start; i < end; ) {
    const from = indices[i] as number;
    let j = i + 1;
    while (j < end && indices[j] === from + (j - i)) j++;
    runs.push({ from, count: j - i, at: i - start });
    i = j;
  }
  // Windows of source rows: runs sorted by source row, merged while the rows skipped between them cost less to
  // read than another request (GAP_BYTES) and the window stays near a block.
  const sorted = [...runs].sort((a, b) => a.from - b.from);
  const gapRows = Math.max(1, Math.floor(GAP_BYTES / Math.max(1, rb)));
  const maxRows = Math.max(1, Math.floor(WINDOW_BYTES / Math.max(1, rb)));
  const windows: { lo: number; hi: number; runs: typeof runs }[] = [];
  for (const run of sorted) {
    const w = windows.at(-1);
    if (w && run.from <= w.hi + gapRows && Math.max(w.hi, run.from + run.count) - w.lo <= maxRows) {
      w.hi = Math.max(w.hi, run.from + run.count);
      w.runs.push(run);
    } else {
      windows.push({ lo: run.from, hi: run.from + run.count, runs: [run] });
    }
  }
  let next = 0;
  const worker = async () => {
    for (let w = windows[next++]; w; w = windows[next++]) {
      const bytes = await materializeRows(input, w.lo, w.hi, stats);
      for (const run of w.runs) out.set(bytes.subarray((run.from - w.lo) * rb, (run.from - w.lo + run.count) * rb), run.at * rb);
    }
  };
  await Promise.all(Array.from({ length: Math.min(READS_IN_FLIGHT, windows.length) }, worker));
  return out;
}

/** Skipped bytes worth reading to save a request (a page-cache read of 256 KiB costs about one request). */
const GAP_BYTES = 256 << 10;
/** Largest window of source rows read at once: it sits in memory beside the output block. */
const WINDOW_BYTES = DEFAULT_BLOCK_BYTES;
/** Concurrent window reads of one block (a scattered vocabulary re-index has thousands of them). */
const READS_IN_FLIGHT = 8;

async function selectInner(r: Recipe & { kind: "select" }, start: number, end: number, stats: CastStats, into?: Uint8Array) {
  const src = await materializeRows(r.input, start, end, stats);
  const outer = (end - start) * numel(r.input.shape.slice(1, r.dim));
  const innerBytes = byteSize(r.dtype, r.input.shape.slice(r.dim + 1));
  const n = r.input.shape[r.dim] as number;
  const out = into ?? uninitialized(outer * innerBytes * r.indices.length);
  // Column selects: copy through a typed view of the widest element that divides the kept unit. Long runs of kept
  // columns are copied as runs; scattered ones (pruning masks keep about every other column) go through a
  // precomputed offset map in one tight loop per outer slice, an order of magnitude faster than walking runs.
  const width = [4, 2, 1].find((w) => innerBytes % w === 0 && src.byteOffset % w === 0 && out.byteOffset % w === 0) as number;
  const inner = innerBytes / width;
  const runs = indexRuns(r.indices);
  const kept = r.indices.length * inner;
  const stride = n * inner;
  if (kept / (runs.length / 2) >= LONG_RUN) {
    const from = asBuffer(src);
    const to = asBuffer(out);
    const unit = width; // runs and strides below count elements of this many bytes
    let at = 0;
    for (let o = 0; o < outer; o++) {
      for (let k = 0; k < runs.length; k += 2) {
        const s0 = o * stride + (runs[k] as number) * inner;
        const len = (runs[k + 1] as number) * inner;
        from.copy(to, at * unit, s0 * unit, (s0 + len) * unit);
        at += len;
      }
    }
    return out;
  }
  const map = new Int32Array(kept);
  let m = 0;
  for (const i of r.indices) for (let e = 0; e < inner; e++) map[m++] = i * inner + e;
  if (width === 4) gather32(view(src, 4) as Uint32Array, view(out, 4) as Uint32Array, map, outer, stride);
  else if (width === 2) gather16(view(src, 2) as Uint16Array, view(out, 2) as Uint16Array, map, outer, stride);
  else gather8(src, out, map, outer, stride);
  return out;
}

/** The same bytes as a Buffer (no copy), for Buffer.copy. */
function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** Kept elements per run from which copying runs beats the offset map. */
const LONG_RUN = 32;

function view(b: Uint8Array, width: number): Uint8Array | Uint16Array | Uint32Array {
  const n = b.byteLength / width;
  return width === 4 ? new Uint32Array(b.buffer, b.byteOffset, n) : width === 2 ? new Uint16Array(b.buffer, b.byteOffset, n) : b;
}

// One function per element width keeps each loop monomorphic (one typed-array kind), so the JIT compiles it tight.
function gather32(from: Uint32Array, to: Uint32Array, map: Int32Array, outer: number, stride: number): void {
  const m = map.length;
  for (let o = 0, at = 0; o < outer; o++, at += m) {
    const base = o * stride;
    for (let k = 0; k < m; k++) to[at + k] = from[base + (map[k] as number)] as number;
  }
}

function gather16(from: Uint16Array, to: Uint16Array, map: Int32Array, outer: number, stride: number): void {
  const m = map.length;
  for (let o = 0, at = 0; o < outer; o++, at += m) {
    const base = o * stride;
    for (let k = 0; k < m; k++) to[at + k] = from[base + (map[k] as number)] as number;
  }
}

function gather8(from: Uint8Array, to: Uint8Array, map: Int32Array, outer: number, stride: number): void {
  const m = map.length;
  for (let o = 0, at = 0; o < outer; o++, at += m) {
    const base = o * stride;
    for (let k = 0; k < m; k++) to[at + k] = from[base + (map[k] as number)] as number;
  }
}

/** Output buffers that every byte of is written before use: skip zero-filling (it only costs page faults). */
function uninitialized(bytes: number): Uint8Array {
  return Buffer.allocUnsafeSlow(bytes);
}

function isRun(indices: readonly number[], start: number, end: number): boolean {
  for (let i = start + 1; i < end; i++) if (indices[i] !== (indices[i - 1] as number) + 1) return false;
  return true;
}

/** Consecutive ascending indices as flat [start, length, start, length, …] runs: a slice is one run. */
function indexRuns(indices: readonly number[]): number[] {
  const runs: number[] = [];
  for (let i = 0; i < indices.length; ) {
    const first = indices[i] as number;
    let j = i + 1;
    while (j < indices.length && indices[j] === first + (j - i)) j++;
    runs.push(first, j - i);
    i = j;
  }
  return runs;
}

async function gatherStrided(r: Recipe & { kind: "strided" }, start: number, end: number): Promise<Uint8Array> {
  const w = DTYPES[r.dtype].bytes;
  const shape = r.shape.length === 0 ? [1] : r.shape;
  const stride = r.stride.length === 0 ? [1] : r.stride;
  const sub = [end - start, ...shape.slice(1)];
  const n = numel(sub);
  const out = new Uint8Array(n * w);
  if (n === 0) return out;
  const base = r.storageOffset + start * (stride[0] as number);
  let span = 0;
  for (let d = 0; d < sub.length; d++) span += ((sub[d] as number) - 1) * (stride[d] as number);
  if ((base + span + 1) * w > r.source.size) {
    throw formatError(`strided view reaches past its storage`, { tensor: r.label });
  }
  const window = await r.source.read(base * w, (span + 1) * w);
  const idx = new Array<number>(sub.length).fill(0);
  for (let e = 0; e < n; e++) {
    let off = 0;
    for (let d = 0; d < sub.length; d++) off += (idx[d] as number) * (stride[d] as number);
    out.set(window.subarray(off * w, off * w + w), e * w);
    for (let d = sub.length - 1; d >= 0; d--) {
      idx[d] = (idx[d] as number) + 1;
      if ((idx[d] as number) < (sub[d] as number)) break;
      idx[d] = 0;
    }
  }
  return out;
}
