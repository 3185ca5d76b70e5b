import { resolve } from "node:path";
import { openMegatron } from "../../formats/megatron/read.js";
import { safetensorsHeader } from "../../formats/safetensors/write.js";
import type { ExecuteResult } from "../../plan/execute.js";
import { runPlan, type RunControl } from "../../plan/run.js";
import { summarizePlan, type PlanSummary } from "../../plan/plan.js";
import { planMegatronToHf, type ConvertOptions, type ConvertPlan } from "./megatron-to-hf.js";

export interface ConvertJob extends ConvertOptions {
  input: string;
  out: string;
  iteration?: number;
  dryRun?: boolean;
  onProgress?: (done: number, total: number) => void;
  /** Whole, one part of a split, finalize, or local workers (see plan/run.ts). */
  control?: RunControl;
}

export interface ConvertResult {
  summary: PlanSummary;
  converted: Omit<ConvertPlan, "plan">;
  source: { path: string; iteration: number | "release"; tp: number; pp: number; unknownGlobals: readonly string[] };
  /** Absent under dry-run. */
  execution?: ExecuteResult;
  out: string;
}

/** Megatron → HF: plan from headers, then (unless dry-run) write into a staged directory renamed on success. */
export async function convertMegatronToHf(job: ConvertJob): Promise<ConvertResult> {
  const ckpt = await openMegatron(job.input, job.iteration === undefined ? {} : { iteration: job.iteration });
  try {
    const planned = await planMegatronToHf(ckpt, job);
    const { plan, ...converted } = planned;
    const summary = summarizePlan(plan, (f) => safetensorsHeader(f).byteLength);
    const source = {
      path: resolve(job.input),
      iteration: ckpt.iteration,
      tp: ckpt.layout.tp,
      pp: ckpt.layout.pp,
      unknownGlobals: ckpt.unknownGlobals,
    };
    if (job.dryRun) {
      return { summary, converted, source, out: job.out };
    }
    const execution = await runPlan(plan, job.out, {
      ...(job.onProgress ? { onProgress: job.onProgress } : {}),
      ...(job.control ? { control: job.control } : {}),
      step: {
        step: "convert",
        source: { path: source.path, format: "megatron", iteration: source.iteration, tp: source.tp, pp: source.pp, dtype: planned.dtypes.join(",") },
        settings: { dtype: job.dtype ?? "keep", maxShardBytes: job.maxShardBytes ?? null, tokenizer: job.tokenizer ?? null },
        notes: [...plan.notes],
      },
      sourceDir: job.input,
      model: { ...planned.dims },
      parameters: { ...planned.params },
    });
    return { summary, converted, source, execution, out: job.out };
  } finally {
    await ckpt.close();
  }
}
