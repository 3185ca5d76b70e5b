import { readdir, readFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { MegahubError } from "../../errors.js";
import { loadTorch } from "../../formats/torch/load.js";
import { PyDict, PyList, PyTuple, TorchTensor, type PyValue } from "../../formats/torch/values.js";
import { FileSource } from "../../io/byte-source.js";
import type { OpenbaDims } from "../../models/openba/dims.js";
import type { Stack } from "../../models/openba/types.js";
import type { MasksManifest } from "./structure.js";

/**
 * What `prune --masks` reads, before it is checked against the source: megahub's own prune-masks.json, a
 * hand-written JSON with only the indices (no source_dims/target_dims, no format line), or OpenBA's `rank{r}.pt`
 * (v2:training/megatron/model/t5_model.py `init_prune_zs`: a torch dict of hidden_mask, hidden_index, head_masks,
 * intermediate_masks, head_indexes, intermediate_indexes, the per-layer lists in draw order — encoder layers, then
 * decoder layers — for every ORIGINAL layer, dropped ones included).
 */
export interface MasksInput {
  hidden_index: number[];
  /** Per kept layer, named (megahub's and hand-written files). */
  layers?: Array<{ stack: Stack; layer: number; head_index: number[]; ffn_index: number[] }>;
  /** Per original layer in OpenBA's draw order (rank{r}.pt). */
  draw_order?: Array<{ head_index: number[]; ffn_index: number[] }>;
  dropped_layers?: { encoder?: number[]; decoder?: number[] };
  strategy?: string;
  seed?: number | null;
  prng?: string | null;
  source_dims?: OpenbaDims;
}

/** Reads a masks file: torch (OpenBA's rank{r}.pt, all ranks' files when masks are per-rank slices) or JSON. */
export async function readMasksFile(path: string): Promise<MasksInput> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new MegahubError("USAGE", (e as NodeJS.ErrnoException).code === "ENOENT" ? "no such masks file" : (e as Error).message, { file: path });
  }
  const isZip = bytes[0] === 0x50 && bytes[1] === 0x4b;
  if (!isZip && bytes[0] !== 0x80) {
    try {
      return JSON.parse(bytes.toString("utf8")) as MasksInput;
    } catch (e) {
      throw new MegahubError("FORMAT", `masks file is not JSON (nor a torch file): ${(e as Error).message}`, { file: path });
    }
  }
  const ranks = await rankFiles(path);
  const parts: RankMasks[] = [];
  for (const f of ranks) parts.push(await readOpenbaRank(f));
  const first = parts[0] as RankMasks;
  const layers = first.heads.length;
  if (parts.some((p) => p.heads.length !== layers || p.ffn.length !== layers)) {
    throw new MegahubError("FORMAT", "OpenBA masks files disagree on the number of layers", { file: path });
  }
  // Each rank holds its contiguous 1/tp slice of every head and FFN mask (indices local to the slice); the
  // hidden mask is global on every rank.
  const draw = Array.from({ length: layers }, (_, l) => ({
    head_index: concatSlices(parts.map((p) => p.heads[l] as Slice)),
    ffn_index: concatSlices(parts.map((p) => p.ffn[l] as Slice)),
  }));
  return { hidden_index: first.hidden, draw_order: draw, strategy: "random", seed: null, prng: `OpenBA's Python random.sample (${ranks.map((r) => basename(r)).join(", ")})` };
}

interface Slice {
  index: number[];
  size: number;
}
interface RankMasks {
  hidden: number[];
  heads: Slice[];
  ffn: Slice[];
}

/** rank0.pt alone when it is the only rank; all of rank0.pt … rank{tp−1}.pt when its siblings are there. */
async function rankFiles(path: string): Promise<string[]> {
  const m = /^rank(\d+)\.pt$/.exec(basename(path));
  if (m === null) return [path];
  const dir = dirname(path);
  const names = (await readdir(dir)).filter((n) => /^rank\d+\.pt$/.test(n));
  const nums = names.map((n) => Number(/\d+/.exec(n)?.[0])).sort((a, b) => a - b);
  if (!nums.every((n, i) => n === i)) throw new MegahubError("FORMAT", `OpenBA masks files are not rank0.pt … rank${nums.length - 1}.pt`, { file: dir });
  return nums.map((n) => join(dir, `rank${n}.pt`));
}

async function readOpenbaRank(file: string): Promise<RankMasks> {
  const source = await FileSource.open(file);
  try {
    const torch = await loadTorch(source);
    if (!(torch.root instanceof PyDict)) throw new MegahubError("FORMAT", "not OpenBA's masks dict", { file });
    const root = torch.root;
    const vector = async (v: PyValue | undefined, what: string): Promise<number[]> => {
      if (!(v instanceof TorchTensor) || v.shape.length > 1 || !v.contiguous) throw new MegahubError("FORMAT", `${what} is not a 1-D tensor`, { file });
      const n = v.shape[0] ?? 1;
      const size = { I64: 8, I32: 4, F32: 4, F16: 2, BF16: 2, BOOL: 1, U8: 1 }[v.dtype as string];
      if (size === undefined || n > 1 << 24) throw new MegahubError("FORMAT", `${what} has dtype ${v.dtype}`, { file });
      const bytes = Buffer.from(await torch.storageSource(v.storage).read(v.storageOffset * size, n * size));
      const out: number[] = [];
      for (let i = 0; i < n; i++) {
        const at = i * size;
        out.push(
          v.dtype === "I64" ? Number(bytes.readBigInt64LE(at)) : v.dtype === "I32" ? bytes.readInt32LE(at) : v.dtype === "F32" ? bytes.readFloatLE(at)
            : v.dtype === "F16" ? halfToFloat(bytes.readUInt16LE(at)) : v.dtype === "BF16" ? new Float32Array(new Uint32Array([bytes.readUInt16LE(at) << 16]).buffer)[0] as number : (bytes[at] as number),
        );
      }
      return out;
    };
    const list = (key: string): PyValue[] => {
      const v = root.get(key);
      return v instanceof PyList || v instanceof PyTuple ? [...v.items] : [];
    };
    // The indexes when saved; otherwise the non-zero positions of the masks (torch.where, ascending).
    const indexOf = async (index: PyValue | undefined, mask: PyValue | undefined, what: string): Promise<Slice> => {
      const m = mask !== undefined ? await vector(mask, `${what} mask`) : undefined;
      const idx = index !== undefined ? await vector(index, `${what} index`) : m?.flatMap((x, i) => (x !== 0 ? [i] : []));
      if (idx === undefined) throw new MegahubError("FORMAT", `OpenBA masks file has no ${what} index or mask`, { file });
      return { index: idx, size: m?.length ?? -1 };
    };
    const hidden = (await indexOf(root.get("hidden_index"), root.get("hidden_mask"), "hidden")).index;
    const heads: Slice[] = [];
    const ffn: Slice[] = [];
    const hm = list("head_masks");
    const hi = list("head_indexes");
    const im = list("intermediate_masks");
    const ii = list("intermediate_indexes");
    const layers = Math.max(hm.length, hi.length);
    if (layers === 0 || Math.max(im.length, ii.length) !== layers) throw new MegahubError("FORMAT", "OpenBA masks file lacks per-layer head and intermediate masks", { file });
    for (let l = 0; l < layers; l++) {
      heads.push(await indexOf(hi[l], hm[l], `layer ${l} head`));
      ffn.push(await indexOf(ii[l], im[l], `layer ${l} intermediate`));
    }
    return { hidden, heads, ffn };
  } finally {
    await source.close();
  }
}

function concatSlices(slices: Slice[]): number[] {
  if (slices.length === 1) return (slices[0] as Slice).index;
  let base = 0;
  const out: number[] = [];
  for (const s of slices) {
    if (s.size < 0) throw new MegahubError("FORMAT", "per-rank OpenBA masks need the masks themselves (their size gives each rank's offset)");
    out.push(...s.index.map((i) => i + base));
    base += s.size;
  }
  return out;
}

function halfToFloat(h: number): number {
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  const v = e === 0 ? f * 2 ** -24 : e === 31 ? (f ? NaN : Infinity) : (1 + f / 1024) * 2 ** (e - 15);
  return h & 0x8000 ? -v : v;
}

/**
 * A complete masks manifest for a source of dims `dims`: source and target dims filled in (checked against the
 * source when the file has them), the dropped layers from the file or the command line, and every index checked
 * (ascending, distinct, in range, the same count in every layer).
 */
export function completeMasks(m: MasksInput, dims: OpenbaDims, drop: { encoder?: readonly number[]; decoder?: readonly number[] }): MasksManifest {
  const bad = (msg: string) => new MegahubError("FORMAT", `masks: ${msg}`);
  if (typeof m !== "object" || m === null || !Array.isArray(m.hidden_index)) throw bad("no hidden_index list");
  const givenDrop = (drop.encoder?.length ?? 0) > 0 || (drop.decoder?.length ?? 0) > 0;
  if (givenDrop && m.dropped_layers !== undefined) throw new MegahubError("USAGE", "the masks file names its dropped layers: give no --drop-*-layers with it");
  let layers: NonNullable<MasksInput["layers"]>;
  let dropped = { encoder: [...(m.dropped_layers?.encoder ?? drop.encoder ?? [])], decoder: [...(m.dropped_layers?.decoder ?? drop.decoder ?? [])] };
  if (m.draw_order !== undefined) {
    if (m.draw_order.length !== dims.encoderLayers + dims.decoderLayers) {
      throw bad(`${m.draw_order.length} layers of masks, the source has ${dims.encoderLayers} + ${dims.decoderLayers}`);
    }
    layers = m.draw_order.map((l, i) => {
      const stack: Stack = i < dims.encoderLayers ? "encoder" : "decoder";
      return { stack, layer: stack === "encoder" ? i : i - dims.encoderLayers, ...l };
    });
    layers = layers.filter((l) => !dropped[l.stack].includes(l.layer));
  } else {
    if (!Array.isArray(m.layers) || m.layers.length === 0) throw bad("no layers list");
    layers = m.layers;
    if (m.dropped_layers === undefined && !givenDrop) {
      // A hand-written file lists the layers it keeps: every other original layer is dropped.
      for (const stack of ["encoder", "decoder"] as const) {
        const n = stack === "encoder" ? dims.encoderLayers : dims.decoderLayers;
        const kept = new Set(layers.filter((l) => l.stack === stack).map((l) => l.layer));
        dropped[stack] = Array.from({ length: n }, (_, i) => i).filter((i) => !kept.has(i));
      }
    }
  }
  dropped = { encoder: [...new Set(dropped.encoder)].sort((a, b) => a - b), decoder: [...new Set(dropped.decoder)].sort((a, b) => a - b) };
  const check = (idx: unknown, n: number, what: string): number[] => {
    if (!Array.isArray(idx) || idx.length === 0) throw bad(`${what} is not a non-empty list`);
    for (let i = 0; i < idx.length; i++) {
      const v = idx[i] as unknown;
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= n) throw bad(`${what}[${i}] = ${String(v)} is not an index below ${n}`);
      if (i > 0 && v <= (idx[i - 1] as number)) throw bad(`${what} must be ascending and distinct (OpenBA keeps rows in order)`);
    }
    return idx as number[];
  };
  const hidden = check(m.hidden_index, dims.hidden, "hidden_index");
  const heads = check(layers[0]?.head_index, dims.heads, "head_index").length;
  const ffn = check(layers[0]?.ffn_index, dims.ffn, "ffn_index").length;
  const next = { encoder: 0, decoder: 0 };
  const out: MasksManifest["layers"] = [];
  for (const stack of ["encoder", "decoder"] as const) {
    const n = stack === "encoder" ? dims.encoderLayers : dims.decoderLayers;
    for (let layer = 0; layer < n; layer++) {
      if (dropped[stack].includes(layer)) continue;
      const l = layers.find((x) => x.stack === stack && x.layer === layer);
      if (l === undefined) throw bad(`${stack} layer ${layer} is neither kept with masks nor dropped`);
      const h = check(l.head_index, dims.heads, `${stack} layer ${layer} head_index`);
      const f = check(l.ffn_index, dims.ffn, `${stack} layer ${layer} ffn_index`);
      if (h.length !== heads || f.length !== ffn) throw bad(`${stack} layer ${layer} keeps ${h.length} heads / ${f.length} FFN rows, the first layer ${heads} / ${ffn}: one width for all layers`);
      out.push({ stack, layer, new_layer: next[stack]++, head_index: h, ffn_index: f });
    }
  }
  if (m.source_dims !== undefined) {
    const keys = ["hidden", "heads", "kvChannels", "ffn", "encoderLayers", "decoderLayers"] as const;
    const diff = keys.filter((k) => m.source_dims?.[k] !== dims[k]);
    if (diff.length > 0) {
      throw new MegahubError("USAGE", `the masks were made for a different model: ${diff.map((k) => `${k} ${m.source_dims?.[k]} there, ${dims[k]} here`).join(", ")}`);
    }
  }
  return {
    format: "megahub-prune-masks",
    version: 1,
    strategy: m.strategy ?? "hand-written",
    seed: m.seed ?? null,
    prng: m.prng ?? null,
    source_dims: { ...dims },
    target_dims: { ...dims, hidden: hidden.length, heads, ffn, encoderLayers: next.encoder, decoderLayers: next.decoder },
    hidden_index: hidden,
    dropped_layers: dropped,
    layers: out,
  };
}
