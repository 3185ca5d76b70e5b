import { resolve } from "node:path";
import { torchDtypeGlobal } from "./write-megatron.js";
import { planMcoreFiles, type MegatronOutFormat } from "./write-dist.js";
import type { MegatronCheckpoint } from "../../formats/megatron/read.js";
import { safetensorsHeader } from "../../formats/safetensors/write.js";
import { PyDict, type PyValue } from "../../formats/torch/values.js";
import { MegahubError } from "../../errors.js";
import { countModelParams, type ExpertLayout, type ModelDims } from "../../models/arch.js";
import { gptMegatronArgs } from "../../models/gpt/hf-config.js";
import { checkDenseCopyBytes } from "../../models/moe/ep-copies.js";
import { moeMegatronArgs, type AnyHfArch } from "../../models/moe/hf-config.js";
import { MCORE_PARAMS } from "../../models/moe/spec.js";
import { megatronMcoreModel, type McoreModel } from "../../models/mcore-global.js";
import type { ExecuteResult } from "../../plan/execute.js";
import { summarizePlan, type Plan, type PlanSummary } from "../../plan/plan.js";
import { runPlan, type RunControl } from "../../plan/run.js";
import type { Dtype } from "../../tensors/dtypes.js";
import { planHfTokenizer } from "../../tokenizers/hf-tokenizer.js";
import { planMcoreHfFiles, type McoreHfPlan } from "./hf-plan.js";
import { openHfGpt } from "./open-hf.js";

export interface McoreJobCommon {
  readonly input: string;
  readonly out: string;
  readonly dryRun?: boolean | undefined;
  readonly onProgress?: ((done: number, total: number) => void) | undefined;
  /** Whole run, one part of a split, its finalize step, or local workers (see plan/run.ts). */
  readonly control?: RunControl | undefined;
}

export interface McoreParallel {
  readonly tp: number;
  readonly pp: number;
  readonly vpp: number;
  /** Expert parallelism (MoE models); 1 when absent. */
  readonly ep?: number | undefined;
}

/** What a GPT job reports beside its plan summary. */
export interface McoreJobResult {
  readonly architecture: "gpt";
  readonly summary: PlanSummary;
  readonly dims: ModelDims;
  readonly features: McoreModel["features"];
  readonly flavour: McoreModel["flavour"];
  readonly parameters: ReturnType<typeof countModelParams>;
  readonly execution?: ExecuteResult;
}

export const headerBytes = (plan: Plan) => summarizePlan(plan, (f) => safetensorsHeader(f).byteLength);

export async function run(plan: Plan, job: McoreJobCommon, step: string, source: { format: string } & Record<string, string | number>, settings: Record<string, unknown>, m: McoreModel, vocab: number) {
  if (job.dryRun) return undefined;
  const parameters = countModelParams(MCORE_PARAMS, { ...m.dims, vocab }, m.features);
  return runPlan(plan, job.out, {
    ...(job.onProgress ? { onProgress: job.onProgress } : {}),
    ...(job.control ? { control: job.control } : {}),
    architecture: "gpt",
    step: { step, source: { path: resolve(job.input), ...source }, settings, notes: [...plan.notes] },
    sourceDir: job.input,
    model: { ...modelFacts(m), layers: m.dims.layers, flavour: m.flavour },
    parameters: { ...parameters },
  });
}

/** The manifest's model facts: the dims, MoE ones flattened to numbers. */
function modelFacts(m: McoreModel): Record<string, string | number> {
  const { moe, ...dense } = m.dims;
  if (!moe) return dense;
  return { ...dense, experts: moe.experts, moeFfn: moe.ffn, sharedFfn: moe.sharedFfn, moeLayers: moe.layers.filter(Boolean).length, topk: m.moe?.routing.topk ?? 0, expertLayout: m.moe?.layout ?? "sequential" };
}

const parallelSource = (ckpt: MegatronCheckpoint) => ({
  format: "megatron",
  iteration: ckpt.iteration,
  tp: ckpt.parallel.tp,
  pp: ckpt.parallel.pp,
  ...(ckpt.parallel.vpp > 1 ? { vpp: ckpt.parallel.vpp } : {}),
  ...(ckpt.parallel.ep > 1 ? { ep: ckpt.parallel.ep } : {}),
});

export interface McoreConvertJob extends McoreJobCommon {
  readonly dtype?: Dtype | undefined;
  readonly maxShardBytes?: number | undefined;
  readonly tokenizer?: string | undefined;
  readonly trueVocab?: number | undefined;
  readonly hfArch?: AnyHfArch | undefined;
}

/** Megatron-Core GPT (legacy, any TP × PP × VPP) → HF Llama / Mistral / Qwen2 / Qwen3. */
export async function convertMcoreToHf(ckpt: MegatronCheckpoint, job: McoreConvertJob): Promise<McoreJobResult & { hf: Omit<McoreHfPlan, "plan">; sourceDtypes: Dtype[] }> {
  const m = megatronMcoreModel(ckpt);
  await checkDenseCopyBytes(ckpt);
  const { plan, ...hf } = await planMcoreHfFiles(m, job);
  const summary = headerBytes(plan);
  const settings = { dtype: job.dtype ?? "keep", hfArch: hf.hfArch, maxShardBytes: job.maxShardBytes ?? null, tokenizer: job.tokenizer ?? null, trueVocab: hf.vocab };
  const execution = await run(plan, job, "convert", { ...parallelSource(ckpt), dtype: hf.dtypes.join(",") }, settings, m, hf.vocab);
  const sourceDtypes = [...new Set([...m.tensors.values()].map((r) => r.dtype))];
  return { architecture: "gpt", summary, dims: m.dims, features: m.features, flavour: m.flavour, parameters: hf.parameters, hf, sourceDtypes, ...(execution ? { execution } : {}) };
}

export interface McoreMegatronJob extends McoreJobCommon, McoreParallel {
  readonly iteration?: number | undefined;
  readonly divisibleBy?: number | undefined;
  readonly trueVocab?: number | undefined;
  readonly tokenizer?: string | undefined;
  readonly keepUnknownGlobals?: boolean | undefined;
  /** Legacy rank files (default) or torch_dist. */
  readonly format?: MegatronOutFormat | undefined;
}

export interface McoreMegatronResult extends McoreJobResult {
  readonly paddedVocab: number;
  readonly vocabChange: string;
  readonly dropped: string[];
  readonly parallel: McoreParallel;
  /** Unvetted pickle globals found in the carried args/state (dropped unless keepUnknownGlobals). */
  readonly unknownGlobals: string[];
}

/** Top-level entries of model_optim_rng.pt bound to one parallel layout; megahub rewrites the others or carries them. */
const LAYOUT_SPECIFIC = new Set(["optimizer", "rng_state"]);
const REWRITTEN = /^(args|checkpoint_version|iteration|model\d*)$/;

/** Megatron-Core GPT → Megatron-Core GPT at another TP × PP × VPP, bit for bit. */
export async function reshardMcore(ckpt: MegatronCheckpoint, job: McoreMegatronJob): Promise<McoreMegatronResult> {
  const m = megatronMcoreModel(ckpt);
  await checkDenseCopyBytes(ckpt);
  const trueVocab = job.trueVocab ?? (job.tokenizer ? (await planHfTokenizer(job.tokenizer, m.dims.vocab)).facts.size : undefined) ?? m.trueVocab;
  const keep = new Map<string, PyValue>();
  const dropped: string[] = [];
  const root = ckpt.shards[0]?.torch.root;
  if (root instanceof PyDict) {
    for (const [k, v] of root.entries) {
      if (typeof k !== "string" || REWRITTEN.test(k)) continue;
      if (LAYOUT_SPECIFIC.has(k)) dropped.push(k);
      else keep.set(k, v);
    }
  }
  if (ckpt.distribOptim) dropped.push("distrib_optim.pt (distributed optimizer state)");
  return reshardModel(m, job, { keep, dropped, trueVocab, iteration: ckpt.iteration, source: parallelSource(ckpt) });
}

/**
 * The writing half of every reshard, whatever the source format: the model re-split to the job's layout, the
 * source's carried top-level state kept, what cannot follow named.
 */
export async function reshardModel(
  m: McoreModel,
  job: McoreMegatronJob,
  from: {
    keep: ReadonlyMap<string, PyValue>;
    dropped: string[];
    trueVocab: number | undefined;
    iteration: number | "release";
    source: { format: string } & Record<string, string | number>;
  },
): Promise<McoreMegatronResult> {
  const { keep, dropped, trueVocab, iteration } = from;
  const written = await planMcoreFiles(m, MCORE_PARAMS, {
    ...job,
    iteration,
    trueVocab,
    argsSet: {
      num_layers: m.dims.layers,
      hidden_size: m.dims.hidden,
      ffn_hidden_size: m.dims.ffn,
      num_attention_heads: m.dims.heads,
      num_query_groups: m.dims.kvHeads,
      kv_channels: m.dims.headDim,
      ...(m.dims.moe && m.moe ? moeMegatronArgs(m.dims, m.features, m.moe.routing, m.moe.layout, { tp: job.tp, ep: job.ep ?? 1 }) : {}),
    },
    keep,
  }, job.format);
  const plan = { ...written.plan, notes: dropped.length > 0 ? [...written.plan.notes, `dropped layout-specific state: ${dropped.join(", ")}`] : written.plan.notes };
  const summary = headerBytes(plan);
  const settings = { tp: job.tp, pp: job.pp, vpp: job.vpp, format: job.format ?? "torch", ...(m.dims.moe ? { ep: job.ep ?? 1 } : {}), divisibleBy: job.divisibleBy ?? null, trueVocab: trueVocab ?? null };
  const execution = await run(plan, job, "reshard", from.source, settings, m, written.paddedVocab);
  const parameters = countModelParams(MCORE_PARAMS, { ...m.dims, vocab: written.paddedVocab }, m.features);
  return {
    architecture: "gpt",
    summary,
    dims: m.dims,
    features: m.features,
    flavour: m.flavour,
    parameters,
    paddedVocab: written.paddedVocab,
    vocabChange: written.vocabChange,
    dropped,
    parallel: { tp: job.tp, pp: job.pp, vpp: job.vpp, ...(m.dims.moe ? { ep: job.ep ?? 1 } : {}) },
    unknownGlobals: written.unknownGlobals,
    ...(execution ? { execution } : {}),
  };
}

/** HF Llama / Mistral / Qwen2 / Qwen3 → a Megatron-Core GPT checkpoint that load_checkpoint reads. */
export async function hfGptToMegatron(job: McoreMegatronJob & { spec?: "local" | "te" | undefined; experts?: ExpertLayout | undefined }): Promise<McoreMegatronResult & { args: Record<string, unknown> }> {
  if (job.experts === "grouped" && job.spec !== "te") throw new MegahubError("USAGE", "--experts grouped is Transformer Engine's TEGroupedMLP: it needs --spec te");
  const opened = await openHfGpt(job.input);
  try {
    if (!opened.model.moe && (job.experts !== undefined || (job.ep ?? 1) > 1)) throw new MegahubError("USAGE", "--experts and --ep apply to mixture-of-experts models", { file: job.input });
    const moe = opened.model.moe ? { moe: { ...opened.model.moe, layout: job.experts ?? "sequential" } } : {};
    const m: McoreModel = { ...opened.model, flavour: job.spec ?? "local", ...moe };
    const dtype = m.tensors.get("embedding.word_embeddings.weight")?.dtype ?? "F32";
    const iteration = job.iteration ?? 1;
    const trueVocab = job.trueVocab ?? m.trueVocab;
    const divisibleBy = job.divisibleBy ?? 128;
    const base = gptMegatronArgs(m.dims, m.features, opened.hyper, dtype, { padded: 0, true: trueVocab, divisibleBy });
    const ep = job.ep ?? 1;
    const argsSet: Record<string, PyValue> = {
      ...base,
      ...(m.dims.moe && m.moe ? moeMegatronArgs(m.dims, m.features, m.moe.routing, m.moe.layout, { tp: job.tp, ep }) : {}),
      params_dtype: torchDtypeGlobal(dtype),
      transformer_impl: m.flavour === "te" ? "transformer_engine" : "local",
      iteration,
      // expert TP = TP: the EP ranks are data-parallel replicas of the dense weights
      data_parallel_size: ep,
      world_size: job.tp * job.pp * ep,
    };
    const written = await planMcoreFiles(m, MCORE_PARAMS, { ...job, iteration, divisibleBy, trueVocab, argsSet }, job.format);
    const summary = headerBytes(written.plan);
    const settings = { tp: job.tp, pp: job.pp, vpp: job.vpp, format: job.format ?? "torch", ...(m.dims.moe ? { ep } : {}), iteration, divisibleBy, trueVocab: trueVocab ?? null, spec: m.flavour };
    const execution = await run(written.plan, job, "to-megatron", { format: "hf-safetensors", dtype }, settings, m, written.paddedVocab);
    const parameters = countModelParams(MCORE_PARAMS, { ...m.dims, vocab: written.paddedVocab }, m.features);
    const args = Object.fromEntries(Object.entries({ ...argsSet, padded_vocab_size: written.paddedVocab }).map(([k, v]) => [k, plainArg(v)]));
    return {
      architecture: "gpt",
      summary,
      dims: m.dims,
      features: m.features,
      flavour: m.flavour,
      parameters,
      paddedVocab: written.paddedVocab,
      vocabChange: written.vocabChange,
      dropped: [],
      parallel: { tp: job.tp, pp: job.pp, vpp: job.vpp, ...(m.dims.moe ? { ep } : {}) },
      unknownGlobals: written.unknownGlobals,
      args,
      ...(execution ? { execution } : {}),
    };
  } finally {
    await opened.close();
  }
}

function plainArg(v: PyValue): unknown {
  if (v === null || typeof v !== "object") return typeof v === "bigint" ? v.toString() : v;
  if ("qualified" in v) return v.qualified;
  if ("value" in v) return v.value;
  return String(v);
}

