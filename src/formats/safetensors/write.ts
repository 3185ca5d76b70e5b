import type { PlannedTensor, TensorFile, TextFile } from "../../plan/plan.js";
import { recipeBytes } from "../../plan/recipe.js";
import { DTYPES } from "../../tensors/dtypes.js";
import { encodeHeader } from "./header.js";

export const INDEX_FILE = "model.safetensors.index.json";
/** huggingface_hub's default shard size: 5 GB in decimal units. */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

/**
 * Orders tensors as the safetensors reference writer does (descending dtype alignment, then name), so output is
 * deterministic, then fills shards greedily in that order without splitting a tensor. One shard is named
 * model.safetensors; several get 1-based model-0000k-of-0000N names and an index with the exact total_size.
 */
export function planSafetensorsShards(
  tensors: readonly PlannedTensor[],
  maxShardBytes = DEFAULT_MAX_SHARD_BYTES,
  metadata: Record<string, string> = { format: "pt" },
): (TensorFile | TextFile)[] {
  const ordered = [...tensors].sort(
    (a, b) => DTYPES[b.recipe.dtype].bytes - DTYPES[a.recipe.dtype].bytes || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  );
  const groups: PlannedTensor[][] = [];
  let current: PlannedTensor[] = [];
  let size = 0;
  for (const t of ordered) {
    const bytes = recipeBytes(t.recipe);
    if (current.length > 0 && size + bytes > maxShardBytes) {
      groups.push(current);
      current = [];
      size = 0;
    }
    current.push(t);
    size += bytes;
  }
  if (current.length > 0 || groups.length === 0) groups.push(current);
  if (groups.length === 1) {
    return [{ kind: "safetensors", path: "model.safetensors", tensors: groups[0] as PlannedTensor[], metadata }];
  }
  const n = groups.length;
  const name = (k: number) => `model-${String(k).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`;
  const files: (TensorFile | TextFile)[] = groups.map((g, i) => ({ kind: "safetensors", path: name(i + 1), tensors: g, metadata }));
  const weightMap: Record<string, string> = {};
  let total = 0;
  for (const [i, g] of groups.entries()) {
    for (const t of g) {
      weightMap[t.name] = name(i + 1);
      total += recipeBytes(t.recipe);
    }
  }
  const sortedMap = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : 1)));
  files.push({
    kind: "text",
    path: INDEX_FILE,
    content: `${JSON.stringify({ metadata: { total_size: total }, weight_map: sortedMap }, null, 2)}\n`,
  });
  return files;
}

export function safetensorsHeader(file: TensorFile): Uint8Array {
  return encodeHeader(
    file.tensors.map((t) => ({ name: t.name, dtype: t.recipe.dtype, shape: t.recipe.shape })),
    file.metadata,
  ).bytes;
}
