import type { ByteSource } from "../io/byte-source.js";
import { byteSize, type Dtype } from "../tensors/dtypes.js";

/**
 * How one output tensor is made from input bytes. Recipes are built from headers alone; the executor reads only
 * the byte ranges they name. Every node carries its output dtype and shape so plans can be printed, sized and
 * composed without reading a weight.
 */
export type Recipe = ReadRecipe | StridedRecipe | ConcatRecipe | CastRecipe | SelectRecipe | PadRowsRecipe;

interface Meta {
  readonly dtype: Dtype;
  readonly shape: readonly number[];
}

/** A dense C-order block of bytes. `label` names the input tensor for errors and provenance. */
export interface ReadRecipe extends Meta {
  readonly kind: "read";
  readonly source: ByteSource;
  readonly offset: number;
  readonly label: string;
}

/** A torch view that is not contiguous: gathered element by element from its storage. */
export interface StridedRecipe extends Meta {
  readonly kind: "strided";
  readonly source: ByteSource;
  readonly storageOffset: number;
  readonly stride: readonly number[];
  readonly label: string;
}

export interface ConcatRecipe extends Meta {
  readonly kind: "concat";
  readonly dim: number;
  readonly parts: readonly Recipe[];
}

export interface CastRecipe extends Meta {
  readonly kind: "cast";
  readonly input: Recipe;
}

/** Keeps `indices` (in the given order) along `dim`: pruning and vocabulary re-indexing. */
export interface SelectRecipe extends Meta {
  readonly kind: "select";
  readonly dim: number;
  readonly indices: readonly number[];
  readonly input: Recipe;
}

/** Trims or extends dim 0 to `shape[0]` rows; extra rows repeat the input's last row (Megatron's tools do so). */
export interface PadRowsRecipe extends Meta {
  readonly kind: "padRows";
  readonly input: Recipe;
}

export function readTensor(source: ByteSource, offset: number, dtype: Dtype, shape: readonly number[], label: string): ReadRecipe {
  return { kind: "read", source, offset, dtype, shape, label };
}

export function concat(dim: number, parts: readonly Recipe[]): Recipe {
  const first = parts[0];
  if (!first) {
    throw new RangeError("concat needs at least one part");
  }
  if (parts.length === 1) {
    return first;
  }
  const shape = [...first.shape];
  for (const p of parts.slice(1)) {
    if (p.dtype !== first.dtype || p.shape.length !== shape.length || p.shape.some((d, i) => i !== dim && d !== shape[i])) {
      throw new RangeError(
        `cannot concatenate [${p.shape.join(", ")}] ${p.dtype} to [${first.shape.join(", ")}] ${first.dtype} on dim ${dim}`,
      );
    }
    shape[dim] = (shape[dim] as number) + (p.shape[dim] as number);
  }
  return { kind: "concat", dim, parts, dtype: first.dtype, shape };
}

export function cast(input: Recipe, dtype: Dtype): Recipe {
  return input.dtype === dtype ? input : { kind: "cast", input, dtype, shape: input.shape };
}

export function select(input: Recipe, dim: number, indices: readonly number[]): Recipe {
  const n = input.shape[dim];
  if (n === undefined) {
    throw new RangeError(`select: dim ${dim} out of range for [${input.shape.join(", ")}]`);
  }
  for (const i of indices) {
    if (!Number.isInteger(i) || i < 0 || i >= n) {
      throw new RangeError(`select: index ${i} outside 0..${n - 1} on dim ${dim}`);
    }
  }
  const first = indices[0];
  const contiguous = first !== undefined && indices.every((i, k) => i === first + k);
  if (contiguous && first === 0 && indices.length === n) return input;
  // A contiguous range inside one part of a concatenation on the same dim (a TP shard of merged shards) selects
  // from that part alone: the executor then reads one source instead of gathering across all of them.
  if (contiguous && input.kind === "concat" && input.dim === dim) {
    let base = 0;
    for (const p of input.parts) {
      const size = p.shape[dim] as number;
      if (first >= base && first + indices.length <= base + size) return select(p, dim, indices.map((i) => i - base));
      base += size;
    }
  }
  const shape = [...input.shape];
  shape[dim] = indices.length;
  return { kind: "select", dim, indices, input, dtype: input.dtype, shape };
}

export function padRows(input: Recipe, rows: number): Recipe {
  if (input.shape[0] === rows) {
    return input;
  }
  if ((input.shape[0] ?? 0) === 0) {
    throw new RangeError("padRows: cannot extend an empty tensor");
  }
  return { kind: "padRows", input, dtype: input.dtype, shape: [rows, ...input.shape.slice(1)] };
}

export function recipeBytes(r: Recipe): number {
  return byteSize(r.dtype, r.shape);
}

/** One line describing where a tensor comes from, for `--dry-run` and the manifest. */
export function describe(r: Recipe): string {
  switch (r.kind) {
    case "read":
    case "strided":
      return r.label;
    case "concat":
      return `concat(dim=${r.dim}; ${r.parts.map(describe).join(" | ")})`;
    case "cast":
      return `cast(${r.dtype}; ${describe(r.input)})`;
    case "select":
      return `select(dim=${r.dim}, ${r.indices.length} of ${r.input.shape[r.dim]}; ${describe(r.input)})`;
    case "padRows":
      return `padRows(${r.shape[0]} rows, repeat last; ${describe(r.input)})`;
  }
}

/** Every input tensor a recipe reads (for "bytes to read" in plans). */
export function leaves(r: Recipe): (ReadRecipe | StridedRecipe)[] {
  switch (r.kind) {
    case "read":
    case "strided":
      return [r];
    case "concat":
      return r.parts.flatMap(leaves);
    default:
      return leaves(r.input);
  }
}
