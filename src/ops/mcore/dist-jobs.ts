/**
 * GPT jobs whose source is a Megatron-Core `torch_dist` checkpoint: convert to HF, and reshard to legacy rank files
 * or torch_dist at any TP × PP (× EP for MoE). The model comes from models/mcore-dist.ts; planning and running are jobs.ts's.
 */
import type { Dtype } from "../../tensors/dtypes.js";
import type { MegatronDistCheckpoint } from "../../checkpoints/megatron-dist.js";
import type { PyValue } from "../../formats/torch/values.js";
import { distMcoreModel } from "../../models/mcore-dist.js";
import { planHfTokenizer } from "../../tokenizers/hf-tokenizer.js";
import { planMcoreHfFiles, type McoreHfPlan } from "./hf-plan.js";
import { headerBytes, reshardModel, run, type McoreConvertJob, type McoreJobResult, type McoreMegatronJob, type McoreMegatronResult } from "./jobs.js";

/** The step source a manifest records for a torch_dist input. */
export function distSource(ckpt: MegatronDistCheckpoint): { format: string } & Record<string, string | number> {
  const p = ckpt.parallel;
  return { format: "torch_dist", iteration: ckpt.iteration, tp: p.tp, pp: p.pp, ...(p.vpp > 1 ? { vpp: p.vpp } : {}), ...(p.ep > 1 ? { ep: p.ep } : {}) };
}

/** Megatron-Core GPT in torch_dist → HF Llama / Mistral / Qwen2 / Qwen3, MoE → Mixtral / Qwen2-MoE / Qwen3-MoE. */
export async function convertDistToHf(ckpt: MegatronDistCheckpoint, job: McoreConvertJob): Promise<McoreJobResult & { hf: Omit<McoreHfPlan, "plan">; sourceDtypes: Dtype[] }> {
  const m = distMcoreModel(ckpt);
  const { plan, ...hf } = await planMcoreHfFiles(m, job);
  const skipped = skippedNote(ckpt);
  const withNotes = skipped ? { ...plan, notes: [...plan.notes, skipped] } : plan;
  const summary = headerBytes(withNotes);
  const settings = { dtype: job.dtype ?? "keep", hfArch: hf.hfArch, maxShardBytes: job.maxShardBytes ?? null, tokenizer: job.tokenizer ?? null, trueVocab: hf.vocab };
  const execution = await run(withNotes, job, "convert", { ...distSource(ckpt), dtype: hf.dtypes.join(",") }, settings, m, hf.vocab);
  const sourceDtypes = [...new Set([...m.tensors.values()].map((r) => r.dtype))];
  return { architecture: "gpt", summary, dims: m.dims, features: m.features, flavour: m.flavour, parameters: hf.parameters, hf, sourceDtypes, ...(execution ? { execution } : {}) };
}

/** common.pt entries megahub rewrites (args, iteration, version, layout metadata) or drops (layout-specific state). */
const REWRITTEN = /^(args|checkpoint_version|iteration|content_metadata)$/;
const LAYOUT_SPECIFIC = new Set(["optimizer", "rng_state"]);

/** torch_dist → legacy rank files or torch_dist at another TP × PP (× VPP for legacy), bit for bit. */
export async function reshardDist(ckpt: MegatronDistCheckpoint, job: McoreMegatronJob): Promise<McoreMegatronResult> {
  const m = distMcoreModel(ckpt);
  const trueVocab = job.trueVocab ?? (job.tokenizer ? (await planHfTokenizer(job.tokenizer, m.dims.vocab)).facts.size : undefined) ?? m.trueVocab;
  const keep = new Map<string, PyValue>();
  const dropped: string[] = [];
  for (const [k, v] of ckpt.common.root.entries) {
    if (typeof k !== "string" || REWRITTEN.test(k)) continue;
    if (LAYOUT_SPECIFIC.has(k)) dropped.push(`common.pt ${k}`);
    else keep.set(k, v);
  }
  if (ckpt.optimizer) dropped.push(`optimizer state (${ckpt.optimizer.layout})`);
  if (ckpt.skipped.rng > 0) dropped.push(`${ckpt.skipped.rng} rng_state objects`);
  return reshardModel(m, job, { keep, dropped, trueVocab, iteration: ckpt.iteration, source: distSource(ckpt) });
}

function skippedNote(ckpt: MegatronDistCheckpoint): string | undefined {
  const parts = [
    ckpt.optimizer ? `optimizer state (${ckpt.optimizer.layout})` : "",
    ckpt.skipped.extraState > 0 ? `${ckpt.skipped.extraState} _extra_state objects` : "",
    ckpt.skipped.rng > 0 ? `${ckpt.skipped.rng} rng_state objects` : "",
    ckpt.skipped.other.length > 0 ? `${ckpt.skipped.other.length} other objects` : "",
  ].filter(Boolean);
  return parts.length > 0 ? `not converted (not model weights): ${parts.join(", ")}` : undefined;
}
