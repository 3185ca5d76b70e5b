import { attr, GraphBuilder } from "../../formats/onnx/graph-builder.js";
import type { OnnxExternalData, OnnxModel } from "../../formats/onnx/proto.js";
import { DTYPES } from "../../tensors/dtypes.js";
import { GPT_ARCHITECTURES, layerPrefix, ropeInvFreq, type GptDims, type WeightRef } from "./config-dims.js";

/**
 * Opset 17 with explicit ops, for the reasons the OpenBA graph gives (src/verify/openba-graph.ts): it loads in every
 * onnxruntime since 1.13, and fp32 compute runs on CPU whatever the weights' dtype. RMSNormalization and the fused
 * Attention/RotaryEmbedding ops only exist from opset 23, and ORT's CPU kernels for them have no bf16.
 */
export const GPT_OPSET = 17;
export const GPT_IR_VERSION = 8;

/** Graph input and output names: optimum's names for a decoder-only model without a KV cache. */
export const GPT_IO = { inputIds: "input_ids", attentionMask: "attention_mask", logits: "logits" } as const;

export interface GptGraphOptions<R extends WeightRef> {
  /** "last": logits of the last position only ([B,1,V]), for greedy generation. @default "all" */
  logits?: "all" | "last";
  /** Where each weight's bytes are, relative to the .onnx file. */
  locate(ref: R): OnnxExternalData;
}

/**
 * The fill for masked scores: float32's lowest value, which is what transformers' eager attention ends up with
 * (it adds finfo.min to the scores, and score + finfo.min rounds to finfo.min). `Where` replaces rather than adds,
 * so a row whose keys are all masked (a left-padded query) becomes a finite uniform softmax, never NaN.
 */
const MASKED = -3.4028234663852886e38;

/**
 * Builds a Llama / Mistral / Qwen2 / Qwen3 decoder as an ONNX model: input_ids, attention_mask [B,S] int64 →
 * logits [B,S,V] (or [B,1,V]) fp32. Positions are 0..S−1, as transformers' forward uses when no position_ids are
 * passed. Compute is fp32 throughout: F16/BF16 weights stay in their file as external data and a Cast to fp32 follows
 * each (ORT folds those once at session start).
 *
 * The residual stream is kept 2-D ([B·S, h]) so every projection is one Gemm with transB=1 on the [out, in] weight
 * as stored. Attention is 5-D, [B, kv, rep, S, d] for queries against [B, kv, 1, S, d] keys, so grouped-query
 * heads share their key/value head by broadcasting instead of repeat_kv's copy; head h reads kv head ⌊h / rep⌋,
 * exactly repeat_kv's order.
 */
export function buildGptGraph<R extends WeightRef>(dims: GptDims, tensors: ReadonlyMap<string, R>, options: GptGraphOptions<R>): OnnxModel {
  const g = new GraphBuilder(`${dims.family}_causal_lm`);
  const b = new Blocks(g, dims, tensors, options.locate);
  const I64 = DTYPES.I64.onnx;
  const F32 = DTYPES.F32.onnx;
  const ids = g.input(GPT_IO.inputIds, I64, ["batch", "sequence_length"]);
  const mask = g.input(GPT_IO.attentionMask, I64, ["batch", "sequence_length"]);
  const last = options.logits === "last";
  g.output(b.forward(ids, mask, last), GPT_IO.logits, F32, ["batch", last ? 1 : "sequence_length", dims.vocab]);
  return {
    irVersion: GPT_IR_VERSION,
    opsets: [{ domain: "", version: GPT_OPSET }],
    producerName: "megahub",
    producerVersion: "0.1.0",
    docString: `${GPT_ARCHITECTURES[dims.family]} graph (fp32 compute, no KV cache), built by megahub from the model's safetensors`,
    graph: g.build(),
  };
}

class Blocks<R extends WeightRef> {
  private readonly weights = new Map<string, string>();
  private readonly raws = new Map<string, string>();

  constructor(
    readonly g: GraphBuilder,
    private readonly d: GptDims,
    private readonly tensors: ReadonlyMap<string, R>,
    private readonly locate: (ref: R) => OnnxExternalData,
  ) {}

  forward(ids: string, mask: string, last: boolean): string {
    const g = this.g;
    const d = this.d;
    const shapeBS = g.op("Shape", [ids]);
    const rope = this.rotaryTables(ids);
    const masks = new Map<number | null, string>();
    const maskFor = (window: number | null): string => {
      let m = masks.get(window);
      if (m === undefined) {
        m = this.attentionMask(ids, mask, window);
        masks.set(window, m);
      }
      return m;
    };
    let x = this.embed(ids);
    for (let i = 0; i < d.layers; i++) {
      const p = layerPrefix(i);
      x = g.scope(`layers.${i}`, () => {
        const a = this.attention(this.rmsNorm(x, `${p}input_layernorm.weight`), p, shapeBS, rope, maskFor(d.slidingWindow[i] ?? null));
        const h = g.op("Add", [x, a]);
        return g.op("Add", [h, this.mlp(this.rmsNorm(h, `${p}post_attention_layernorm.weight`), p)]);
      });
    }
    let out = this.rmsNorm(x, "model.norm.weight");
    let outShape = g.op("Concat", [shapeBS, g.constI64([d.vocab])], { axis: attr.int(0) });
    if (last) {
      const x3 = g.op("Reshape", [out, g.op("Concat", [shapeBS, g.constI64([d.hidden])], { axis: attr.int(0) })]);
      const lastPos = g.op("Slice", [x3, g.constI64([-1]), g.constI64([Number.MAX_SAFE_INTEGER]), g.constI64([1])]);
      out = g.op("Reshape", [lastPos, g.constI64([-1, d.hidden])]);
      outShape = g.constI64([-1, 1, d.vocab]);
    }
    const head = this.weight(d.tied ? "model.embed_tokens.weight" : "lm_head.weight");
    return g.op("Reshape", [g.op("Gemm", [out, head], { transB: attr.int(1) }), outShape]);
  }

  private embed(ids: string): string {
    // Gather rows in the stored dtype, then cast only those: casting the [V, h] table would make an fp32 copy of the
    // largest tensor (a tied head needs that copy anyway, and gets it from weight()).
    const g = this.g;
    const ref = this.ref("model.embed_tokens.weight");
    let rows = g.op("Gather", [this.raw(ref), ids], { axis: attr.int(0) });
    if (ref.dtype !== "F32") rows = g.op("Cast", [rows], { to: attr.int(DTYPES.F32.onnx) });
    return g.op("Reshape", [rows, g.constI64([-1, this.d.hidden])]);
  }

  /** LlamaRMSNorm in fp32: weight · x · rsqrt(mean(x²) + eps), over the last axis. */
  private rmsNorm(x: string, weight: string): string {
    const g = this.g;
    const variance = g.op("ReduceMean", [g.op("Mul", [x, x])], { axes: attr.ints([-1]), keepdims: attr.int(1) });
    const inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [variance, g.scalarF32(this.d.rmsEps)])])]);
    return g.op("Mul", [this.weight(weight), g.op("Mul", [x, inv])]);
  }

  /** x·Wᵀ (+ b when the config has that bias; hf-config checked which exist). */
  private linear(x: string, prefix: string): string {
    const bias = this.tensors.has(`${prefix}.bias`) ? [this.weight(`${prefix}.bias`)] : [];
    return this.g.op("Gemm", [x, this.weight(`${prefix}.weight`), ...bias], { transB: attr.int(1) });
  }

  private attention(x: string, p: string, shapeBS: string, rope: Rope, mask: string): string {
    const g = this.g;
    const { heads: n, kvHeads: kv, headDim: dh } = this.d;
    const rep = n / kv;
    const split = (name: string, count: number) => {
      let t = g.op("Reshape", [this.linear(x, `${p}self_attn.${name}_proj`), this.concatShape(shapeBS, [count, dh])]);
      // Qwen3 normalises each head (over d) after the projection and before RoPE.
      if (this.d.qkNorm && name !== "v") t = this.rmsNorm(t, `${p}self_attn.${name}_norm.weight`);
      return g.op("Transpose", [t], { perm: attr.ints([0, 2, 1, 3]) });
    };
    const q = this.rotate(split("q", n), rope);
    const k = this.rotate(split("k", kv), rope);
    const v = split("v", kv);
    const q5 = g.op("Reshape", [q, g.constI64([0, kv, rep, -1, dh])]);
    const k5 = g.op("Unsqueeze", [k, g.constI64([2])]);
    const v5 = g.op("Unsqueeze", [v, g.constI64([2])]);
    const scores = g.op("Mul", [
      g.op("MatMul", [q5, g.op("Transpose", [k5], { perm: attr.ints([0, 1, 2, 4, 3]) })]),
      g.scalarF32(1 / Math.sqrt(dh)),
    ]);
    const probs = g.op("Softmax", [g.op("Where", [mask, g.scalarF32(MASKED), scores])], { axis: attr.int(-1) });
    const ctx = g.op("Reshape", [g.op("MatMul", [probs, v5]), g.constI64([0, n, -1, dh])]);
    const merged = g.op("Reshape", [g.op("Transpose", [ctx], { perm: attr.ints([0, 2, 1, 3]) }), g.constI64([-1, n * dh])]);
    return this.linear(merged, `${p}self_attn.o_proj`);
  }

  /** down(silu(gate(x)) · up(x)). */
  private mlp(x: string, p: string): string {
    const g = this.g;
    const gate = this.linear(x, `${p}mlp.gate_proj`);
    const silu = g.op("Mul", [gate, g.op("Sigmoid", [gate])]);
    return this.linear(g.op("Mul", [silu, this.linear(x, `${p}mlp.up_proj`)]), `${p}mlp.down_proj`);
  }

  /** cos/sin [S, d] for positions 0..S−1: emb = [pos·inv_freq | pos·inv_freq] in fp32 (LlamaRotaryEmbedding). */
  private rotaryTables(ids: string): Rope {
    const g = this.g;
    const dh = this.d.headDim;
    const len = g.op("Gather", [g.op("Shape", [ids]), g.constI64([1], [])], { axis: attr.int(0) });
    const pos = g.op("Cast", [g.op("Range", [g.constI64([0], []), len, g.constI64([1], [])])], { to: attr.int(DTYPES.F32.onnx) });
    const freqs = g.op("Mul", [g.op("Unsqueeze", [pos, g.constI64([1])]), g.constF32(ropeInvFreq(this.d), [1, dh / 2])]);
    const emb = g.op("Concat", [freqs, freqs], { axis: attr.int(-1) });
    return { cos: g.op("Cos", [emb]), sin: g.op("Sin", [emb]) };
  }

  /** x·cos + rotate_half(x)·sin on [B, heads, S, d], rotate_half(x) = [−x₂ | x₁]. */
  private rotate(x: string, rope: Rope): string {
    const g = this.g;
    const half = this.d.headDim / 2;
    const axis = g.constI64([3]);
    const x1 = g.op("Slice", [x, g.constI64([0]), g.constI64([half]), axis]);
    const x2 = g.op("Slice", [x, g.constI64([half]), g.constI64([2 * half]), axis]);
    const rot = g.op("Concat", [g.op("Neg", [x2]), x1], { axis: attr.int(-1) });
    return g.op("Add", [g.op("Mul", [x, rope.cos]), g.op("Mul", [rot, rope.sin])]);
  }

  /**
   * bool [B, 1, 1, S, S], true where query q may not see key k: k > q (causal), key k is padding (attention_mask 0),
   * or, with a sliding window w, q − k ≥ w (transformers' sliding_window_overlay keeps k > q − w).
   */
  private attentionMask(ids: string, mask: string, window: number | null): string {
    const g = this.g;
    const len = g.op("Gather", [g.op("Shape", [ids]), g.constI64([1], [])], { axis: attr.int(0) });
    const r = g.op("Range", [g.constI64([0], []), len, g.constI64([1], [])]);
    const keys = g.op("Unsqueeze", [r, g.constI64([0])]);
    const queries = g.op("Unsqueeze", [r, g.constI64([1])]);
    let blocked = g.op("Greater", [keys, queries]);
    if (window !== null) {
      blocked = g.op("Or", [blocked, g.op("GreaterOrEqual", [g.op("Sub", [queries, keys]), g.constI64([window], [])])]);
    }
    const pad = g.op("Unsqueeze", [g.op("Equal", [mask, g.constI64([0], [])]), g.constI64([1, 2, 3])]);
    return g.op("Or", [blocked, pad]);
  }

  private concatShape(shapeBS: string, tail: number[]): string {
    return this.g.op("Concat", [shapeBS, this.g.constI64(tail)], { axis: attr.int(0) });
  }

  private ref(name: string): R {
    const t = this.tensors.get(name);
    if (!t) throw new TypeError(`graph needs tensor "${name}", which the model dir does not have`);
    return t;
  }

  /** The initializer in its stored dtype, declared once however often it is used. */
  private raw(ref: R): string {
    const hit = this.raws.get(ref.name);
    if (hit !== undefined) return hit;
    const value = this.g.external(ref.name, DTYPES[ref.dtype].onnx, ref.shape, this.locate(ref));
    this.raws.set(ref.name, value);
    return value;
  }

  /** The weight as fp32: the external initializer itself, or one Cast of it. */
  private weight(name: string): string {
    const hit = this.weights.get(name);
    if (hit !== undefined) return hit;
    const ref = this.ref(name);
    const raw = this.raw(ref);
    const value = ref.dtype === "F32" ? raw : this.g.op("Cast", [raw], { to: attr.int(DTYPES.F32.onnx) });
    this.weights.set(name, value);
    return value;
  }
}

interface Rope {
  cos: string;
  sin: string;
}
