import { MegahubError } from "../../errors.js";
import { OPENBA_GLOBAL_PARAMS, OPENBA_LAYER_PARAMS } from "../../models/openba/spec.js";
import type { Stack } from "../../models/openba/types.js";
import { blocks, DEFAULT_BLOCK_BYTES } from "../../plan/execute.js";
import { recipeBytes, type Recipe } from "../../plan/recipe.js";
import { bf16ToF32, castBytes, f16ToF32, type CastStats } from "../../tensors/cast.js";
import { DTYPES, type Dtype } from "../../tensors/dtypes.js";
import { megatronKey, type GlobalModel } from "../openba/global-model.js";
import type { LayerMasks, PruneMasks, ResolvedPrune } from "./masks.js";

/** What indexes a tensor dim, as the spec says ("vocab" and "-" are never pruned here). */
type DimLabel = "hidden" | "heads" | "ffn" | "vocab" | "-";

export interface MagnitudeOptions {
  blockBytes?: number;
  /** Bytes read so far of all the matrices the norms need. */
  onProgress?: (done: number, total: number) => void;
}

/** One matrix the norms read, and where its row and column sums of squares go. */
interface Job {
  readonly key: string;
  readonly recipe: Recipe;
  readonly labels: readonly DimLabel[];
  /** Rows per head along a "heads" dim: groups × kv_channels (3d for QKV, 2d for KV, d for q and dense). */
  readonly headSpan: number;
  /** The layer's accumulators, or undefined for global matrices (the embedding). */
  readonly layer: Acc | undefined;
}

interface Acc {
  readonly stack: Stack;
  readonly layer: number;
  readonly heads: Float64Array;
  readonly ffn: Float64Array;
}

/**
 * Magnitude masks: keep the units with the largest L2 norm, where a unit's norm covers every weight MATRIX entry it
 * owns (biases and LayerNorm vectors are not counted):
 * - a head (per layer): its rows of the fused QKV and its columns of the attention output `dense`; in a decoder layer
 *   also its rows of the cross-attention `query` and `key_value` and its columns of the cross-attention `dense`,
 *   since self- and cross-attention share one head mask;
 * - an FFN channel (per layer): its row of w1 and of w3 and its column of w2;
 * - a hidden channel (global): its column in every matrix that reads the residual stream (QKV, query, key_value, w1,
 *   w3, and the embedding, which is also the tied output projection) and its row in every matrix that writes it
 *   (both `dense`, w2), over the layers that are KEPT — dropped layers take no part in the pruned model.
 *
 * Which tensor dim indexes what comes from the spec's `dims` table, not from per-tensor code. Each matrix is read
 * once, streamed in row blocks (memory stays at a block), and only when a dimension it touches is being pruned.
 * Squares are summed in float64 from the exact f32 value of each element; NaN weights count as the smallest norm.
 * Ties keep the lower index. Kept indices are returned ascending, like OpenBA's masks.
 */
export async function magnitudeMasks(model: GlobalModel, resolved: ResolvedPrune, options: MagnitudeOptions = {}): Promise<PruneMasks> {
  const { from, to, drop } = resolved;
  const pruning = new Set<DimLabel>([
    ...(to.hidden < from.hidden ? (["hidden"] as const) : []),
    ...(to.heads < from.heads ? (["heads"] as const) : []),
    ...(to.ffn < from.ffn ? (["ffn"] as const) : []),
  ]);
  const hidden = new Float64Array(from.hidden);
  const accs: Acc[] = [];
  const jobs: Job[] = [];
  const want = (labels: readonly DimLabel[]) => labels.length === 2 && labels.some((l) => pruning.has(l));
  for (const p of OPENBA_GLOBAL_PARAMS) {
    const recipe = model.tensors.get(p.megatron);
    if (recipe && want(p.dims)) jobs.push({ key: p.megatron, recipe, labels: p.dims, headSpan: 1, layer: undefined });
  }
  for (const stack of ["encoder", "decoder"] as const) {
    const n = stack === "encoder" ? from.encoderLayers : from.decoderLayers;
    const dropped = new Set(drop[stack]);
    for (let layer = 0; layer < n; layer++) {
      if (dropped.has(layer)) continue;
      const acc: Acc = { stack, layer, heads: new Float64Array(from.heads), ffn: new Float64Array(from.ffn) };
      accs.push(acc);
      for (const p of OPENBA_LAYER_PARAMS) {
        if (!(p.stacks as readonly Stack[]).includes(stack) || !want(p.dims)) continue;
        const key = megatronKey(stack, layer, p.megatron);
        const recipe = model.tensors.get(key);
        if (!recipe) throw new MegahubError("MODEL", "missing from the model", { tensor: key });
        const headSpan = ("heads" in p ? p.heads.groups : 1) * from.kvChannels;
        jobs.push({ key, recipe, labels: p.dims, headSpan, layer: acc });
      }
    }
  }
  const total = jobs.reduce((a, j) => a + recipeBytes(j.recipe), 0);
  let done = 0;
  options.onProgress?.(0, total);
  for (const job of jobs) {
    const sums = await sumSquares(job, options.blockBytes ?? DEFAULT_BLOCK_BYTES, (n) => {
      done += n;
      options.onProgress?.(done, total);
    });
    job.labels.forEach((label, axis) => {
      const v = axis === 0 ? sums.rows : sums.cols;
      const into = label === "hidden" ? hidden : label === "ffn" ? job.layer?.ffn : label === "heads" ? job.layer?.heads : undefined;
      if (!into) return;
      const span = label === "heads" ? job.headSpan : 1;
      for (let i = 0; i < v.length; i++) into[Math.floor(i / span)] = (into[Math.floor(i / span)] as number) + (v[i] as number);
    });
  }
  const layers: LayerMasks[] = accs.map((a) => ({
    stack: a.stack,
    layer: a.layer,
    heads: pruning.has("heads") ? topK(a.heads, to.heads) : range(to.heads),
    ffn: pruning.has("ffn") ? topK(a.ffn, to.ffn) : range(to.ffn),
  }));
  return { strategy: "magnitude", hidden: pruning.has("hidden") ? topK(hidden, to.hidden) : range(to.hidden), layers, drop };
}

/** Indices of the k largest values (ties: lower index first), ascending. */
export function topK(values: Float64Array, k: number): number[] {
  const score = (i: number) => {
    const v = values[i] as number;
    return Number.isNaN(v) ? -1 : v;
  };
  const order = Array.from({ length: values.length }, (_, i) => i).sort((a, b) => score(b) - score(a) || a - b);
  return order.slice(0, k).sort((a, b) => a - b);
}

const range = (k: number) => Array.from({ length: k }, (_, i) => i);

/** Row and column sums of squares of a 2-D recipe, streamed: one pass, memory of one block plus the two sums. */
async function sumSquares(job: Job, blockBytes: number, advance: (bytes: number) => void): Promise<{ rows: Float64Array; cols: Float64Array }> {
  const [nRows, nCols] = job.recipe.shape as [number, number];
  const rows = new Float64Array(nRows);
  const cols = new Float64Array(nCols);
  const stats: CastStats = { overflows: 0 };
  const dtype = job.recipe.dtype;
  if (!DTYPES[dtype].float) throw new MegahubError("MODEL", `cannot take norms of a ${dtype} tensor`, { tensor: job.key });
  let row = 0;
  let col = 0;
  let rowAcc = 0;
  for await (const block of blocks(job.recipe, blockBytes, stats)) {
    advance(block.byteLength);
    const sq = squares(block, dtype, stats);
    for (let i = 0; i < sq.length; i++) {
      const v = sq.value(i);
      rowAcc += v;
      cols[col] = (cols[col] as number) + v;
      if (++col === nCols) {
        rows[row] = (rows[row] as number) + rowAcc;
        rowAcc = 0;
        col = 0;
        row++;
      }
    }
  }
  return { rows, cols };
}

/** Squared element values of a block: a 64 K table for 16-bit floats (one lookup each), f32 arithmetic otherwise. */
function squares(block: Uint8Array, dtype: Dtype, stats: CastStats): { length: number; value(i: number): number } {
  if (dtype === "F16" || dtype === "BF16") {
    const table = squareTable(dtype);
    const u16 = block.byteOffset % 2 === 0 ? new Uint16Array(block.buffer, block.byteOffset, block.byteLength / 2) : new Uint16Array(block.slice().buffer);
    return { length: u16.length, value: (i) => table[u16[i] as number] as number };
  }
  const bytes = dtype === "F32" ? block : castBytes(block, dtype, "F32", stats);
  const f32 = bytes.byteOffset % 4 === 0 ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4) : new Float32Array(bytes.slice().buffer);
  return {
    length: f32.length,
    value: (i) => {
      const x = f32[i] as number;
      return x * x;
    },
  };
}

const tables = new Map<Dtype, Float64Array>();
function squareTable(dtype: "F16" | "BF16"): Float64Array {
  let t = tables.get(dtype);
  if (!t) {
    t = new Float64Array(65536);
    const toF32 = dtype === "F16" ? f16ToF32 : bf16ToF32;
    for (let i = 0; i < 65536; i++) {
      const x = toF32(i);
      t[i] = x * x;
    }
    tables.set(dtype, t);
  }
  return t;
}
