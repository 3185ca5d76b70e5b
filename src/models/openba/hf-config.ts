import { argNumber } from "../../formats/megatron/read.js";
import type { PyCall } from "../../formats/torch/values.js";
import { OPENBA_REMOTE_CODE_REPO, OPENBA_SPECIAL } from "./spec.js";
import type { OpenbaDims } from "./dims.js";
import { DTYPES, type Dtype } from "../../tensors/dtypes.js";

const TRANSFORMERS_VERSION = "4.31.0";

/**
 * config.json for OpenBAForConditionalGeneration (openba-format.md §2.2). Dims come from tensor shapes; sequence
 * lengths and dropout from args when present. ffn_hidden_size is the real SwiGLU width, which the v2 modeling code
 * (the one auto_map points at) reads literally.
 */
export function hfConfig(d: OpenbaDims, args: PyCall | undefined, dtype: Dtype): Record<string, unknown> {
  const remote = (module: string, cls: string) => `${OPENBA_REMOTE_CODE_REPO}--${module}.${cls}`;
  const model = remote("modeling_openba", "OpenBAForConditionalGeneration");
  const encLen = argNumber(args, "encoder_seq_length") ?? argNumber(args, "seq_length") ?? 1024;
  return {
    architectures: ["OpenBAForConditionalGeneration"],
    auto_map: {
      AutoConfig: remote("configuration_openba", "OpenBAConfig"),
      AutoModel: model,
      AutoModelForCausalLM: model,
      AutoModelForSeq2SeqLM: model,
    },
    model_type: "openba",
    vocab_size: d.vocab,
    hidden_size: d.hidden,
    kv_channels: d.kvChannels,
    ffn_hidden_size: d.ffn,
    num_layers: d.encoderLayers,
    num_decoder_layers: d.decoderLayers,
    num_heads: d.heads,
    hidden_dropout: argNumber(args, "hidden_dropout") ?? 0,
    attention_dropout: argNumber(args, "attention_dropout") ?? 0,
    is_encoder_decoder: true,
    use_cache: true,
    initializer_factor: 1.0,
    pad_token_id: OPENBA_SPECIAL.pad,
    eos_token_id: OPENBA_SPECIAL.eos,
    decoder_start_token_id: OPENBA_SPECIAL.pad,
    add_qkv_bias: true,
    add_ffn_bias: false,
    add_lm_head_bias: true,
    max_seq_length: encLen,
    decoder_max_seq_length: argNumber(args, "decoder_seq_length") ?? encLen,
    tie_word_embeddings: false,
    tokenizer_class: "OpenBATokenizer",
    torch_dtype: DTYPES[dtype].torch,
    transformers_version: TRANSFORMERS_VERSION,
  };
}

export function generationConfig(): Record<string, unknown> {
  return {
    decoder_start_token_id: OPENBA_SPECIAL.pad,
    eos_token_id: OPENBA_SPECIAL.eos,
    pad_token_id: OPENBA_SPECIAL.pad,
    transformers_version: TRANSFORMERS_VERSION,
  };
}
