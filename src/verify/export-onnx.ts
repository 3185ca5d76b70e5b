import { open, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { encodeModel } from "../formats/onnx/proto.js";
import { FileSource } from "../io/byte-source.js";
import { assertWritableTarget, StagedDir } from "../io/atomic.js";
import { buildGptGraph } from "../models/gpt/onnx-graph.js";
import { readAnyModelDir } from "./gpt-model-dir.js";
import type { TensorRef } from "../models/openba/hf-dir.js";
import { buildOpenBAGraph, IR_VERSION, OPSET, type GraphPart } from "./openba-graph.js";

/** The data file every exported graph points into. */
export const EXPORT_DATA_FILE = "model.onnx.data";

/**
 * The graphs an OpenBA export writes: the teacher-forced model, and the encoder/decoder pair generation uses. A
 * decoder-only model (Llama / Mistral / Qwen2 / Qwen3, MoE Mixtral / Qwen2-MoE / Qwen3-MoE) gets `model.onnx` alone: input_ids, attention_mask → logits.
 */
export const EXPORT_GRAPHS: readonly { file: string; part: GraphPart; logits: "all" | "last" }[] = [
  { file: "model.onnx", part: "seq2seq", logits: "all" },
  { file: "encoder_model.onnx", part: "encoder", logits: "all" },
  { file: "decoder_model.onnx", part: "decoder", logits: "last" },
];

/** Alignment of each tensor in the data file: lets ORT mmap it and keeps every dtype naturally aligned. */
const ALIGN = 64;
const COPY_CHUNK = 64 << 20;

export interface ExportOptions {
  /** Progress in bytes copied. */
  onProgress?: (done: number, total: number) => void;
  /** Build the graphs and plan the data file, check --out, write nothing. @default false */
  dryRun?: boolean;
}

export interface ExportResult {
  outDir: string;
  files: string[];
  dataBytes: number;
  tensors: number;
  opset: number;
  irVersion: number;
  dryRun: boolean;
  /** Every file written (or, on a dry run, to be written) with its size. */
  sizes: Array<{ file: string; bytes: number }>;
}

/**
 * Writes an HF model dir as ONNX models that onnxruntime loads on its own. OpenBA: `model.onnx` (input_ids,
 * attention_mask, decoder_input_ids → logits), `encoder_model.onnx` and `decoder_model.onnx` (last-position
 * logits); Llama / Mistral / Qwen2 / Qwen3 and the MoE classes: `model.onnx` (input_ids, attention_mask → logits [B,S,V], no KV cache).
 * All point into one `model.onnx.data` beside them. Weights are copied in their stored dtype (F16/BF16
 * are cast to fp32 inside the graph), so the data file is the size of the safetensors. The out dir appears only when
 * complete and must not exist or be empty.
 *
 * @example
 * await exportOnnx("out/hf", "out/onnx");
 * // then: ort.InferenceSession.create("out/onnx/model.onnx")
 */
export async function exportOnnx(dir: string, outDir: string, options: ExportOptions = {}): Promise<ExportResult> {
  const opened = await readAnyModelDir(dir);
  const placed = new Map<string, { ref: TensorRef; offset: number }>();
  let cursor = 0;
  // Graphs share weights: each tensor is placed once, at the next aligned offset, the first time a graph asks.
  const locate = (ref: TensorRef) => {
    let p = placed.get(ref.name);
    if (!p) {
      cursor = Math.ceil(cursor / ALIGN) * ALIGN;
      p = { ref, offset: cursor };
      placed.set(ref.name, p);
      cursor += ref.length;
    }
    return { location: EXPORT_DATA_FILE, offset: p.offset, length: ref.length };
  };
  const graphs =
    opened.kind === "gpt"
      ? [{ file: "model.onnx", bytes: encodeModel(buildGptGraph(opened.model.dims, opened.model.tensors, { logits: "all", locate })) }]
      : EXPORT_GRAPHS.map((g) => ({
          file: g.file,
          bytes: encodeModel(buildOpenBAGraph(opened.model.dims, opened.model.tensors, { part: g.part, logits: g.logits, locate })),
        }));
  const result: ExportResult = {
    outDir,
    files: [...graphs.map((g) => g.file), EXPORT_DATA_FILE],
    dataBytes: cursor,
    tensors: placed.size,
    opset: OPSET,
    irVersion: IR_VERSION,
    dryRun: options.dryRun === true,
    sizes: [...graphs.map((g) => ({ file: g.file, bytes: g.bytes.byteLength })), { file: EXPORT_DATA_FILE, bytes: cursor }],
  };
  if (options.dryRun === true) {
    await assertWritableTarget(resolve(outDir));
    return result;
  }
  const staged = await StagedDir.create(outDir);
  try {
    for (const g of graphs) await writeFile(join(staged.path, g.file), g.bytes);
    await copyWeights(dir, join(staged.path, EXPORT_DATA_FILE), [...placed.values()], cursor, options.onProgress);
    await staged.commit();
  } catch (e) {
    await staged.abort();
    throw e;
  }
  return result;
}

async function copyWeights(
  dir: string,
  target: string,
  plan: readonly { ref: TensorRef; offset: number }[],
  size: number,
  onProgress?: (done: number, total: number) => void,
): Promise<void> {
  const out = await open(target, "w");
  const sources = new Map<string, FileSource>();
  const total = plan.reduce((a, p) => a + p.ref.length, 0);
  try {
    // Sized up front so alignment gaps are zeros and a short write shows up as a wrong size, not a short file.
    await out.truncate(size);
    let done = 0;
    for (const { ref, offset } of plan) {
      let src = sources.get(ref.file);
      if (!src) {
        src = await FileSource.open(join(dir, ref.file));
        sources.set(ref.file, src);
      }
      for (let at = 0; at < ref.length; at += COPY_CHUNK) {
        const n = Math.min(COPY_CHUNK, ref.length - at);
        const chunk = await src.read(ref.offset + at, n);
        await out.write(chunk, 0, n, offset + at);
        done += n;
        onProgress?.(done, total);
      }
    }
  } finally {
    await out.close();
    for (const s of sources.values()) await s.close();
  }
}
