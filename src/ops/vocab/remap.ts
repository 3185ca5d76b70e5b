import { MegahubError } from "../../errors.js";
import { countParams, type OpenbaDims, type ParamCounts } from "../../models/openba/dims.js";
import { paddedVocab } from "../../models/vocab-padding.js";
import { select, type Recipe } from "../../plan/recipe.js";
import type { GlobalModel } from "../openba/global-model.js";

/** The two vocabulary-indexed tensors of OpenBA (Megatron names); HF's lm_head.weight is written from the first. */
export const VOCAB_TENSORS = ["language_model.embedding.word_embeddings.weight", "lm_head.bias"] as const;

/** The id map file written beside the pruned weights; `megahub verify --against … --id-map` reads it. */
export const ID_MAP_FILE = "vocab-id-map.json";

/** The three sizes of a vocabulary. */
export interface VocabSizes {
  /** sentencepiece pieces. */
  spSize: number;
  /** Tokens with meaning: pieces + added tokens. */
  trueVocab: number;
  /** Embedding rows (padded). */
  rows: number;
}

/** Where every row of the pruned vocabulary comes from. */
export interface VocabRemap {
  old: VocabSizes;
  new: VocabSizes;
  /** Old id of each new token id (0 … new.trueVocab − 1). */
  keptOld: number[];
  /** Old row of each new row, padding included (0 … new.rows − 1). */
  rowSource: number[];
  divisibleBy: number;
  tp: number;
  notes: string[];
}

const range = (a: number, b: number) => Array.from({ length: Math.max(0, b - a) }, (_, i) => a + i);

/**
 * The row map of openba-format §6 step 3, made consistent: kept pieces in original order; then every added-token
 * row (the 100 sentinels and `<R>` `<S>` `<X>`, plus any further rows the source says are real, e.g. v2's "\n") in
 * its old order, so `<extra_id_k>` lands at new_sp + 99 − k; then padding to Megatron's multiple of
 * divisible-by × TP. Padding rows are the source's own padding rows (trained but never a target, so they keep their
 * low logits) and, if more are needed than it had, copies of the last real row as Megatron's split tool writes them.
 */
export function planVocabRemap(keptPieces: readonly number[], old: VocabSizes, divisibleBy: number, tp: number): VocabRemap {
  if (old.trueVocab > old.rows) throw new MegahubError("MODEL", `${old.trueVocab} tokens but only ${old.rows} embedding rows`);
  for (let i = 0; i < keptPieces.length; i++) {
    const id = keptPieces[i] as number;
    if (id < 0 || id >= old.spSize || (i > 0 && id <= (keptPieces[i - 1] as number))) {
      throw new RangeError(`kept pieces must be ascending ids below ${old.spSize}; got ${id} at ${i}`);
    }
  }
  if (!Number.isInteger(tp) || tp < 1) throw new MegahubError("USAGE", `--tp must be a positive integer, got ${tp}`);
  if (!Number.isInteger(divisibleBy) || divisibleBy < 1) throw new MegahubError("USAGE", `make-vocab-size-divisible-by must be a positive integer, got ${divisibleBy}`);
  const keptOld = [...keptPieces, ...range(old.spSize, old.trueVocab)];
  const trueVocab = keptOld.length;
  const rows = paddedVocab(trueVocab, divisibleBy, tp);
  const fromOld = range(old.trueVocab, old.rows).slice(0, rows - trueVocab);
  const copies = rows - trueVocab - fromOld.length;
  const last = keptOld[trueVocab - 1] as number;
  const rowSource = [...keptOld, ...fromOld, ...new Array<number>(copies).fill(last)];
  const notes = [
    `vocabulary: ${keptPieces.length} of ${old.spSize} pieces + ${old.trueVocab - old.spSize} added tokens = ${trueVocab} tokens, padded to ${rows} rows (multiple of ${divisibleBy} × TP ${tp}); was ${old.trueVocab} tokens in ${old.rows} rows`,
  ];
  if (rows > trueVocab) {
    notes.push(
      `padding rows ${trueVocab}..${rows - 1}: ${fromOld.length} of the source's padding rows${copies > 0 ? ` and ${copies} copies of the last real row (old ${last})` : ""}`,
    );
  }
  return { old, new: { spSize: keptPieces.length, trueVocab, rows }, keptOld, rowSource, divisibleBy, tp, notes };
}

/** The model with its embedding and lm_head.bias re-indexed (lazy row gathers; runs of rows are read at once). */
export function remapModel(model: GlobalModel, remap: VocabRemap): GlobalModel {
  if (model.dims.vocab !== remap.old.rows) {
    throw new MegahubError("MODEL", `the model has ${model.dims.vocab} embedding rows, the remap was planned for ${remap.old.rows}`);
  }
  const tensors = new Map<string, Recipe>(model.tensors);
  for (const key of VOCAB_TENSORS) {
    const r = tensors.get(key);
    if (!r) throw new MegahubError("MODEL", "missing from the model", { tensor: key });
    tensors.set(key, select(r, 0, remap.rowSource));
  }
  return { ...model, dims: { ...model.dims, vocab: remap.new.rows }, tensors, trueVocab: remap.new.trueVocab };
}

/**
 * The id map: `old_to_new` (the shape `verify --id-map` reads) for every real token, `kept_old_ids` (index = new
 * id), and `row_source` (the old row behind every new row, padding included) with the sizes on both sides.
 */
export function idMapJson(remap: VocabRemap): string {
  const oldToNew: Record<string, number> = {};
  remap.keptOld.forEach((o, n) => (oldToNew[String(o)] = n));
  return `${JSON.stringify({
    format: "megahub-vocab-id-map",
    version: 1,
    old: remap.old,
    new: remap.new,
    divisible_by: remap.divisibleBy,
    tp: remap.tp,
    old_to_new: oldToNew,
    kept_old_ids: remap.keptOld,
    row_source: remap.rowSource,
  })}\n`;
}

/** Parameter counts before and after a vocabulary prune. */
export interface VocabParams {
  /** As Megatron stores the model, the head tied to the embedding (OpenBA's tables count this way: 3.8B → 3.4B). */
  before: ParamCounts;
  after: ParamCounts;
  /** As HF stores it (lm_head.weight a separate copy of the embedding). */
  hfTotal: { before: number; after: number };
}

/** Parameter arithmetic from dims alone: only the embedding, lm_head.weight and lm_head.bias change. */
export function vocabParams(dims: OpenbaDims, newRows: number): VocabParams {
  const after = { ...dims, vocab: newRows };
  return {
    before: countParams(dims, true),
    after: countParams(after, true),
    hfTotal: { before: countParams(dims, false).total, after: countParams(after, false).total },
  };
}

/** New rows for keeping `pieces` sentencepiece pieces (+ OpenBA's added rows), by Megatron's padding rule. */
export function prunedRows(pieces: number, addedRows: number, divisibleBy: number, tp: number): number {
  return paddedVocab(pieces + addedRows, divisibleBy, tp);
}
