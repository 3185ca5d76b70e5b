import { stat } from "node:fs/promises";
import { join } from "node:path";
import { openHfDir } from "../checkpoints/hf-safetensors.js";
import { convertMegatronToHf, type ConvertJob, type ConvertResult } from "./openba/convert.js";
import { DTYPE_OPTIONS } from "./openba/megatron-to-hf.js";
import { reshardMegatron, type ReshardJob, type ReshardResult } from "./openba/reshard.js";
import { hfToMegatron, type ToMegatronJob, type ToMegatronResult } from "./openba/to-megatron.js";
import { MegahubError } from "../errors.js";
import { openMegatron, type MegatronCheckpoint } from "../formats/megatron/read.js";
import type { ExpertLayout } from "../models/arch.js";
import type { AnyHfArch } from "../models/moe/hf-config.js";
import { detectArch, megatronArchOf, type ArchId } from "../models/registry.js";
import { convertMcoreToHf, hfGptToMegatron, reshardMcore, type McoreJobResult, type McoreMegatronResult } from "./mcore/jobs.js";
import { locateMegatronDist, openMegatronDist, type MegatronDistCheckpoint } from "../checkpoints/megatron-dist.js";
import { convertDistToHf, reshardDist } from "./mcore/dist-jobs.js";
import type { MegatronOutFormat } from "./mcore/write-dist.js";

export function megatronArch(ckpt: MegatronCheckpoint): ArchId {
  return megatronArchOf(ckpt.shards[0]?.tensors.keys() ?? []);
}

async function withCheckpoint<T>(input: string, iteration: number | undefined, f: (c: MegatronCheckpoint) => Promise<T>): Promise<T> {
  const ckpt = await openMegatron(input, iteration === undefined ? {} : { iteration });
  try {
    return await f(ckpt);
  } finally {
    await ckpt.close();
  }
}

/** Runs `f` on the torch_dist checkpoint at `input` (metadata.json marks one); undefined when it is not one. */
async function withDist<T>(input: string, iteration: number | undefined, f: (c: MegatronDistCheckpoint) => Promise<T>): Promise<{ value: T } | undefined> {
  const where = await locateMegatronDist(input, iteration === undefined ? {} : { iteration });
  if (!where) return undefined;
  const ckpt = await openMegatronDist(where);
  try {
    return { value: await f(ckpt) };
  } finally {
    await ckpt.close();
  }
}

export interface AnyConvertJob extends ConvertJob {
  trueVocab?: number;
  hfArch?: AnyHfArch;
}

export type AnyConvertResult =
  | ({ architecture: "openba" } & ConvertResult)
  | (McoreJobResult & { hf: Awaited<ReturnType<typeof convertMcoreToHf>>["hf"]; sourceDtypes: Awaited<ReturnType<typeof convertMcoreToHf>>["sourceDtypes"]; out: string; source: { path: string; iteration: number | "release"; tp: number; pp: number; vpp: number; unknownGlobals: readonly string[] } });

/** convert for every architecture: Megatron OpenBA → HF OpenBA, Megatron-Core GPT → HF Llama-family. */
export async function convertAny(job: AnyConvertJob): Promise<AnyConvertResult> {
  const dist = await withDist(job.input, job.iteration, async (ckpt) => {
    if (job.chatTemplate) throw new MegahubError("USAGE", "--chat-template applies to OpenBA; a GPT model's template comes with its --tokenizer directory");
    const res = await convertDistToHf(ckpt, { ...job, dtype: DTYPE_OPTIONS[job.dtype ?? "keep"] });
    const source = { path: job.input, iteration: ckpt.iteration, tp: ckpt.parallel.tp, pp: ckpt.parallel.pp, vpp: ckpt.parallel.vpp, unknownGlobals: ckpt.unknownGlobals };
    return { ...res, out: job.out, source };
  });
  if (dist) return dist.value;
  const gpt = await withCheckpoint(job.input, job.iteration, async (ckpt) => {
    if (megatronArch(ckpt) !== "gpt") return undefined;
    if (job.chatTemplate) throw new MegahubError("USAGE", "--chat-template applies to OpenBA; a GPT model's template comes with its --tokenizer directory");
    const res = await convertMcoreToHf(ckpt, { ...job, dtype: DTYPE_OPTIONS[job.dtype ?? "keep"] });
    const source = { path: job.input, iteration: ckpt.iteration, ...ckpt.parallel, unknownGlobals: ckpt.unknownGlobals };
    return { ...res, out: job.out, source };
  });
  if (gpt) return gpt;
  if (job.hfArch || job.trueVocab !== undefined) throw new MegahubError("USAGE", "--hf-arch and --true-vocab-size apply to Megatron-Core GPT checkpoints, not OpenBA");
  return { architecture: "openba", ...(await convertMegatronToHf(job)) };
}

export interface AnyReshardJob extends ReshardJob {
  pp?: number;
  vpp?: number;
  /** Expert parallelism of the output (MoE models). */
  ep?: number;
  /** What to write: legacy rank files (default) or torch_dist (Megatron-Core GPT). */
  format?: MegatronOutFormat;
}

export type AnyReshardResult = ({ architecture: "openba" } & ReshardResult) | (McoreMegatronResult & { source: { path: string; iteration: number | "release"; tp: number; pp: number; vpp: number; ep: number } });

/** reshard for every architecture (OpenBA: TP only; GPT: TP × PP × VPP). */
export async function reshardAny(job: AnyReshardJob): Promise<AnyReshardResult> {
  const layout = { pp: job.pp ?? 1, vpp: job.vpp ?? 1 };
  const dist = await withDist(job.input, job.iteration, async (ckpt) => {
    const res = await reshardDist(ckpt, { ...job, ...layout });
    return { ...res, source: { path: job.input, iteration: ckpt.iteration, tp: ckpt.parallel.tp, pp: ckpt.parallel.pp, vpp: ckpt.parallel.vpp, ep: ckpt.parallel.ep } };
  });
  if (dist) return dist.value;
  const gpt = await withCheckpoint(job.input, job.iteration, async (ckpt) => {
    if (megatronArch(ckpt) !== "gpt") return undefined;
    const res = await reshardMcore(ckpt, { ...job, pp: job.pp ?? 1, vpp: job.vpp ?? 1, ep: job.ep ?? 1 });
    return { ...res, source: { path: job.input, iteration: ckpt.iteration, tp: ckpt.parallel.tp, pp: ckpt.parallel.pp, vpp: ckpt.parallel.vpp, ep: ckpt.parallel.ep } };
  });
  if (gpt) return gpt;
  if ((job.ep ?? 1) > 1) throw new MegahubError("UNSUPPORTED", "--ep applies to mixture-of-experts models; OpenBA has none");
  if ((job.pp ?? 1) > 1 || (job.vpp ?? 1) > 1) throw new MegahubError("UNSUPPORTED", "OpenBA (encoder-decoder) is written with PP 1 only");
  if (job.format === "torch_dist") throw new MegahubError("UNSUPPORTED", "OpenBA (encoder-decoder) is written in the legacy torch format only (--format torch)");
  return { architecture: "openba", ...(await reshardMegatron(job)) };
}

export interface AnyToMegatronJob extends ToMegatronJob {
  pp?: number;
  vpp?: number;
  spec?: "local" | "te";
  /** MoE models: expert parallelism and how experts are stored (grouped = TEGroupedMLP, needs spec te). */
  ep?: number;
  experts?: ExpertLayout;
  format?: MegatronOutFormat;
}

export type AnyToMegatronResult = ({ architecture: "openba" } & ToMegatronResult) | (McoreMegatronResult & { args: Record<string, unknown> });

/** to-megatron for every architecture, chosen from the HF directory's tensor names. */
export async function toMegatronAny(job: AnyToMegatronJob): Promise<AnyToMegatronResult> {
  const isDir = await stat(job.input).then((s) => s.isDirectory(), () => false);
  if (!isDir) throw new MegahubError("LAYOUT", "expected an HF model directory", { file: job.input });
  const hf = await openHfDir(job.input);
  if (detectArch(hf.tensors.keys(), "hf", join(job.input)) === "gpt") {
    return hfGptToMegatron({ ...job, pp: job.pp ?? 1, vpp: job.vpp ?? 1 });
  }
  if ((job.ep ?? 1) > 1 || job.experts) throw new MegahubError("UNSUPPORTED", "--ep and --experts apply to mixture-of-experts models; OpenBA has none");
  if ((job.pp ?? 1) > 1 || (job.vpp ?? 1) > 1 || job.spec || job.format === "torch_dist") {
    throw new MegahubError("UNSUPPORTED", "OpenBA (encoder-decoder) is written with PP 1, its own names and the legacy torch format only");
  }
  return { architecture: "openba", ...(await hfToMegatron(job)) };
}
