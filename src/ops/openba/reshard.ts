import { resolve } from "node:path";
import { openMegatron } from "../../formats/megatron/read.js";
import { safetensorsHeader } from "../../formats/safetensors/write.js";
import { PyDict, type PyValue } from "../../formats/torch/values.js";
import { countParams } from "../../models/openba/dims.js";
import { OPENBA_SPECIAL } from "../../models/openba/spec.js";
import type { ExecuteResult } from "../../plan/execute.js";
import { summarizePlan, type PlanSummary } from "../../plan/plan.js";
import { runPlan, type RunControl } from "../../plan/run.js";
import { megatronGlobalModel } from "./global-model.js";
import { planMegatronFiles } from "./megatron-write.js";
import { planTokenizerFiles } from "../../models/openba/tokenizer.js";

export interface ReshardJob {
  input: string;
  out: string;
  tp: number;
  iteration?: number;
  divisibleBy?: number;
  trueVocab?: number;
  /** A sentencepiece model: the true vocabulary is its pieces + OpenBA's 103 tokens. */
  tokenizer?: string;
  dryRun?: boolean;
  /** Carry pickle globals that are not on megahub's allow-list (off: dropped with a notice). */
  keepUnknownGlobals?: boolean;
  onProgress?: (done: number, total: number) => void;
  /** Whole, one part of a split, finalize, or local workers (see plan/run.ts). */
  control?: RunControl;
}

export interface ReshardResult {
  summary: PlanSummary;
  source: { path: string; iteration: number | "release"; tp: number };
  tp: number;
  paddedVocab: number;
  vocabChange: string;
  /** Top-level entries not carried over because they are TP-specific. */
  dropped: string[];
  /** Unvetted pickle globals found in the carried args/state (dropped unless keepUnknownGlobals). */
  unknownGlobals: string[];
  execution?: ExecuteResult;
}

/** Entries of model_optim_rng.pt that describe one TP layout and cannot follow a re-split. */
const TP_SPECIFIC = new Set(["optimizer", "rng_state"]);
const REWRITTEN = new Set(["args", "checkpoint_version", "iteration", "model"]);

/** Re-splits a Megatron checkpoint to a new TP size by slicing bytes: shards merged, re-split, re-padded, written. */
export async function reshardMegatron(job: ReshardJob): Promise<ReshardResult> {
  const ckpt = await openMegatron(job.input, job.iteration === undefined ? {} : { iteration: job.iteration });
  try {
    const model = megatronGlobalModel(ckpt);
    const trueVocab =
      job.trueVocab ??
      (job.tokenizer ? (await planTokenizerFiles(job.tokenizer, model.dims.vocab)).facts.spSize + OPENBA_SPECIAL.extraRows : undefined) ??
      model.trueVocab;
    const root = ckpt.shards[0]?.torch.root;
    const keep = new Map<string, PyValue>();
    const dropped: string[] = [];
    if (root instanceof PyDict) {
      for (const [k, v] of root.entries) {
        if (typeof k !== "string" || REWRITTEN.has(k)) continue;
        if (TP_SPECIFIC.has(k)) dropped.push(k);
        else keep.set(k, v);
      }
    }
    const written = planMegatronFiles(model, {
      tp: job.tp,
      iteration: ckpt.iteration,
      ...(job.divisibleBy === undefined ? {} : { divisibleBy: job.divisibleBy }),
      ...(trueVocab === undefined ? {} : { trueVocab }),
      ...(ckpt.args ? { args: ckpt.args } : {}),
      keep,
      keepUnknownGlobals: job.keepUnknownGlobals === true,
    });
    const plan = { ...written.plan, notes: dropped.length > 0 ? [...written.plan.notes, `dropped TP-specific state: ${dropped.join(", ")}`] : written.plan.notes };
    const summary = summarizePlan(plan, (f) => safetensorsHeader(f).byteLength);
    const source = { path: resolve(job.input), iteration: ckpt.iteration, tp: ckpt.layout.tp };
    const base = { summary, source, tp: job.tp, paddedVocab: written.paddedVocab, vocabChange: written.vocabChange, dropped, unknownGlobals: written.unknownGlobals };
    if (job.dryRun) return base;
    const execution = await runPlan(plan, job.out, {
      ...(job.onProgress ? { onProgress: job.onProgress } : {}),
      ...(job.control ? { control: job.control } : {}),
      step: {
        step: "reshard",
        source: { path: source.path, format: "megatron", iteration: source.iteration, tp: source.tp, pp: 1 },
        settings: { tp: job.tp, divisibleBy: job.divisibleBy ?? null, trueVocab: trueVocab ?? null },
        notes: [...plan.notes],
      },
      sourceDir: job.input,
      model: { ...model.dims, vocab: written.paddedVocab },
      parameters: { ...countParams({ ...model.dims, vocab: written.paddedVocab }, true) },
    });
    return { ...base, execution };
  } finally {
    await ckpt.close();
  }
}
