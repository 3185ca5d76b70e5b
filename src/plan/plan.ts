import type { ZipSink } from "../formats/torch/zip-write.js";
import { describe, leaves, recipeBytes, type Recipe } from "./recipe.js";

export interface PlannedTensor {
  readonly name: string;
  readonly recipe: Recipe;
}

/** A file of tensors whose header is known before the first data byte (safetensors now, torch zip later). */
export interface TensorFile {
  readonly kind: "safetensors";
  readonly path: string;
  readonly tensors: readonly PlannedTensor[];
  readonly metadata?: Readonly<Record<string, string>>;
}

export interface TextFile {
  readonly kind: "text";
  readonly path: string;
  readonly content: string | Uint8Array;
}

export interface CopyFile {
  readonly kind: "copy";
  readonly path: string;
  readonly from: string;
  readonly bytes: number;
}

/** A file produced by a writer of its own (torch checkpoints), front to back into the executor's sink. */
export interface CustomFile {
  readonly kind: "custom";
  readonly path: string;
  readonly bytes: number;
  readonly tensors: readonly PlannedTensor[];
  write(sink: ZipSink, emit: (recipe: Recipe) => AsyncIterable<Uint8Array>): Promise<void>;
}

export type PlannedFile = TensorFile | TextFile | CopyFile | CustomFile;

export interface Plan {
  readonly files: readonly PlannedFile[];
  /** Facts the user must see before running (dropped state, padding changes, casts with overflow risk …). */
  readonly notes: readonly string[];
}

export interface PlanSummary {
  files: { path: string; bytes: number; tensors: number }[];
  bytesToRead: number;
  bytesToWrite: number;
  largestTensor: { name: string; bytes: number } | undefined;
  tensors: { file: string; name: string; dtype: string; shape: readonly number[]; recipe: string }[];
  notes: readonly string[];
}

export function fileBytes(f: PlannedFile, headerBytes: (f: TensorFile) => number): number {
  switch (f.kind) {
    case "safetensors":
      return headerBytes(f) + f.tensors.reduce((a, t) => a + recipeBytes(t.recipe), 0);
    case "text":
      return typeof f.content === "string" ? Buffer.byteLength(f.content) : f.content.byteLength;
    case "copy":
    case "custom":
      return f.bytes;
  }
}

export function tensorsOf(f: PlannedFile): readonly PlannedTensor[] {
  return f.kind === "safetensors" || f.kind === "custom" ? f.tensors : [];
}

/** What a plan will do, computed from headers only: the body of `--dry-run`. */
export function summarizePlan(plan: Plan, headerBytes: (f: TensorFile) => number): PlanSummary {
  let read = 0;
  let largest: PlanSummary["largestTensor"];
  const tensors: PlanSummary["tensors"] = [];
  for (const f of plan.files) {
    for (const t of tensorsOf(f)) {
      const bytes = recipeBytes(t.recipe);
      read += leaves(t.recipe).reduce((a, l) => a + recipeBytes(l), 0);
      if (!largest || bytes > largest.bytes) largest = { name: t.name, bytes };
      tensors.push({ file: f.path, name: t.name, dtype: t.recipe.dtype, shape: t.recipe.shape, recipe: describe(t.recipe) });
    }
    if (f.kind === "copy") read += f.bytes;
  }
  const files = plan.files.map((f) => ({ path: f.path, bytes: fileBytes(f, headerBytes), tensors: tensorsOf(f).length }));
  return {
    files,
    bytesToRead: read,
    bytesToWrite: files.reduce((a, f) => a + f.bytes, 0),
    largestTensor: largest,
    tensors,
    notes: plan.notes,
  };
}
