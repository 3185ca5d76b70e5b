import { MegahubError } from "../errors.js";
import { concat, select, type Recipe } from "../plan/recipe.js";
import { range } from "./parallel.js";

/** Megatron's default --make-vocab-size-divisible-by. */
export const DEFAULT_DIVISIBLE_BY = 128;

/** Megatron's padded vocabulary: the smallest multiple of divisibleBy × tp that holds every token. */
export function paddedVocab(trueVocab: number, divisibleBy: number, tp: number): number {
  const m = divisibleBy * tp;
  return Math.ceil(trueVocab / m) * m;
}

export interface VocabPlan {
  padded: number;
  note: string;
  resize(r: Recipe): Recipe;
}

export function vocabPlan(rows: number, divisibleBy: number, tp: number, trueVocab: number | undefined): VocabPlan {
  const multiple = divisibleBy * tp;
  if (trueVocab === undefined) {
    if (rows % multiple === 0) {
      return { padded: rows, note: `vocabulary keeps its ${rows} rows (already a multiple of ${divisibleBy} × TP ${tp})`, resize: (r) => r };
    }
    throw new MegahubError(
      "USAGE",
      `the ${rows} embedding rows are not a multiple of ${divisibleBy} × TP ${tp} = ${multiple}, and the true vocabulary size is unknown: pass --true-vocab-size or --tokenizer`,
    );
  }
  if (trueVocab > rows) throw new MegahubError("USAGE", `true vocabulary ${trueVocab} exceeds the ${rows} embedding rows`);
  const padded = paddedVocab(trueVocab, divisibleBy, tp);
  if (padded === rows) {
    return { padded, note: `vocabulary: ${trueVocab} tokens padded to ${padded} rows (unchanged)`, resize: (r) => r };
  }
  if (padded < rows) {
    return {
      padded,
      note: `vocabulary: ${trueVocab} tokens, padding trimmed from ${rows} to ${padded} rows (multiple of ${divisibleBy} × TP ${tp})`,
      resize: (r) => select(r, 0, range(0, padded)),
    };
  }
  return {
    padded,
    note: `vocabulary: ${trueVocab} tokens, padding extended from ${rows} to ${padded} rows by repeating the last real row (${trueVocab - 1}), as Megatron's tools do`,
    resize: (r) => concat(0, [r, select(r, 0, new Array<number>(padded - rows).fill(trueVocab - 1))]),
  };
}
