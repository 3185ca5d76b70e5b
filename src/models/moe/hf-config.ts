import { argNumber } from "../../formats/megatron/read.js";
import { PyFloat, PyList, type PyCall, type PyValue } from "../../formats/torch/values.js";
import type { Dtype } from "../../tensors/dtypes.js";
import type { ExpertLayout, Features, ModelDims, MoeDims } from "../arch.js";
import { decoderConfig, HF_ARCHS, isHfArch, type GptHyper, type HfArch } from "../gpt/hf-config.js";
import type { GptMoeDims } from "./config-dims.js";
import type { MoeRouting } from "./dims.js";

/** The transformers classes a Megatron-Core MoE model can become (no trust_remote_code). */
export const MOE_HF_ARCHS = {
  mixtral: { architecture: "MixtralForCausalLM", modelType: "mixtral" },
  qwen2_moe: { architecture: "Qwen2MoeForCausalLM", modelType: "qwen2_moe" },
  qwen3_moe: { architecture: "Qwen3MoeForCausalLM", modelType: "qwen3_moe" },
} as const satisfies Record<string, { architecture: string; modelType: string }>;
export type MoeHfArch = keyof typeof MOE_HF_ARCHS;

export function isMoeHfArch(s: string): s is MoeHfArch {
  return s in MOE_HF_ARCHS;
}

/** Every class name --hf-arch accepts, dense and MoE. */
export type AnyHfArch = HfArch | MoeHfArch;
export const isAnyHfArch = (s: string): s is AnyHfArch => isHfArch(s) || isMoeHfArch(s);
export const ANY_HF_ARCHS: readonly string[] = [...Object.keys(HF_ARCHS), ...Object.keys(MOE_HF_ARCHS)];

/** The transformers class of an --hf-arch value. */
export function hfClassName(arch: AnyHfArch): string {
  return isMoeHfArch(arch) ? MOE_HF_ARCHS[arch].architecture : HF_ARCHS[arch].architecture;
}


/** Routing from Megatron args (Megatron-Core 0.17 names and defaults). */
export function routingFromArgs(args: PyCall | undefined): MoeRouting {
  const score = args?.field("moe_router_score_function");
  return {
    topk: argNumber(args, "moe_router_topk") ?? 2,
    preSoftmax: args?.field("moe_router_pre_softmax") === true,
    score: typeof score === "string" ? score : "softmax",
    scaling: argNumber(args, "moe_router_topk_scaling_factor"),
    groupTopk: argNumber(args, "moe_router_group_topk"),
  };
}

/** Routing as transformers computes it: Mixtral always renormalises the top-k; Qwen-MoE when norm_topk_prob. */
export function routingOfHf(m: GptMoeDims): MoeRouting {
  return { topk: m.topk, preSoftmax: !m.renormalize, score: "softmax", scaling: undefined, groupTopk: undefined };
}

/** The MoE class a model's features call for: q/k norms → Qwen3-MoE, shared experts → Qwen2-MoE, else Mixtral. */
export function pickMoeHfArch(f: Features): MoeHfArch {
  if (f.qkNorm) return "qwen3_moe";
  if (f.sharedExperts === true || f.qkvBias) return "qwen2_moe";
  return "mixtral";
}

/** Why an MoE model cannot be written as `arch` (empty when it can). */
export function moeHfArchProblems(arch: MoeHfArch, d: ModelDims, f: Features, h: GptHyper, r: MoeRouting, swiglu: boolean): string[] {
  const p: string[] = [];
  const moe = d.moe as MoeDims;
  const name = MOE_HF_ARCHS[arch].architecture;
  if (h.normalization !== "RMSNorm" || f.normBias) p.push("LayerNorm (with bias): the MoE classes use RMSNorm");
  if (!swiglu) p.push("non-gated experts: the MoE classes use SwiGLU");
  if (f.linearBias) p.push("biases on every linear (add_bias_linear)");
  if (r.score !== "softmax") p.push(`the ${r.score} router score function (the classes use softmax)`);
  if (r.scaling !== undefined && r.scaling !== 1) p.push(`a top-k scaling factor ${r.scaling}`);
  if (r.groupTopk !== undefined) p.push("group-limited routing");
  if (f.expertBias === true) p.push("expert-bias routing (router.expert_bias)");
  if (h.rotaryPercent !== 1) p.push("partial rotary embeddings");
  if (arch !== "qwen3_moe" && f.qkNorm) p.push(`${name} has no q/k norms`);
  if (arch === "qwen3_moe" && !f.qkNorm) p.push("Qwen3-MoE has q/k norms");
  if (arch === "qwen3_moe" && f.qkvBias) p.push("Qwen3-MoE has no q/k/v-only biases");
  if (arch === "mixtral") {
    if (f.qkvBias) p.push("Mixtral has no attention biases");
    if (f.sharedExperts === true) p.push("Mixtral has no shared experts");
    if (r.preSoftmax) p.push("Mixtral renormalises the top-k probabilities (Megatron's moe_router_pre_softmax does not)");
    if (moe.layers.includes(false)) p.push("Mixtral has no dense layers");
  }
  if (arch === "qwen2_moe" && (f.sharedExperts !== true || f.sharedGate !== true)) p.push("Qwen2-MoE has gated shared experts in every MoE layer");
  if (arch !== "qwen2_moe" && f.sharedExperts === true) p.push(`${name} has no shared experts`);
  if (arch !== "mixtral" && h.slidingWindow !== undefined) p.push(`${name} is written without a sliding window`);
  return p;
}

/** config.json as transformers' MixtralConfig / Qwen2MoeConfig / Qwen3MoeConfig reads it. */
export function moeHfConfig(
  arch: MoeHfArch,
  d: ModelDims,
  f: Features,
  h: GptHyper,
  r: MoeRouting,
  vocab: number,
  dtype: Dtype,
  ids: { bos?: number | undefined; eos?: number | undefined; pad?: number | undefined },
): Record<string, unknown> {
  const moe = d.moe as MoeDims;
  const config: Record<string, unknown> = {
    ...decoderConfig(MOE_HF_ARCHS[arch], d, f, h, vocab, dtype, ids),
    // Mixtral's intermediate_size is the experts'; Qwen-MoE's is the dense layers' (mlp_only_layers)
    intermediate_size: arch === "mixtral" ? moe.ffn : d.ffn,
    num_experts_per_tok: r.topk,
    output_router_logits: false,
  };
  if (arch === "mixtral") {
    // router_jitter_noise stays at its default: JSON writes 0.0 as 0 and MixtralConfig wants a float
    Object.assign(config, { num_local_experts: moe.experts, sliding_window: h.slidingWindow ?? null });
    return config;
  }
  Object.assign(config, {
    num_experts: moe.experts,
    moe_intermediate_size: moe.ffn,
    norm_topk_prob: !r.preSoftmax,
    // every layer whose index is not in mlp_only_layers is sparse when decoder_sparse_step is 1
    decoder_sparse_step: 1,
    mlp_only_layers: moe.layers.flatMap((isMoe, i) => (isMoe ? [] : [i])),
    use_sliding_window: false,
    sliding_window: null,
    max_window_layers: d.layers,
  });
  if (arch === "qwen2_moe") Object.assign(config, { shared_expert_intermediate_size: moe.sharedFfn, qkv_bias: f.qkvBias });
  else config.attention_bias = false;
  return config;
}

/** Megatron's moe_layer_freq: the int f when layer i is MoE exactly when i % f == 0, else the 0/1 list. */
function layerFreq(layers: readonly boolean[]): PyValue {
  for (let f = 1; f <= layers.length; f++) if (layers.every((x, i) => x === (i % f === 0))) return f;
  return new PyList(layers.map((x) => (x ? 1 : 0)));
}

/** Megatron-Core 0.17 args of an MoE model. */
export function moeMegatronArgs(d: ModelDims, f: Features, r: MoeRouting, layout: ExpertLayout, parallel: { tp: number; ep: number }): Record<string, PyValue> {
  const moe = d.moe as MoeDims;
  return {
    num_experts: moe.experts,
    moe_router_topk: r.topk,
    moe_ffn_hidden_size: moe.ffn,
    moe_shared_expert_intermediate_size: moe.sharedFfn > 0 ? moe.sharedFfn : null,
    moe_shared_expert_gate: f.sharedGate === true,
    moe_layer_freq: layerFreq(moe.layers),
    moe_grouped_gemm: layout === "grouped",
    moe_router_pre_softmax: r.preSoftmax,
    moe_router_score_function: r.score,
    ...(r.scaling === undefined ? {} : { moe_router_topk_scaling_factor: new PyFloat(r.scaling) }),
    moe_router_enable_expert_bias: f.expertBias === true,
    moe_router_load_balancing_type: "aux_loss",
    moe_token_dispatcher_type: "alltoall",
    expert_model_parallel_size: parallel.ep,
    expert_tensor_parallel_size: parallel.tp,
  };
}
