import { MegahubError } from "../errors.js";
import { concat, select, type Recipe } from "../plan/recipe.js";
import type { TpRule } from "./arch.js";

export const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);

const splitDim = (rule: TpRule): number | undefined => (rule === "replicated" ? undefined : rule === "row" ? 1 : 0);

/**
 * One global tensor from its per-rank parts, as a recipe (no bytes read). `column-parts` undoes the per-rank
 * [gate_r; up_r] layout: a plain concatenation of ranks would interleave gate and up rows.
 */
export function mergeTp(rule: TpRule, parts: readonly Recipe[]): Recipe {
  if (parts.length === 1 || rule === "replicated") return parts[0] as Recipe;
  if (typeof rule === "object") {
    const pieces: Recipe[][] = Array.from({ length: rule.parts }, () => []);
    for (const p of parts) {
      const n = (p.shape[0] as number) / rule.parts;
      for (let k = 0; k < rule.parts; k++) pieces[k]?.push(select(p, 0, range(k * n, (k + 1) * n)));
    }
    return concat(0, pieces.flat());
  }
  return concat(splitDim(rule) as number, parts);
}

/** Rank `rank` of `size` of a global tensor: the inverse of mergeTp. */
export function splitTp(rule: TpRule, r: Recipe, rank: number, size: number, name: string): Recipe {
  if (size === 1 || rule === "replicated") return r;
  const dim = splitDim(rule) as number;
  const n = r.shape[dim] as number;
  const parts = typeof rule === "object" ? rule.parts : 1;
  if (n % (size * parts) !== 0) {
    throw new MegahubError("USAGE", `dim ${dim} of size ${n} does not split into ${size} equal TP parts${parts > 1 ? ` of ${parts} fused pieces` : ""}`, { tensor: name });
  }
  const piece = n / parts;
  const step = piece / size;
  const idx: number[] = [];
  for (let k = 0; k < parts; k++) idx.push(...range(k * piece + rank * step, k * piece + (rank + 1) * step));
  return select(r, dim, idx);
}

/** The dim a rule splits (undefined for replicated), for shape checks of per-rank parts. */
export function tpDim(rule: TpRule): number | undefined {
  return splitDim(rule);
}
