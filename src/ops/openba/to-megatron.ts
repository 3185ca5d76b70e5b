import { resolve } from "node:path";
import { safetensorsHeader } from "../../formats/safetensors/write.js";
import { PyGlobal, type PyValue } from "../../formats/torch/values.js";
import { countParams } from "../../models/openba/dims.js";
import type { ExecuteResult } from "../../plan/execute.js";
import { summarizePlan, type PlanSummary } from "../../plan/plan.js";
import { runPlan, type RunControl } from "../../plan/run.js";
import { DTYPES } from "../../tensors/dtypes.js";
import { openHfModel } from "./hf-global.js";
import { planMegatronFiles } from "./megatron-write.js";

export interface ToMegatronJob {
  input: string;
  out: string;
  tp: number;
  iteration?: number;
  divisibleBy?: number;
  trueVocab?: number;
  dryRun?: boolean;
  onProgress?: (done: number, total: number) => void;
  /** Whole, one part of a split, finalize, or local workers (see plan/run.ts). */
  control?: RunControl;
}

export interface ToMegatronResult {
  summary: PlanSummary;
  tp: number;
  paddedVocab: number;
  vocabChange: string;
  args: Record<string, unknown>;
  execution?: ExecuteResult;
}

/**
 * The args a Megatron OpenBA run needs to load the checkpoint (with --finetune): model dims (from shapes), lengths
 * and dtype (from config.json), and the architecture switches OpenBA's scripts always pass.
 */
export function synthesizedArgs(config: Record<string, unknown>, dtype: keyof typeof DTYPES): Record<string, PyValue> {
  const num = (k: string, fallback: number) => (typeof config[k] === "number" ? (config[k] as number) : fallback);
  const enc = num("max_seq_length", 1024);
  const dec = num("decoder_max_seq_length", enc);
  return {
    encoder_seq_length: enc,
    decoder_seq_length: dec,
    seq_length: enc,
    max_position_embeddings: Math.max(enc, dec),
    fp16: dtype === "F16",
    bf16: dtype === "BF16",
    params_dtype: new PyGlobal("torch", DTYPES[dtype].torch),
    pos_emb_type: "rotary",
    mlp_type: "SwiGLU",
    hidden_dropout: num("hidden_dropout", 0),
    attention_dropout: num("attention_dropout", 0),
    layernorm_epsilon: 1e-5,
    attention_softmax_in_fp32: true,
    apply_query_key_layer_scaling: false,
    add_bias_linear: true,
    untie_embeddings_and_output_weights: false,
    tokenizer_type: "SentencePieceTokenizer",
    data_parallel_size: 1,
    world_size: 1,
    iteration: 0,
  };
}

/** HF OpenBA → Megatron: fc_in split back into w1/w3, the head tied to the embedding (checked equal), vocab re-padded. */
export async function hfToMegatron(job: ToMegatronJob): Promise<ToMegatronResult> {
  const hf = await openHfModel(job.input);
  try {
    const { model, config } = hf;
    const dtype = model.tensors.get("language_model.embedding.word_embeddings.weight")?.dtype ?? "F16";
    const iteration = job.iteration ?? 1;
    const overrides = { ...synthesizedArgs(config, dtype), iteration };
    const written = planMegatronFiles(model, {
      tp: job.tp,
      iteration,
      ...(job.divisibleBy === undefined ? {} : { divisibleBy: job.divisibleBy }),
      ...(job.trueVocab === undefined ? {} : { trueVocab: job.trueVocab }),
      argsOverrides: overrides,
    });
    const summary = summarizePlan(written.plan, (f) => safetensorsHeader(f).byteLength);
    const args = Object.fromEntries(Object.entries(overrides as Record<string, PyValue>).map(([k, v]) => [k, v instanceof PyGlobal ? v.qualified : v]));
    const base = { summary, tp: job.tp, paddedVocab: written.paddedVocab, vocabChange: written.vocabChange, args };
    if (job.dryRun) return base;
    const execution = await runPlan(written.plan, job.out, {
      ...(job.onProgress ? { onProgress: job.onProgress } : {}),
      ...(job.control ? { control: job.control } : {}),
      step: {
        step: "to-megatron",
        source: { path: resolve(job.input), format: "hf-safetensors", dtype },
        settings: { tp: job.tp, iteration, divisibleBy: job.divisibleBy ?? null, trueVocab: job.trueVocab ?? model.trueVocab ?? null },
        notes: [...written.plan.notes],
      },
      sourceDir: job.input,
      model: { ...model.dims, vocab: written.paddedVocab },
      parameters: { ...countParams({ ...model.dims, vocab: written.paddedVocab }, true) },
    });
    return { ...base, execution };
  } finally {
    await hf.close();
  }
}
