import { MegahubError } from "../../errors.js";
import { OPENBA_GLOBAL_PARAMS, OPENBA_LAYER_PARAMS } from "../../models/openba/spec.js";
import type { OpenbaDims } from "../../models/openba/dims.js";
import type { Stack } from "../../models/openba/types.js";
import { select, type Recipe } from "../../plan/recipe.js";
import { megatronKey, type GlobalModel } from "../openba/global-model.js";
import type { LayerMasks, PruneMasks, ResolvedPrune } from "./masks.js";

export { chooseLayersToDrop, DEFAULT_SEED, placeholderMasks, Prng, randomMasks, resolvePrune } from "./masks.js";
export type { LayerMasks, PruneMasks, PruneStrategy, PruneTarget, ResolvedPrune } from "./masks.js";
export { magnitudeMasks, topK } from "./magnitude.js";

/** The masks manifest written beside every pruned output. */
export const MASKS_FILE = "prune-masks.json";

/**
 * Applies masks to a global model with OpenBA's prune_model semantics, as lazy `select` recipes — no byte is read
 * here. Which index list applies to which tensor dim comes from the spec's `dims` table:
 * - "hidden": the one global hidden index (embedding columns, every LayerNorm, matrix rows/columns on the residual);
 * - "heads": the layer's head index expanded to whole heads — per head `groups × kv_channels` consecutive rows
 *   (QKV `[n, 3, d]`, KV `[n, 2, d]`, query `[n, d]`) or columns (`dense` `[h, n·d]`); kv_channels is never pruned;
 * - "ffn": the layer's FFN index (w1/w3 rows, w2 columns); "vocab" and "-" are untouched.
 * Kept rows and columns stay in their original order. Dropped layers disappear and the survivors are renumbered
 * 0.. in each stack. The result is an ordinary GlobalModel, so any writer (HF, Megatron at any TP) takes it as is.
 */
export function applyPruneMasks(model: GlobalModel, masks: PruneMasks, to: OpenbaDims): GlobalModel {
  const from = model.dims;
  checkMasks(masks, from, to);
  const tensors = new Map<string, Recipe>();
  const pick = (key: string, r: Recipe, labels: readonly string[], layer: LayerMasks | undefined, headSpan: number): Recipe => {
    // Inner dims first, so the outer row select reads runs of whole rows of an already narrowed tensor.
    let out = r;
    for (let axis = labels.length - 1; axis >= 0; axis--) {
      const index = indexFor(labels[axis] as string, masks, layer, headSpan);
      if (index === undefined || isIdentity(index, out.shape[axis] as number)) continue;
      try {
        out = select(out, axis, index);
      } catch (e) {
        throw new MegahubError("MODEL", `cannot prune [${r.shape.join(", ")}] along dim ${axis} (${labels[axis]}): ${(e as Error).message}`, { tensor: key });
      }
    }
    return out;
  };
  for (const p of OPENBA_GLOBAL_PARAMS) {
    const r = model.tensors.get(p.megatron);
    if (!r) throw new MegahubError("MODEL", "missing from the model", { tensor: p.megatron });
    tensors.set(p.megatron, pick(p.megatron, r, p.dims, undefined, 1));
  }
  const next: Record<Stack, number> = { encoder: 0, decoder: 0 };
  for (const layer of masks.layers) {
    const newIndex = next[layer.stack]++;
    for (const p of OPENBA_LAYER_PARAMS) {
      if (!(p.stacks as readonly Stack[]).includes(layer.stack)) continue;
      const key = megatronKey(layer.stack, layer.layer, p.megatron);
      const r = model.tensors.get(key);
      if (!r) {
        if (p.hf === null) continue; // rotary buffers are optional (HF sources have none)
        throw new MegahubError("MODEL", "missing from the model", { tensor: key });
      }
      const headSpan = ("heads" in p ? p.heads.groups : 1) * from.kvChannels;
      tensors.set(megatronKey(layer.stack, newIndex, p.megatron), pick(key, r, p.dims, layer, headSpan));
    }
  }
  return { dims: to, tensors, ...(model.args ? { args: model.args } : {}), ...(model.trueVocab === undefined ? {} : { trueVocab: model.trueVocab }) };
}

function indexFor(label: string, masks: PruneMasks, layer: LayerMasks | undefined, headSpan: number): readonly number[] | undefined {
  switch (label) {
    case "hidden":
      return masks.hidden;
    case "ffn":
      return layer?.ffn;
    case "heads":
      return layer ? layer.heads.flatMap((h) => Array.from({ length: headSpan }, (_, k) => h * headSpan + k)) : undefined;
    default:
      return undefined;
  }
}

function isIdentity(index: readonly number[], size: number): boolean {
  return index.length === size && index.every((v, i) => v === i);
}

/** Masks must match the dims they claim: the right counts, ascending in-range indices, every kept layer once. */
function checkMasks(masks: PruneMasks, from: OpenbaDims, to: OpenbaDims): void {
  const check = (what: string, index: readonly number[], count: number, size: number) => {
    if (index.length !== count) throw new MegahubError("USAGE", `${what} keeps ${index.length}, expected ${count}`);
    index.forEach((v, i) => {
      if (!Number.isInteger(v) || v < 0 || v >= size || (i > 0 && v <= (index[i - 1] as number))) {
        throw new MegahubError("USAGE", `${what} must be ascending indices in 0..${size - 1}; found ${v} at position ${i}`);
      }
    });
  };
  check("the hidden mask", masks.hidden, to.hidden, from.hidden);
  for (const stack of ["encoder", "decoder"] as const) {
    const kept = masks.layers.filter((l) => l.stack === stack).map((l) => l.layer);
    const n = stack === "encoder" ? from.encoderLayers : from.decoderLayers;
    const want = Array.from({ length: n }, (_, i) => i).filter((i) => !masks.drop[stack].includes(i));
    if (kept.join() !== want.join() || want.length !== (stack === "encoder" ? to.encoderLayers : to.decoderLayers)) {
      throw new MegahubError("USAGE", `the masks keep ${stack} layers [${kept.join(", ")}], expected [${want.join(", ")}]`);
    }
  }
  for (const l of masks.layers) {
    check(`${l.stack} layer ${l.layer}'s head mask`, l.heads, to.heads, from.heads);
    check(`${l.stack} layer ${l.layer}'s FFN mask`, l.ffn, to.ffn, from.ffn);
  }
}

/** The masks manifest as JSON (snake_case, layers under their ORIGINAL numbers, plus where each one went). */
export interface MasksManifest {
  format: "megahub-prune-masks";
  version: 1;
  strategy: string;
  seed: number | null;
  /** How random masks were drawn (documents that they are not Python `random`-compatible). */
  prng: string | null;
  source_dims: OpenbaDims;
  target_dims: OpenbaDims;
  hidden_index: number[];
  dropped_layers: { encoder: number[]; decoder: number[] };
  layers: { stack: Stack; layer: number; new_layer: number; head_index: number[]; ffn_index: number[] }[];
}

/** Builds the masks manifest for a prune. */
export function masksManifest(resolved: ResolvedPrune, masks: PruneMasks): MasksManifest {
  const next: Record<Stack, number> = { encoder: 0, decoder: 0 };
  return {
    format: "megahub-prune-masks",
    version: 1,
    strategy: masks.strategy,
    seed: masks.seed ?? null,
    prng:
      masks.strategy === "random"
        ? "xoshiro128** seeded by splitmix32; OpenBA's draw order (hidden, then per original layer: heads, FFN); not bit-compatible with Python's random.sample"
        : null,
    source_dims: { ...resolved.from },
    target_dims: { ...resolved.to },
    hidden_index: [...masks.hidden],
    dropped_layers: { encoder: [...masks.drop.encoder], decoder: [...masks.drop.decoder] },
    layers: masks.layers.map((l) => ({ stack: l.stack, layer: l.layer, new_layer: next[l.stack]++, head_index: [...l.heads], ffn_index: [...l.ffn] })),
  };
}

/** Reads a masks manifest back into masks (for re-applying the same prune to another copy of the model). */
export function masksFromManifest(m: MasksManifest): PruneMasks {
  if (m.format !== "megahub-prune-masks" || m.version !== 1) {
    throw new MegahubError("FORMAT", `not a megahub masks file (format ${String(m.format)}, version ${String(m.version)})`);
  }
  const missing = (["source_dims", "target_dims", "hidden_index", "dropped_layers", "layers"] as const).filter((k) => typeof m[k] !== "object" || m[k] === null);
  if (missing.length > 0) throw new MegahubError("FORMAT", `masks file lacks ${missing.join(", ")}`);
  return {
    strategy: m.strategy === "magnitude" ? "magnitude" : "random",
    ...(m.seed === null ? {} : { seed: m.seed }),
    hidden: m.hidden_index,
    layers: m.layers.map((l) => ({ stack: l.stack, layer: l.layer, heads: l.head_index, ffn: l.ffn_index })),
    drop: m.dropped_layers,
  };
}
