import { join } from "node:path";
import { openHfDir, type HfDir } from "../../checkpoints/hf-safetensors.js";
import { MegahubError } from "../../errors.js";
import { FileSource } from "../../io/byte-source.js";
import type { Features } from "../../models/arch.js";
import { gptDims, type GptDims } from "../../models/gpt/config-dims.js";
import type { GptHyper, HfArch } from "../../models/gpt/hf-config.js";
import { gptFromHfTensors } from "../../models/gpt/hf-tensors.js";
import { GPT_PARAMS } from "../../models/gpt/spec.js";
import { checkShapes, type McoreModel } from "../../models/mcore-global.js";

export interface OpenedHfGpt {
  readonly model: McoreModel;
  readonly hyper: GptHyper;
  readonly hfArch: HfArch | undefined;
  readonly config: Readonly<Record<string, unknown>>;
  close(): Promise<void>;
}

/** The Megatron-side hyper-parameters of an HF model. */
function hyperOf(g: GptDims, config: Readonly<Record<string, unknown>>): GptHyper {
  const r = g.rope;
  const ropeScaling: GptHyper["ropeScaling"] =
    r.type === "llama3"
      ? { rope_type: "llama3", factor: r.factor, low_freq_factor: r.lowFreqFactor, high_freq_factor: r.highFreqFactor, original_max_position_embeddings: r.originalMaxPositions }
      : r.type === "linear"
        ? { rope_type: "linear", factor: r.factor }
        : undefined;
  const max = config.max_position_embeddings;
  return {
    normEps: g.rmsEps,
    ropeTheta: r.theta,
    rotaryPercent: 1,
    ropeScaling,
    maxPositions: typeof max === "number" ? max : 4096,
    slidingWindow: g.slidingWindow[0] ?? undefined,
    normalization: "RMSNorm",
  };
}

/** An HF Llama / Mistral / Qwen2 / Qwen3 directory as a global Megatron-Core model (byte-range reads, nothing loaded). */
export async function openHfGpt(dir: string, hf?: HfDir): Promise<OpenedHfGpt> {
  const opened = hf ?? (await openHfDir(dir));
  const { config, tensors: refs } = opened;
  const sources = new Map<string, FileSource>();
  const close = () => Promise.all([...sources.values()].map((s) => s.close())).then(() => undefined);
  try {
    for (const f of opened.files) sources.set(f, await FileSource.open(join(dir, f)));
    // config.json read as transformers reads it, every tensor checked against it (one reader for verify and here).
    const g = gptDims(config, refs, dir);
    if (g.oBias !== g.mlpBias || (g.oBias && !g.qkvBias)) {
      throw new MegahubError("UNSUPPORTED", "Megatron-Core has one add_bias_linear switch for every linear: attention and MLP biases must come together", { file: dir });
    }
    if (new Set(g.slidingWindow).size > 1) {
      throw new MegahubError("UNSUPPORTED", "a sliding window on some layers only has no Megatron-Core args counterpart", { file: dir });
    }
    const hfArch: HfArch = g.family;
    const features: Features = { qkvBias: g.qkvBias, qkNorm: g.qkNorm, linearBias: g.oBias, normBias: false, untied: !g.tied };
    const usable = new Map(refs);
    if (g.tied) usable.delete("lm_head.weight"); // some saves keep the tied copy; the embedding is the weight
    const dims = { hidden: g.hidden, vocab: g.vocab, ffn: g.ffn, heads: g.heads, kvHeads: g.kvHeads, headDim: g.headDim, layers: g.layers };
    const tensors = gptFromHfTensors(usable, (f) => sources.get(f) as FileSource, dims, features, dir);
    checkShapes(GPT_PARAMS, tensors, dims, features, dir);
    const trueVocab = dims.vocab;
    const model: McoreModel = { arch: "gpt", dims, features, flavour: "local", tensors, trueVocab, notes: [] };
    return { model, hyper: hyperOf(g, config), hfArch, config, close };
  } catch (e) {
    await close();
    throw e;
  }
}
