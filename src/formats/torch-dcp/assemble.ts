/**
 * Global tensors from DCP chunks, as recipes of the existing kinds (read / concat / select): the chunks of a tensor
 * tile its global shape, so the tensor — or any box of it, such as one layer of a stacked `decoder.layers.<param>` —
 * is a nest of concatenations of (slices of) chunk reads. No bytes are read here.
 */
import { formatError, MegahubError } from "../../errors.js";
import { concat, readTensor, select, type Recipe } from "../../plan/recipe.js";
import { bytesSource } from "../../io/byte-source.js";
import { byteSize, numel, type Dtype } from "../../tensors/dtypes.js";
import type { DcpChunk } from "./metadata.js";

/** A chunk with the recipe of its bytes (a dense C-order block of `sizes`). */
export interface Piece extends DcpChunk {
  readonly recipe: Recipe;
}

export interface Box {
  readonly offsets: readonly number[];
  readonly sizes: readonly number[];
}

/**
 * Every element of the global shape lies in exactly one chunk (DCP's readers silently use whichever chunk comes
 * last, so an overlap or a hole is a corrupt file, not a choice). Volumes must add up and no two chunks may meet;
 * the sweep over axis 0 keeps this near-linear for stacked tensors (a layer's chunks only meet their own layer's).
 */
export function checkCoverage(fqn: string, shape: readonly number[], chunks: readonly DcpChunk[], file: string): void {
  const total = numel(shape);
  let covered = 0;
  for (const c of chunks) covered += numel(c.sizes);
  const empty = (c: DcpChunk) => c.sizes.some((s) => s === 0);
  const solid = chunks.filter((c) => !empty(c));
  if (shape.length === 0) {
    if (solid.length !== 1) throw formatError(`a 0-d tensor needs exactly one chunk, found ${solid.length}`, { file, tensor: fqn });
    return;
  }
  const order = [...solid].sort((a, b) => (a.offsets[0] as number) - (b.offsets[0] as number));
  let active: DcpChunk[] = [];
  for (const c of order) {
    const lo = c.offsets[0] as number;
    active = active.filter((a) => (a.offsets[0] as number) + (a.sizes[0] as number) > lo);
    const hit = active.find((a) => overlaps(a, c));
    if (hit) {
      throw formatError(`chunks at [${hit.offsets.join(", ")}] and [${c.offsets.join(", ")}] overlap`, { file, tensor: fqn });
    }
    active.push(c);
  }
  if (covered !== total) {
    const hole = covered < total ? firstHole(shape, solid) : undefined;
    const where = hole ? `: no chunk holds the element at [${hole.join(", ")}]` : "";
    throw formatError(`chunks cover ${covered} of the ${total} elements of [${shape.join(", ")}]${where}`, { file, tensor: fqn });
  }
}

/**
 * The first element no chunk holds, searched over the grid the chunk boundaries make (so a missing expert's or
 * layer's chunk is named by its index); only on the error path, and given up on grids too large to probe.
 */
function firstHole(shape: readonly number[], chunks: readonly DcpChunk[]): number[] | undefined {
  const cuts = shape.map((n, d) => [...new Set([0, ...chunks.flatMap((c) => [c.offsets[d] as number, (c.offsets[d] as number) + (c.sizes[d] as number)])])].filter((x) => x < n).sort((a, b) => a - b));
  const cells = cuts.reduce((a, c) => a * c.length, 1);
  if (cells * Math.max(1, chunks.length) > 5_000_000) return undefined;
  const at = shape.map(() => 0);
  for (let i = 0; i < cells; i++) {
    let rest = i;
    for (let d = shape.length - 1; d >= 0; d--) {
      const axis = cuts[d] as number[];
      at[d] = axis[rest % axis.length] as number;
      rest = Math.floor(rest / axis.length);
    }
    const inside = (c: DcpChunk) => at.every((x, d) => x >= (c.offsets[d] as number) && x < (c.offsets[d] as number) + (c.sizes[d] as number));
    if (!chunks.some(inside)) return [...at];
  }
  return undefined;
}

function overlaps(a: DcpChunk, b: DcpChunk): boolean {
  for (let d = 0; d < a.offsets.length; d++) {
    const alo = a.offsets[d] as number;
    const blo = b.offsets[d] as number;
    if (alo >= blo + (b.sizes[d] as number) || blo >= alo + (a.sizes[d] as number)) return false;
  }
  return true;
}

/**
 * The recipe of `box` of a tensor whose (coverage-checked) chunks are `pieces`; `drop` lists axes of size 1 in
 * `box` to remove from the result (the layer axis when un-stacking). Chunks wholly inside the box are read as they
 * are; cut chunks are sliced (an offset read where the cut axis is the outermost one of size > 1, a select
 * otherwise); the parts are concatenated axis by axis, outermost first, so row blocks stream from whole chunks.
 */
export function assembleBox(fqn: string, dtype: Dtype, pieces: readonly Piece[], box: Box, drop: readonly number[] = []): Recipe {
  const rank = box.sizes.length;
  for (const d of drop) {
    if (!Number.isInteger(d) || d < 0 || d >= rank || box.sizes[d] !== 1) {
      throw new MegahubError("USAGE", `cannot drop axis ${d} of a [${box.sizes.join(", ")}] box`, { tensor: fqn });
    }
  }
  const keep = [...Array(rank).keys()].filter((d) => !drop.includes(d));
  const outShape = keep.map((d) => box.sizes[d] as number);
  if (numel(box.sizes) === 0) return readTensor(bytesSource(new Uint8Array(0)), 0, dtype, outShape, `${fqn} (empty)`);
  const parts: Piece[] = [];
  for (const p of pieces) {
    if (numel(p.sizes) === 0) continue;
    const lo: number[] = [];
    const sizes: number[] = [];
    let inside = true;
    for (let d = 0; d < rank; d++) {
      const a = Math.max(p.offsets[d] as number, box.offsets[d] as number);
      const b = Math.min((p.offsets[d] as number) + (p.sizes[d] as number), (box.offsets[d] as number) + (box.sizes[d] as number));
      if (a >= b) {
        inside = false;
        break;
      }
      lo.push(a - (box.offsets[d] as number));
      sizes.push(b - a);
    }
    if (!inside) continue;
    const start = lo.map((x, d) => x + (box.offsets[d] as number) - (p.offsets[d] as number));
    parts.push({ offsets: lo, sizes, recipe: reshapeDrop(sliceBox(p.recipe, start, sizes), drop) });
  }
  const rel: Box = { offsets: box.sizes.map(() => 0), sizes: box.sizes };
  return build(fqn, parts, rel, keep);
}

/**
 * Slices a recipe to `sizes` from `start`, axis by axis from the outermost: a read whose outer axes are all 1 stays
 * a read (at an offset), anything else becomes a select of the index range.
 */
export function sliceBox(r: Recipe, start: readonly number[], sizes: readonly number[]): Recipe {
  let out = r;
  for (let d = 0; d < sizes.length; d++) {
    const n = sizes[d] as number;
    const s = start[d] as number;
    if (s === 0 && n === out.shape[d]) continue;
    if (out.kind === "read" && out.shape.slice(0, d).every((x) => x === 1)) {
      // Everything outside axis d is one block: the slice is a contiguous byte range.
      const shape = [...out.shape];
      shape[d] = n;
      out = readTensor(out.source, out.offset + s * byteSize(out.dtype, out.shape.slice(d + 1)), out.dtype, shape, out.label);
    } else {
      out = select(out, d, Array.from({ length: n }, (_, i) => s + i));
    }
  }
  return out;
}

/** Removes size-1 axes from a piece's recipe (a read changes shape only; a select/concat renumbers its axis). */
function reshapeDrop(r: Recipe, drop: readonly number[]): Recipe {
  if (drop.length === 0) return r;
  const shape = r.shape.filter((_, d) => !drop.includes(d));
  const renumber = (dim: number) => dim - drop.filter((d) => d < dim).length;
  switch (r.kind) {
    case "read":
      return { ...r, shape };
    case "strided":
      return { ...r, shape, stride: r.stride.filter((_, d) => !drop.includes(d)) };
    case "select":
    case "concat":
      if (drop.includes(r.dim)) {
        // A select of one index on a dropped axis of a read: offset into the read instead.
        const input = r.kind === "select" ? r.input : undefined;
        if (input?.kind === "read" && input.shape.slice(0, r.dim).every((x) => x === 1) && r.kind === "select") {
          const at = input.offset + (r.indices[0] as number) * byteSize(input.dtype, input.shape.slice(r.dim + 1));
          return readTensor(input.source, at, input.dtype, shape, input.label);
        }
        throw new MegahubError("UNSUPPORTED", `cannot drop axis ${r.dim} of a ${r.kind} recipe`);
      }
      return r.kind === "select"
        ? { ...r, dim: renumber(r.dim), shape, input: reshapeDrop(r.input, drop) }
        : { ...r, dim: renumber(r.dim), shape, parts: r.parts.map((p) => reshapeDrop(p, drop)) };
    default:
      throw new MegahubError("UNSUPPORTED", `cannot drop axes of a ${r.kind} recipe`);
  }
}

/** Guillotine assembly: split the box along the outermost axis that has a cut no piece straddles. */
function build(fqn: string, pieces: readonly Piece[], box: Box, keep: readonly number[]): Recipe {
  if (pieces.length === 1) return (pieces[0] as Piece).recipe;
  for (const d of keep) {
    const lo = box.offsets[d] as number;
    const hi = lo + (box.sizes[d] as number);
    const cuts = new Set<number>();
    for (const p of pieces) {
      const a = p.offsets[d] as number;
      const b = a + (p.sizes[d] as number);
      if (a > lo) cuts.add(a);
      if (b < hi) cuts.add(b);
    }
    const valid = [...cuts]
      .filter((c) => !pieces.some((p) => (p.offsets[d] as number) < c && c < (p.offsets[d] as number) + (p.sizes[d] as number)))
      .sort((a, b) => a - b);
    if (valid.length === 0) continue;
    const edges = [lo, ...valid, hi];
    const parts: Recipe[] = [];
    for (let i = 0; i + 1 < edges.length; i++) {
      const a = edges[i] as number;
      const b = edges[i + 1] as number;
      const inSlab = pieces.filter((p) => (p.offsets[d] as number) >= a && (p.offsets[d] as number) < b);
      const offsets = [...box.offsets];
      const sizes = [...box.sizes];
      offsets[d] = a;
      sizes[d] = b - a;
      parts.push(build(fqn, inSlab, { offsets, sizes }, keep));
    }
    return concat(keep.indexOf(d), parts);
  }
  throw new MegahubError("UNSUPPORTED", `chunks tile the tensor in a pattern that is not a nest of slabs (${pieces.length} chunks)`, {
    tensor: fqn,
  });
}
