import { MegahubError } from "../../errors.js";
import type { Dtype } from "../../tensors/dtypes.js";
import { expectedMoeLayerTensors, moeConfigDims, MOE_FAMILIES, type GptMoeDims, type MoeFamily } from "../moe/config-dims.js";

/**
 * What the decoder-only graph needs from an HF `LlamaForCausalLM` / `MistralForCausalLM` / `Qwen2ForCausalLM` /
 * `Qwen3ForCausalLM` directory, or a mixture-of-experts `MixtralForCausalLM` / `Qwen2MoeForCausalLM` /
 * `Qwen3MoeForCausalLM` one: dims from config.json, cross-checked against every tensor's shape, read the way
 * transformers 5.18's own classes read those fields (including the v4 spellings `rope_theta` / `rope_scaling` that
 * older configs and other writers still use).
 */
export type GptFamily = "llama" | "mistral" | "qwen2" | "qwen3" | MoeFamily;

export const GPT_ARCHITECTURES = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
  ...MOE_FAMILIES,
} as const satisfies Record<GptFamily, string>;

/** The part of a tensor reference the graph reads (the rest — file, offset — only goes to `locate`). */
export interface WeightRef {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
}

export interface RopeSpec {
  readonly type: "default" | "linear" | "llama3";
  readonly theta: number;
  /** linear / llama3 */
  readonly factor: number;
  /** llama3 */
  readonly lowFreqFactor: number;
  readonly highFreqFactor: number;
  readonly originalMaxPositions: number;
}

export interface GptDims {
  readonly family: GptFamily;
  readonly vocab: number;
  readonly hidden: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly ffn: number;
  readonly rmsEps: number;
  readonly rope: RopeSpec;
  /** lm_head is embed_tokens (tie_word_embeddings). */
  readonly tied: boolean;
  /** q/k/v biases (Qwen2 always; Llama/Qwen3 with attention_bias). */
  readonly qkvBias: boolean;
  /** o_proj bias (Llama/Qwen3 attention_bias). */
  readonly oBias: boolean;
  /** gate/up/down biases (Llama mlp_bias). */
  readonly mlpBias: boolean;
  /** q_norm / k_norm RMSNorms over each head (Qwen3). */
  readonly qkNorm: boolean;
  /** Per layer: the sliding-window size, or null for full causal attention. */
  readonly slidingWindow: readonly (number | null)[];
  /** Mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE); undefined when no layer is sparse. */
  readonly moe: GptMoeDims | undefined;
}

type Config = Readonly<Record<string, unknown>>;

/** The family a config.json names (model_type first, then architectures), or undefined for any other model. */
export function gptFamilyOf(config: Config): GptFamily | undefined {
  const mt = config.model_type;
  if (typeof mt === "string" && Object.hasOwn(GPT_ARCHITECTURES, mt)) return mt as GptFamily;
  const archs = Array.isArray(config.architectures) ? config.architectures : [];
  for (const [family, arch] of Object.entries(GPT_ARCHITECTURES) as [GptFamily, string][]) {
    if (archs.includes(arch)) return family;
  }
  return undefined;
}

const num = (c: Config, key: string): number | undefined => (typeof c[key] === "number" ? (c[key] as number) : undefined);
const int = (c: Config, key: string): number | undefined => {
  const v = c[key];
  return typeof v === "number" && Number.isSafeInteger(v) ? v : undefined;
};

/** `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling` (4.x), as standardize_rope_params merges them. */
function ropeOf(c: Config, family: GptFamily, problems: string[]): RopeSpec {
  const nested = c.rope_parameters ?? c.rope_scaling;
  const p: Config = typeof nested === "object" && nested !== null ? (nested as Config) : {};
  const type = (typeof p.rope_type === "string" ? p.rope_type : typeof p.type === "string" ? p.type : "default") as string;
  // MixtralConfig.default_theta is 1e6; the other classes keep the base class's 10000.
  const theta = num(p, "rope_theta") ?? num(c, "rope_theta") ?? (family === "mixtral" ? 1e6 : 10000);
  const partial = num(p, "partial_rotary_factor") ?? num(c, "partial_rotary_factor") ?? 1;
  // These four classes rotate the whole head (apply_rotary_pos_emb has no pass-through part).
  if (partial !== 1) problems.push(`partial_rotary_factor ${partial} is not used by these model classes (expected 1)`);
  if (type !== "default" && type !== "linear" && type !== "llama3") {
    problems.push(`rope type "${type}" is not supported (default, linear and llama3 are)`);
  }
  const factor = num(p, "factor") ?? 1;
  if ((type === "linear" || type === "llama3") && num(p, "factor") === undefined) problems.push(`rope type "${type}" needs a factor`);
  const rope: RopeSpec = {
    type: type === "linear" || type === "llama3" ? type : "default",
    theta,
    factor,
    lowFreqFactor: num(p, "low_freq_factor") ?? 1,
    highFreqFactor: num(p, "high_freq_factor") ?? 4,
    originalMaxPositions: num(p, "original_max_position_embeddings") ?? num(c, "max_position_embeddings") ?? 8192,
  };
  if (type === "llama3" && !(rope.highFreqFactor > rope.lowFreqFactor)) {
    problems.push(`llama3 rope needs high_freq_factor > low_freq_factor, got ${rope.highFreqFactor} ≤ ${rope.lowFreqFactor}`);
  }
  return rope;
}

/** Sliding window per layer, as each family's modeling code decides it. */
function windowsOf(family: GptFamily, c: Config, layers: number, problems: string[]): (number | null)[] {
  // Absent means the config class default (4096 in Mistral and Qwen2/3, none in Mixtral); an explicit null means none.
  const window = "sliding_window" in c ? (int(c, "sliding_window") ?? null) : family === "mixtral" ? null : 4096;
  const all = (w: number | null) => new Array<number | null>(layers).fill(w);
  if (family === "llama") return all(null);
  if (family === "mistral" || family === "mixtral") return all(window);
  // Qwen3MoeConfig: sliding_window kept only with use_sliding_window, then on every layer (no layer_types).
  if (family === "qwen3_moe") return all(c.use_sliding_window === true ? window : null);
  if (family === "qwen2_moe") return qwen2MoeWindows(c, layers, window, problems);
  // Qwen2/3: layer_types when saved (transformers 5), else the 4.x rule: sliding from max_window_layers on.
  const types = Array.isArray(c.layer_types) ? c.layer_types : undefined;
  const use = c.use_sliding_window === true && window !== null;
  const from = int(c, "max_window_layers") ?? 0;
  return Array.from({ length: layers }, (_, i) => {
    const sliding = types !== undefined ? types[i] === "sliding_attention" : use && i >= from;
    return sliding && use ? window : null;
  });
}

/**
 * Qwen2MoeConfig: layer_types when saved, else sliding on even layers below max_window_layers (default 28) with
 * use_sliding_window — not Qwen2's rule. Without use_sliding_window the class sets sliding_window to 0, so a saved
 * "sliding_attention" layer would see no key at all: refused rather than reproduced.
 */
function qwen2MoeWindows(c: Config, layers: number, window: number | null, problems: string[]): (number | null)[] {
  const use = c.use_sliding_window === true;
  const types = Array.isArray(c.layer_types) ? c.layer_types : undefined;
  const from = int(c, "max_window_layers") ?? 28;
  return Array.from({ length: layers }, (_, i) => {
    const sliding = types !== undefined ? types[i] === "sliding_attention" : use && i % 2 === 0 && i < from;
    if (!sliding) return null;
    if (!use || window === null || window <= 0) problems.push(`layer ${i} is sliding_attention but use_sliding_window / sliding_window give it no window`);
    return window;
  });
}

/** Layer i's HF tensor name prefix. */
export const layerPrefix = (i: number): string => `model.layers.${i}.`;

/**
 * Reads the dims from config.json and checks every tensor against them, listing all disagreements at once.
 * `dir` names the model in errors.
 */
export function gptDims(config: Config, tensors: ReadonlyMap<string, WeightRef>, dir: string): GptDims {
  const problems: string[] = [];
  const dims = configDims(config, dir, problems);
  let layers = 0;
  while (tensors.has(`${layerPrefix(layers)}self_attn.q_proj.weight`)) layers++;
  if (problems.length === 0 && dims.layers !== layers) problems.push(`num_hidden_layers = ${dims.layers}, but the tensors have ${layers} layers`);
  if (problems.length === 0) checkTensors(dims, tensors, problems);
  fail(dims.family, problems, dir);
  return dims;
}

/** The dims config.json alone describes (no tensors checked), e.g. to know which tensors a writer must produce. */
export function gptConfigDims(config: Config, dir: string): GptDims {
  const problems: string[] = [];
  const dims = configDims(config, dir, problems);
  fail(dims.family, problems, dir);
  return dims;
}

function fail(family: GptFamily, problems: readonly string[], dir: string): void {
  if (problems.length === 0) return;
  const shown = problems.slice(0, 8).join("; ") + (problems.length > 8 ? `; … ${problems.length - 8} more` : "");
  throw new MegahubError("MODEL", `tensors do not fit ${GPT_ARCHITECTURES[family]}: ${shown}`, { file: dir });
}

/**
 * Every field the modeling code reads. Missing size fields are errors, not shape guesses: transformers would fill
 * them with its class defaults (vocab 32000, hidden 4096 …), which is never what a small dir means.
 */
function configDims(config: Config, dir: string, problems: string[]): GptDims {
  const family = gptFamilyOf(config);
  if (family === undefined) throw new MegahubError("MODEL", "config.json names no Llama/Mistral/Qwen2/Qwen3/Mixtral/Qwen2-MoE/Qwen3-MoE model", { file: dir });
  const need = (key: string): number => {
    const v = int(config, key);
    if (v === undefined || v <= 0) problems.push(`config.json lacks ${key}`);
    return v ?? 0;
  };
  const hidden = need("hidden_size");
  const heads = need("num_attention_heads");
  const layers = need("num_hidden_layers");
  const act = config.hidden_act ?? "silu";
  const qwen3 = family === "qwen3" || family === "qwen3_moe";
  if (act !== "silu") problems.push(`hidden_act "${String(act)}" is not supported (silu is)`);
  const headDim = int(config, "head_dim") ?? (heads > 0 ? hidden / heads : 0);
  const moe = moeConfigDims(family, config, layers, problems);
  // intermediate_size is the dense layers' MLP (Mixtral's experts'): needed only where some layer reads it.
  const denseFree = moe !== undefined && moe.sparse.every(Boolean) && family !== "mixtral";
  const dims: GptDims = {
    family,
    vocab: need("vocab_size"),
    hidden,
    layers,
    heads,
    kvHeads: int(config, "num_key_value_heads") ?? heads,
    headDim,
    ffn: denseFree ? (int(config, "intermediate_size") ?? 0) : need("intermediate_size"),
    // MixtralConfig's default is 1e-5, every other class's 1e-6.
    rmsEps: num(config, "rms_norm_eps") ?? (family === "mixtral" ? 1e-5 : 1e-6),
    rope: ropeOf(config, family, problems),
    tied: config.tie_word_embeddings === true,
    // Qwen2-MoE's q/k/v biases follow qkv_bias (default true); Qwen3(-MoE)'s attention_bias covers o_proj too.
    qkvBias:
      family === "qwen2" ||
      (family === "qwen2_moe" && config.qkv_bias !== false) ||
      ((family === "llama" || qwen3) && config.attention_bias === true),
    oBias: (family === "llama" || qwen3) && config.attention_bias === true,
    mlpBias: family === "llama" && config.mlp_bias === true,
    qkNorm: qwen3,
    slidingWindow: windowsOf(family, config, layers, problems),
    moe,
  };
  if (!Number.isSafeInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) {
    problems.push(`head_dim ${headDim} must be a positive even integer (rotate-half RoPE)`);
  }
  if (dims.kvHeads <= 0 || heads % dims.kvHeads !== 0) {
    problems.push(`num_attention_heads ${heads} is not a multiple of num_key_value_heads ${dims.kvHeads}`);
  }
  return dims;
}

/** Every tensor the graph reads, with its shape. */
export function expectedGptTensors(d: GptDims): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const q = d.heads * d.headDim;
  const kv = d.kvHeads * d.headDim;
  m.set("model.embed_tokens.weight", [d.vocab, d.hidden]);
  for (let i = 0; i < d.layers; i++) {
    const p = layerPrefix(i);
    m.set(`${p}input_layernorm.weight`, [d.hidden]);
    m.set(`${p}post_attention_layernorm.weight`, [d.hidden]);
    for (const [name, rows] of [["q_proj", q], ["k_proj", kv], ["v_proj", kv]] as const) {
      m.set(`${p}self_attn.${name}.weight`, [rows, d.hidden]);
      if (d.qkvBias) m.set(`${p}self_attn.${name}.bias`, [rows]);
    }
    m.set(`${p}self_attn.o_proj.weight`, [d.hidden, q]);
    if (d.oBias) m.set(`${p}self_attn.o_proj.bias`, [d.hidden]);
    if (d.qkNorm) {
      m.set(`${p}self_attn.q_norm.weight`, [d.headDim]);
      m.set(`${p}self_attn.k_norm.weight`, [d.headDim]);
    }
    if (d.moe?.sparse[i] === true) {
      for (const [name, shape] of expectedMoeLayerTensors(d.family, d.moe, d.hidden, i)) m.set(name, shape);
      continue;
    }
    for (const [name, shape] of [["gate_proj", [d.ffn, d.hidden]], ["up_proj", [d.ffn, d.hidden]], ["down_proj", [d.hidden, d.ffn]]] as const) {
      m.set(`${p}mlp.${name}.weight`, [...shape]);
      if (d.mlpBias) m.set(`${p}mlp.${name}.bias`, [shape[0]]);
    }
  }
  m.set("model.norm.weight", [d.hidden]);
  if (!d.tied) m.set("lm_head.weight", [d.vocab, d.hidden]);
  return m;
}

function checkTensors(d: GptDims, tensors: ReadonlyMap<string, WeightRef>, problems: string[]): void {
  const expected = expectedGptTensors(d);
  for (const [name, shape] of expected) {
    const t = tensors.get(name);
    if (!t) problems.push(`${name} missing`);
    else if (t.shape.join(",") !== shape.join(",")) problems.push(`${name} is [${t.shape.join(", ")}], expected [${shape.join(", ")}]`);
    else if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16") {
      problems.push(`${name} has dtype ${t.dtype}; only F32, F16 and BF16 weights are supported`);
    }
  }
  // A tensor transformers would not load (a bias the config turns off) would silently change nothing there but
  // would be ignored here too; say so rather than verify a model that is not what the config describes.
  for (const name of tensors.keys()) {
    if (expected.has(name) || name.endsWith(".rotary_emb.inv_freq") || (d.tied && name === "lm_head.weight")) continue;
    problems.push(`unexpected tensor ${name} (not part of this config's ${GPT_ARCHITECTURES[d.family]})`);
  }
}

/**
 * RoPE inverse frequencies, as transformers computes them (modeling_rope_utils: default, linear, llama3), rounded to
 * fp32 the way its fp32 buffer holds them.
 */
export function ropeInvFreq(d: GptDims): number[] {
  const { rope, headDim: dim } = d;
  return Array.from({ length: dim / 2 }, (_, j) => {
    const base = 1 / Math.pow(rope.theta, (2 * j) / dim);
    if (rope.type === "default") return Math.fround(base);
    if (rope.type === "linear") return Math.fround(base / rope.factor);
    const lowWavelen = rope.originalMaxPositions / rope.lowFreqFactor;
    const highWavelen = rope.originalMaxPositions / rope.highFreqFactor;
    const wavelen = (2 * Math.PI) / base;
    if (wavelen < highWavelen) return Math.fround(base);
    if (wavelen > lowWavelen) return Math.fround(base / rope.factor);
    const smooth = (rope.originalMaxPositions / wavelen - rope.lowFreqFactor) / (rope.highFreqFactor - rope.lowFreqFactor);
    return Math.fround((1 - smooth) * (base / rope.factor) + smooth * base);
  });
}
