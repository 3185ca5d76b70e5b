import { MegahubError } from "../../errors.js";
import { argNumber } from "../../formats/megatron/read.js";
import { PyFloat, type PyCall, type PyValue } from "../../formats/torch/values.js";
import { DTYPES, type Dtype } from "../../tensors/dtypes.js";
import type { Features, ModelDims } from "../arch.js";
import type { GptDims } from "./config-dims.js";

/** The transformers classes a Megatron-Core GPT model can become; each reads the same tensor names. */
export const HF_ARCHS = {
  llama: { architecture: "LlamaForCausalLM", modelType: "llama" },
  mistral: { architecture: "MistralForCausalLM", modelType: "mistral" },
  qwen2: { architecture: "Qwen2ForCausalLM", modelType: "qwen2" },
  qwen3: { architecture: "Qwen3ForCausalLM", modelType: "qwen3" },
} as const satisfies Record<string, { architecture: string; modelType: string }>;
export type HfArch = keyof typeof HF_ARCHS;

export function isHfArch(s: string): s is HfArch {
  return s in HF_ARCHS;
}

/** Architecture facts that live in args (Megatron) or config.json (HF), not in shapes. */
export interface GptHyper {
  readonly normEps: number;
  readonly ropeTheta: number;
  readonly rotaryPercent: number;
  readonly ropeScaling: Readonly<Record<string, number | string>> | undefined;
  readonly maxPositions: number;
  readonly slidingWindow: number | undefined;
  readonly normalization: "RMSNorm" | "LayerNorm";
}

const bool = (v: PyValue | undefined) => (typeof v === "boolean" ? v : undefined);

/** Reads the hyper-parameters from Megatron args (names as Megatron-Core 0.17 stores them, megatron-core-format.md §6.1). */
export function hyperFromArgs(args: PyCall | undefined): GptHyper {
  const n = (k: string) => argNumber(args, k);
  const norm = args?.field("normalization");
  const window = args?.field("window_size");
  let slidingWindow: number | undefined;
  if (typeof window === "number") slidingWindow = window;
  else if (window && typeof window === "object" && "items" in window && Array.isArray(window.items) && typeof window.items[0] === "number") {
    slidingWindow = window.items[0];
  }
  let ropeScaling: GptHyper["ropeScaling"];
  if (bool(args?.field("use_rope_scaling")) === true) {
    ropeScaling = { rope_type: "llama3", factor: n("rope_scaling_factor") ?? 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
  } else if ((n("seq_len_interpolation_factor") ?? 1) !== 1) {
    ropeScaling = { rope_type: "linear", factor: n("seq_len_interpolation_factor") as number };
  }
  return {
    normEps: n("layernorm_epsilon") ?? n("norm_epsilon") ?? 1e-5,
    ropeTheta: n("rotary_base") ?? 10000,
    rotaryPercent: n("rotary_percent") ?? 1,
    ropeScaling,
    maxPositions: n("max_position_embeddings") ?? n("seq_length") ?? 4096,
    slidingWindow,
    normalization: norm === "LayerNorm" ? "LayerNorm" : "RMSNorm",
  };
}

/** The HF class a model's features call for: q/k norms → Qwen3, q/k/v-only biases → Qwen2, a sliding window → Mistral. */
export function pickHfArch(f: Features, h: GptHyper): HfArch {
  if (f.qkNorm) return "qwen3";
  if (f.qkvBias && !f.linearBias) return "qwen2";
  if (h.slidingWindow !== undefined) return "mistral";
  return "llama";
}

/** Why a model cannot be written as `arch` (empty when it can). */
export function hfArchProblems(arch: HfArch, f: Features, h: GptHyper, swiglu: boolean): string[] {
  const p: string[] = [];
  if (h.normalization !== "RMSNorm" || f.normBias) p.push("LayerNorm (with bias): the Llama-family classes use RMSNorm");
  if (!swiglu) p.push("a non-gated MLP: the Llama-family classes use SwiGLU");
  if (arch === "qwen3" && f.qkvBias !== f.linearBias) p.push("Qwen3 has biases on all attention projections or none");
  if (arch !== "qwen3" && f.qkNorm) p.push(`${HF_ARCHS[arch].architecture} has no q/k norms`);
  if (arch === "qwen2" && (!f.qkvBias || f.linearBias)) p.push("Qwen2 has biases on q/k/v only");
  if ((arch === "llama" || arch === "mistral") && f.qkvBias !== f.linearBias) p.push(`${HF_ARCHS[arch].architecture} has biases on every linear or none (attention_bias/mlp_bias)`);
  if (h.rotaryPercent !== 1 && arch !== "llama") p.push("partial rotary embeddings");
  return p;
}

export type SpecialIds = { bos?: number | undefined; eos?: number | undefined; pad?: number | undefined };

/** The config.json fields every Llama-family class (dense or MoE) reads the same way. */
export function decoderConfig(
  names: { readonly architecture: string; readonly modelType: string },
  d: ModelDims,
  f: Features,
  h: GptHyper,
  vocab: number,
  dtype: Dtype,
  ids: SpecialIds,
): Record<string, unknown> {
  return {
    architectures: [names.architecture],
    model_type: names.modelType,
    vocab_size: vocab,
    hidden_size: d.hidden,
    intermediate_size: d.ffn,
    num_hidden_layers: d.layers,
    num_attention_heads: d.heads,
    num_key_value_heads: d.kvHeads,
    head_dim: d.headDim,
    hidden_act: "silu",
    max_position_embeddings: h.maxPositions,
    rms_norm_eps: h.normEps,
    rope_theta: h.ropeTheta,
    rope_scaling: h.ropeScaling ?? null,
    tie_word_embeddings: !f.untied,
    initializer_range: 0.02,
    attention_dropout: 0,
    use_cache: true,
    torch_dtype: DTYPES[dtype].torch,
    ...(ids.bos === undefined ? {} : { bos_token_id: ids.bos }),
    ...(ids.eos === undefined ? {} : { eos_token_id: ids.eos }),
    ...(ids.pad === undefined ? {} : { pad_token_id: ids.pad }),
  };
}

/** config.json as transformers' own class reads it (no trust_remote_code). */
export function gptHfConfig(arch: HfArch, d: ModelDims, f: Features, h: GptHyper, vocab: number, dtype: Dtype, ids: SpecialIds): Record<string, unknown> {
  const config = decoderConfig(HF_ARCHS[arch], d, f, h, vocab, dtype, ids);
  if (arch === "llama" || arch === "mistral") Object.assign(config, { attention_bias: f.linearBias, mlp_bias: f.linearBias });
  if (arch === "llama") Object.assign(config, { pretraining_tp: 1, ...(h.rotaryPercent !== 1 ? { partial_rotary_factor: h.rotaryPercent } : {}) });
  if (arch === "mistral") config.sliding_window = h.slidingWindow ?? null;
  if (arch === "qwen2" || arch === "qwen3") Object.assign(config, { use_sliding_window: false, sliding_window: null, max_window_layers: d.layers });
  if (arch === "qwen3") config.attention_bias = f.linearBias;
  return config;
}

/**
 * The hyper-parameters back from an HF config.json (for to-megatron), from the dims transformers' own classes read
 * (config-dims.ts: class defaults, v4 and v5 RoPE spellings, per-layer windows). What Megatron-Core's args cannot
 * express is refused rather than dropped.
 */
export function hyperFromHfDims(d: GptDims, c: Readonly<Record<string, unknown>>, where: string): GptHyper {
  const windows = new Set(d.slidingWindow);
  if (windows.size > 1) {
    const sliding = d.slidingWindow.flatMap((w, i) => (w === null ? [] : [i]));
    throw new MegahubError("UNSUPPORTED", `sliding windows on layers ${sliding.join(", ")} only: Megatron-Core's window_size applies to every layer`, { file: where });
  }
  const r = d.rope;
  // Megatron-Core's llama3 scaling fixes low/high frequency factors 1 / 4 and 8192 original positions (apply_rope_scaling).
  if (r.type === "llama3" && (r.lowFreqFactor !== 1 || r.highFreqFactor !== 4 || r.originalMaxPositions !== 8192)) {
    throw new MegahubError(
      "UNSUPPORTED",
      `llama3 rope with low_freq_factor ${r.lowFreqFactor}, high_freq_factor ${r.highFreqFactor}, original_max_position_embeddings ${r.originalMaxPositions}: Megatron-Core's args fix them at 1, 4 and 8192`,
      { file: where },
    );
  }
  const ropeScaling: GptHyper["ropeScaling"] =
    r.type === "linear"
      ? { rope_type: "linear", factor: r.factor }
      : r.type === "llama3"
        ? { rope_type: "llama3", factor: r.factor, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 }
        : undefined;
  const maxPositions = c.max_position_embeddings;
  return {
    normEps: d.rmsEps,
    ropeTheta: r.theta,
    rotaryPercent: 1, // config-dims refuses partial rotary factors: these classes rotate whole heads
    ropeScaling,
    maxPositions: typeof maxPositions === "number" ? maxPositions : 4096,
    slidingWindow: [...windows][0] ?? undefined,
    normalization: "RMSNorm",
  };
}

/** Megatron-Core args for a GPT model (the fields its GPTModel builder and load_checkpoint read, §6.1). */
export function gptMegatronArgs(d: ModelDims, f: Features, h: GptHyper, dtype: Dtype, vocab: { padded: number; true?: number | undefined; divisibleBy: number }): Record<string, PyValue> {
  return {
    num_layers: d.layers,
    hidden_size: d.hidden,
    ffn_hidden_size: d.ffn,
    num_attention_heads: d.heads,
    num_query_groups: d.kvHeads,
    group_query_attention: d.kvHeads !== d.heads,
    kv_channels: d.headDim,
    swiglu: true,
    normalization: h.normalization,
    layernorm_epsilon: new PyFloat(h.normEps),
    position_embedding_type: "rope",
    rotary_base: h.ropeTheta,
    rotary_percent: new PyFloat(h.rotaryPercent),
    rotary_interleaved: false,
    use_rope_scaling: h.ropeScaling?.rope_type === "llama3",
    ...(h.ropeScaling?.rope_type === "llama3" ? { rope_scaling_factor: new PyFloat(Number(h.ropeScaling.factor ?? 8)) } : {}),
    ...(h.ropeScaling?.rope_type === "linear" ? { seq_len_interpolation_factor: new PyFloat(Number(h.ropeScaling.factor)) } : {}),
    untie_embeddings_and_output_weights: f.untied,
    qk_layernorm: f.qkNorm,
    add_qkv_bias: f.qkvBias && !f.linearBias,
    add_bias_linear: f.linearBias,
    padded_vocab_size: vocab.padded,
    ...(vocab.true === undefined ? {} : { vocab_size: vocab.true }),
    make_vocab_size_divisible_by: vocab.divisibleBy,
    max_position_embeddings: h.maxPositions,
    seq_length: h.maxPositions,
    ...(h.slidingWindow === undefined ? {} : { window_size: h.slidingWindow }),
    fp16: dtype === "F16",
    bf16: dtype === "BF16",
    hidden_dropout: new PyFloat(0),
    attention_dropout: new PyFloat(0),
    num_experts: null,
    tokenizer_type: "HuggingFaceTokenizer",
    ckpt_format: "torch",
    use_legacy_models: false,
  };
}
