import type { ArchSpec, GlobalParam, LayerParam, Stack } from "./types.js";

const BOTH: readonly Stack[] = ["encoder", "decoder"];
const DEC: readonly Stack[] = ["decoder"];

/**
 * OpenBA (encoder-decoder, pre-LN, rotary self-attention, SwiGLU) as written by its Megatron fork and read by its HF
 * modeling code (openba-format.md §1.3–§2.3). Order follows Megatron's module registration, which is also the
 * order torch writes keys in.
 */
export const OPENBA_LAYER_PARAMS = [
  { megatron: "input_layernorm.weight", hf: "input_layernorm.weight", tp: "replicated", stacks: BOTH, dims: ["hidden"] },
  { megatron: "input_layernorm.bias", hf: "input_layernorm.bias", tp: "replicated", stacks: BOTH, dims: ["hidden"] },
  {
    megatron: "self_attention.query_key_value.weight",
    hf: "self_attn.qkv.weight",
    tp: "column",
    stacks: BOTH,
    heads: { groups: 3 },
    dims: ["heads", "hidden"],
  },
  {
    megatron: "self_attention.query_key_value.bias",
    hf: "self_attn.qkv.bias",
    tp: "column",
    stacks: BOTH,
    heads: { groups: 3 },
    dims: ["heads"],
  },
  { megatron: "self_attention.rotary_embed.inv_freq", hf: null, tp: "replicated", stacks: BOTH, dims: ["-"] },
  {
    megatron: "self_attention.dense.weight",
    hf: "self_attn.o.weight",
    tp: "row",
    stacks: BOTH,
    heads: { groups: 1 },
    dims: ["hidden", "heads"],
  },
  { megatron: "self_attention.dense.bias", hf: "self_attn.o.bias", tp: "replicated", stacks: BOTH, dims: ["hidden"] },
  { megatron: "post_attention_layernorm.weight", hf: "post_attn_layernorm.weight", tp: "replicated", stacks: BOTH, dims: ["hidden"] },
  { megatron: "post_attention_layernorm.bias", hf: "post_attn_layernorm.bias", tp: "replicated", stacks: BOTH, dims: ["hidden"] },
  {
    megatron: "inter_attention.query.weight",
    hf: "inter_attn.q.weight",
    tp: "column",
    stacks: DEC,
    heads: { groups: 1 },
    dims: ["heads", "hidden"],
  },
  { megatron: "inter_attention.query.bias", hf: "inter_attn.q.bias", tp: "column", stacks: DEC, heads: { groups: 1 }, dims: ["heads"] },
  {
    megatron: "inter_attention.key_value.weight",
    hf: "inter_attn.kv.weight",
    tp: "column",
    stacks: DEC,
    heads: { groups: 2 },
    dims: ["heads", "hidden"],
  },
  {
    megatron: "inter_attention.key_value.bias",
    hf: "inter_attn.kv.bias",
    tp: "column",
    stacks: DEC,
    heads: { groups: 2 },
    dims: ["heads"],
  },
  {
    megatron: "inter_attention.dense.weight",
    hf: "inter_attn.o.weight",
    tp: "row",
    stacks: DEC,
    heads: { groups: 1 },
    dims: ["hidden", "heads"],
  },
  { megatron: "inter_attention.dense.bias", hf: "inter_attn.o.bias", tp: "replicated", stacks: DEC, dims: ["hidden"] },
  {
    megatron: "post_inter_attention_layernorm.weight",
    hf: "post_inter_attn_layernorm.weight",
    tp: "replicated",
    stacks: DEC,
    dims: ["hidden"],
  },
  {
    megatron: "post_inter_attention_layernorm.bias",
    hf: "post_inter_attn_layernorm.bias",
    tp: "replicated",
    stacks: DEC,
    dims: ["hidden"],
  },
  // SwiGLU: w1 (gate, silu branch) and w3 (up) are separate column-parallel matrices; HF fuses them as fc_in = [w1; w3].
  { megatron: "mlp.w1.weight", hf: "mlp.fc_in.weight", tp: "column", stacks: BOTH, fuse: { index: 0, of: 2 }, dims: ["ffn", "hidden"] },
  { megatron: "mlp.w2.weight", hf: "mlp.fc_out.weight", tp: "row", stacks: BOTH, dims: ["hidden", "ffn"] },
  { megatron: "mlp.w3.weight", hf: "mlp.fc_in.weight", tp: "column", stacks: BOTH, fuse: { index: 1, of: 2 }, dims: ["ffn", "hidden"] },
] as const satisfies readonly LayerParam[];

export const OPENBA_GLOBAL_PARAMS = [
  // Megatron ties the output projection to the embedding; HF OpenBA unties it (tie_word_embeddings false).
  {
    megatron: "language_model.embedding.word_embeddings.weight",
    hf: ["shared_embedding.weight", "lm_head.weight"],
    tp: "vocab",
    dims: ["vocab", "hidden"],
  },
  { megatron: "language_model.encoder.final_layernorm.weight", hf: ["encoder.final_layernorm.weight"], tp: "replicated", dims: ["hidden"] },
  { megatron: "language_model.encoder.final_layernorm.bias", hf: ["encoder.final_layernorm.bias"], tp: "replicated", dims: ["hidden"] },
  { megatron: "language_model.decoder.final_layernorm.weight", hf: ["decoder.final_layernorm.weight"], tp: "replicated", dims: ["hidden"] },
  { megatron: "language_model.decoder.final_layernorm.bias", hf: ["decoder.final_layernorm.bias"], tp: "replicated", dims: ["hidden"] },
  { megatron: "lm_head.bias", hf: ["lm_head.bias"], tp: "vocab", dims: ["vocab"] },
] as const satisfies readonly GlobalParam[];

export const OPENBA: ArchSpec = {
  name: "openba",
  layerPrefix: (stack, layer) => ({ megatron: `language_model.${stack}.layers.${layer}.`, hf: `${stack}.block.${layer}.` }),
  layerParams: OPENBA_LAYER_PARAMS,
  globalParams: OPENBA_GLOBAL_PARAMS,
};

/** Tokenizer facts (§8): sentinels and UL2 mode tokens sit right after the sentencepiece pieces. */
export const OPENBA_SPECIAL = {
  pad: 0,
  eos: 1,
  unk: 2,
  sentinels: 100,
  modeTokens: ["<R>", "<S>", "<X>"],
  /** Rows the model needs beyond the sentencepiece pieces: 100 sentinels + <R> <S> <X>. */
  extraRows: 103,
} as const;

/**
 * The UL2 prompt OpenBA was trained with, `<S> {input} <extra_id_0>`, followed by `</s>`: OpenBA's documented
 * usage runs the HF tokenizer on `<S> {input} <extra_id_0>`, which appends `</s>`, while transformers'
 * `apply_chat_template(tokenize=True)` adds no special tokens, so the template itself must end with the eos token
 * for both to give the model the same ids.
 */
export const OPENBA_CHAT_TEMPLATE =
  "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<S> ' + message['content'] + ' <extra_id_0>' + eos_token }}{% endif %}{% endfor %}";

/** Where users load OpenBA's modeling code from (trust_remote_code); v2's modeling reads ffn_hidden_size literally. */
export const OPENBA_REMOTE_CODE_REPO = "OpenNLG/OpenBA-V2-Based";
