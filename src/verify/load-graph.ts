import { randomBytes } from "node:crypto";
import { readFile, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { encodeModel } from "../formats/onnx/proto.js";
import { buildGptGraph } from "../models/gpt/onnx-graph.js";
import type { GptModelDir } from "./gpt-model-dir.js";
import type { OpenBAModelDir } from "../models/openba/hf-dir.js";
import { buildOpenBAGraph, type GraphPart } from "./openba-graph.js";
import { openSession, type Device, type Optimization, type OrtRunner, type SessionOptions } from "./ort-session.js";

export interface OpenGraphOptions {
  part: GraphPart;
  logits?: "all" | "last";
  device: Device;
  /** @default "basic" — see Optimization for the measured trade-off. */
  optimization?: Optimization;
  /** Told when the graph could not be placed beside the weights and they are read into memory instead. */
  onWarning?: (line: string) => void;
  /** Profiling (which provider ran each node), TF32, device id. */
  session?: SessionOptions;
}

/**
 * Builds the graph for a model dir and opens it in onnxruntime, with weights read straight from the safetensors
 * shards (external data: file, offset, length), so verifying a 7 GB model copies nothing.
 *
 * Why the .onnx goes *into the model dir* for a moment: onnxruntime 1.30 resolves external data relative to the
 * model file and refuses any location that escapes that directory — "../", absolute paths, and symlinks (it
 * canonicalises them) are all rejected. So the graph (a few hundred KB, no weights) is written as a hidden file
 * beside the shards, the session is created, and the file is deleted. When the dir is read-only, the shards are
 * read into memory and handed to ORT as `externalData` buffers instead, and the caller is warned.
 */
export async function openModelGraph(model: OpenBAModelDir, options: OpenGraphOptions): Promise<OrtRunner> {
  const onnx = encodeModel(
    buildOpenBAGraph(model.dims, model.tensors, {
      part: options.part,
      logits: options.logits ?? "all",
      locate: (ref) => ({ location: ref.file, offset: ref.offset, length: ref.length }),
    }),
  );
  return openBesideWeights(model.dir, model.files, onnx, options.part, options);
}

/** The decoder-only graph of a Llama / Mistral / Qwen2 / Qwen3 (or Mixtral / Qwen2-MoE / Qwen3-MoE) dir, opened the same way as {@link openModelGraph}. */
export async function openGptGraph(model: GptModelDir, options: Omit<OpenGraphOptions, "part">): Promise<OrtRunner> {
  const onnx = encodeModel(
    buildGptGraph(model.dims, model.tensors, {
      logits: options.logits ?? "all",
      locate: (ref) => ({ location: ref.file, offset: ref.offset, length: ref.length }),
    }),
  );
  return openBesideWeights(model.dir, model.files, onnx, model.dims.family, options);
}

async function openBesideWeights(
  dir: string,
  files: readonly string[],
  onnx: Uint8Array,
  label: string,
  options: Pick<OpenGraphOptions, "device" | "optimization" | "onWarning" | "session">,
): Promise<OrtRunner> {
  const path = join(dir, `.megahub-${label}-${process.pid}-${randomBytes(4).toString("hex")}.onnx`);
  let written = false;
  try {
    await writeFile(path, onnx, { flag: "wx" });
    written = true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EACCES" && code !== "EROFS" && code !== "EPERM") throw e;
    options.onWarning?.(`${dir} is not writable (${code}); reading ${files.length} weight file(s) into memory for ONNX Runtime`);
  }
  if (written) {
    try {
      return await openSession(path, options.device, options.optimization, options.session);
    } finally {
      await unlink(path).catch(() => undefined);
    }
  }
  const externalData = await Promise.all(files.map(async (file) => ({ path: file, data: await readFile(join(dir, file)) })));
  return openSession({ bytes: onnx, externalData }, options.device, options.optimization, options.session);
}
