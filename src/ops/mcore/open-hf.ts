import { join } from "node:path";
import { openHfDir, type HfDir } from "../../checkpoints/hf-safetensors.js";
import { MegahubError } from "../../errors.js";
import { FileSource } from "../../io/byte-source.js";
import type { Features } from "../../models/arch.js";
import { detectGptDims } from "../../models/gpt/dims.js";
import { gptConfigDims } from "../../models/gpt/config-dims.js";
import { hyperFromHfDims, isHfArch, type GptHyper, type HfArch } from "../../models/gpt/hf-config.js";
import { isMoeHfArch, type MoeHfArch } from "../../models/moe/hf-config.js";
import { gptFromHfTensors } from "../../models/gpt/hf-tensors.js";
import { checkShapes, type McoreModel } from "../../models/mcore-global.js";
import { detectHfMoe } from "../../models/moe/hf-detect.js";
import { MCORE_PARAMS } from "../../models/moe/spec.js";

export interface OpenedHfGpt {
  readonly model: McoreModel;
  readonly hyper: GptHyper;
  readonly hfArch: HfArch | MoeHfArch | undefined;
  readonly config: Readonly<Record<string, unknown>>;
  close(): Promise<void>;
}

const int = (c: Readonly<Record<string, unknown>>, k: string) => (typeof c[k] === "number" ? (c[k] as number) : undefined);

/** An HF Llama / Mistral / Qwen2 / Qwen3 directory as a global Megatron-Core model (byte-range reads, nothing loaded). */
export async function openHfGpt(dir: string, hf?: HfDir): Promise<OpenedHfGpt> {
  const opened = hf ?? (await openHfDir(dir));
  const { config, tensors: refs } = opened;
  const sources = new Map<string, FileSource>();
  const close = () => Promise.all([...sources.values()].map((s) => s.close())).then(() => undefined);
  try {
    for (const f of opened.files) sources.set(f, await FileSource.open(join(dir, f)));
    const modelType = typeof config.model_type === "string" ? config.model_type : undefined;
    const hfArch = modelType && (isHfArch(modelType) || isMoeHfArch(modelType)) ? modelType : undefined;
    const tied = config.tie_word_embeddings === true || (config.tie_word_embeddings === undefined && !refs.has("lm_head.weight"));
    const qkvBias = refs.has("model.layers.0.self_attn.q_proj.bias");
    const features: Features = {
      qkvBias,
      qkNorm: refs.has("model.layers.0.self_attn.q_norm.weight"),
      linearBias: refs.has("model.layers.0.self_attn.o_proj.bias"),
      normBias: false,
      untied: !tied,
    };
    const usable = new Map(refs);
    if (tied) usable.delete("lm_head.weight"); // some saves keep the tied copy; the embedding is the weight
    const layers = new Set([...refs.keys()].map((n) => /^model\.layers\.(\d+)\./.exec(n)?.[1]).filter((x) => x !== undefined)).size;
    const shapeOf = (name: string) => refs.get(name)?.shape;
    // config.json as transformers' own classes read it: the hyper-parameters, and which layers are sparse.
    const cfg = gptConfigDims(config, dir);
    const moe = detectHfMoe(shapeOf, cfg.moe, cfg.family === "mixtral", layers, cfg.ffn > 0 ? cfg.ffn : undefined, dir);
    const dense = moe ? moe.dims.layers.indexOf(false) : 0;
    const q = shapeOf("model.layers.0.self_attn.q_proj.weight");
    const k = shapeOf("model.layers.0.self_attn.k_proj.weight");
    const v = shapeOf("model.layers.0.self_attn.v_proj.weight");
    const gate = shapeOf("model.layers.0.mlp.gate_proj.weight");
    const megatronShape = (name: string): readonly number[] | undefined => {
      const emb = shapeOf("model.embed_tokens.weight");
      switch (name) {
        case "embedding.word_embeddings.weight":
          return emb;
        case "decoder.layers.0.self_attention.linear_qkv.weight":
          return q && k && v ? [(q[0] as number) + (k[0] as number) + (v[0] as number), q[1] as number] : undefined;
        case "decoder.layers.0.self_attention.linear_proj.weight":
          return shapeOf("model.layers.0.self_attn.o_proj.weight");
        case "decoder.layers.0.mlp.linear_fc2.weight":
          // an MoE model's dense width: its first dense layer's, else config.json's (every layer sparse)
          if (dense < 0) return emb && moe ? [emb[1] as number, moe.denseFfn ?? moe.dims.ffn] : undefined;
          return shapeOf(`model.layers.${dense}.mlp.down_proj.weight`) ?? (gate ? [gate[1] as number, gate[0] as number] : undefined);
        case "decoder.layers.0.self_attention.q_layernorm.weight":
          return shapeOf("model.layers.0.self_attn.q_norm.weight");
        default:
          return undefined;
      }
    };
    const heads = int(config, "num_attention_heads");
    const hidden = int(config, "hidden_size");
    const dims = detectGptDims(
      megatronShape,
      layers,
      { headDim: int(config, "head_dim") ?? (heads && hidden ? hidden / heads : undefined), heads, kvHeads: int(config, "num_key_value_heads") ?? heads },
      dir,
    );
    if (int(config, "num_hidden_layers") !== undefined && int(config, "num_hidden_layers") !== layers) {
      throw new MegahubError("MODEL", `config.json says ${String(config.num_hidden_layers)} layers, the tensors hold ${layers}`, { file: dir });
    }
    const fullDims = moe ? { ...dims, moe: moe.dims } : dims;
    const fullFeatures: Features = moe ? { ...features, ...moe.features } : features;
    const tensors = gptFromHfTensors(usable, (f) => sources.get(f) as FileSource, fullDims, fullFeatures, dir, moe?.naming);
    checkShapes(MCORE_PARAMS, tensors, fullDims, fullFeatures, dir);
    const trueVocab = dims.vocab;
    const moeFacts = moe ? { moe: { layout: "sequential" as const, routing: moe.routing } } : {};
    const model: McoreModel = { arch: "gpt", dims: fullDims, features: fullFeatures, flavour: "local", tensors, trueVocab, ...moeFacts, notes: [] };
    return { model, hyper: hyperFromHfDims(cfg, config, dir), hfArch, config, close };
  } catch (e) {
    await close();
    throw e;
  }
}
