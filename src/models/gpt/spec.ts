import type { ParamRule } from "../arch.js";

const L = "decoder.layers.{layer}.";
const H = "model.layers.{layer}.";

/**
 * Megatron-Core GPTModel (Llama / Mistral / Qwen2 / Qwen3) in module registration order, the local spec's names
 * first and Transformer Engine's fused-norm names second (megatron-core-format.md §2.1, §6.2). Fused QKV rows are
 * per query group (§5.2); SwiGLU fc1 is [gate; up] globally and [gate_r; up_r] per TP rank (§5.1). The MLP rules are
 * the dense layers' (mixture-of-experts layers take models/moe/spec.ts's instead).
 */
export const GPT_PARAMS = [
  { megatron: ["embedding.word_embeddings.weight"], hf: "model.embed_tokens.weight", tp: "vocab", dims: ["vocab", "hidden"] },
  {
    megatron: [`${L}input_layernorm.weight`, `${L}self_attention.linear_qkv.layer_norm_weight`],
    hf: `${H}input_layernorm.weight`,
    tp: "replicated",
    dims: ["hidden"],
  },
  {
    megatron: [`${L}input_layernorm.bias`, `${L}self_attention.linear_qkv.layer_norm_bias`],
    hf: null,
    tp: "replicated",
    dims: ["hidden"],
    feature: "normBias",
  },
  { megatron: [`${L}self_attention.linear_proj.weight`], hf: `${H}self_attn.o_proj.weight`, tp: "row", dims: ["hidden", "qHeads"] },
  {
    megatron: [`${L}self_attention.linear_proj.bias`],
    hf: `${H}self_attn.o_proj.bias`,
    tp: "replicated",
    dims: ["hidden"],
    feature: "linearBias",
  },
  {
    megatron: [`${L}self_attention.linear_qkv.weight`],
    hf: { split: [`${H}self_attn.q_proj.weight`, `${H}self_attn.k_proj.weight`, `${H}self_attn.v_proj.weight`], by: "qkv" },
    tp: "column",
    dims: ["qkv", "hidden"],
  },
  {
    megatron: [`${L}self_attention.linear_qkv.bias`],
    hf: { split: [`${H}self_attn.q_proj.bias`, `${H}self_attn.k_proj.bias`, `${H}self_attn.v_proj.bias`], by: "qkv" },
    tp: "column",
    dims: ["qkv"],
    feature: "qkvBias",
  },
  { megatron: [`${L}self_attention.q_layernorm.weight`], hf: `${H}self_attn.q_norm.weight`, tp: "replicated", dims: ["headDim"], feature: "qkNorm" },
  { megatron: [`${L}self_attention.k_layernorm.weight`], hf: `${H}self_attn.k_norm.weight`, tp: "replicated", dims: ["headDim"], feature: "qkNorm" },
  {
    megatron: [`${L}pre_mlp_layernorm.weight`, `${L}mlp.linear_fc1.layer_norm_weight`],
    hf: `${H}post_attention_layernorm.weight`,
    tp: "replicated",
    dims: ["hidden"],
    teDenseOnly: true,
  },
  {
    megatron: [`${L}pre_mlp_layernorm.bias`, `${L}mlp.linear_fc1.layer_norm_bias`],
    hf: null,
    tp: "replicated",
    dims: ["hidden"],
    feature: "normBias",
    teDenseOnly: true,
  },
  {
    megatron: [`${L}mlp.linear_fc1.weight`],
    hf: { split: [`${H}mlp.gate_proj.weight`, `${H}mlp.up_proj.weight`], by: "parts" },
    tp: { kind: "column-parts", parts: 2 },
    dims: ["ffn2", "hidden"],
    layers: "dense",
  },
  {
    megatron: [`${L}mlp.linear_fc1.bias`],
    hf: { split: [`${H}mlp.gate_proj.bias`, `${H}mlp.up_proj.bias`], by: "parts" },
    tp: { kind: "column-parts", parts: 2 },
    dims: ["ffn2"],
    feature: "linearBias",
    layers: "dense",
  },
  { megatron: [`${L}mlp.linear_fc2.weight`], hf: `${H}mlp.down_proj.weight`, tp: "row", dims: ["hidden", "ffn"], layers: "dense" },
  { megatron: [`${L}mlp.linear_fc2.bias`], hf: `${H}mlp.down_proj.bias`, tp: "replicated", dims: ["hidden"], feature: "linearBias", layers: "dense" },
  { megatron: ["decoder.final_layernorm.weight"], hf: "model.norm.weight", tp: "replicated", dims: ["hidden"] },
  { megatron: ["decoder.final_layernorm.bias"], hf: null, tp: "replicated", dims: ["hidden"], feature: "normBias" },
  { megatron: ["output_layer.weight"], hf: "lm_head.weight", tp: "vocab", dims: ["vocab", "hidden"], feature: "untied" },
] as const satisfies readonly ParamRule[];

/**
 * Entries every checkpoint carries that are not weights: `_extra_state` (None for the local spec, FP8 metadata for
 * Transformer Engine) and rotary caches some forks persist.
 */
export const GPT_IGNORED: readonly RegExp[] = [/\._extra_state$/, /rotary_pos_emb\.inv_freq$/];

/** Modules whose `_extra_state` a Megatron-Core load expects (local-spec linears; TE adds core attention). */
export const GPT_EXTRA_STATE = {
  layer: ["self_attention.linear_proj", "self_attention.linear_qkv", "mlp.linear_fc1", "mlp.linear_fc2"],
  teLayer: ["self_attention.core_attention"],
  global: ["output_layer"],
} as const;
