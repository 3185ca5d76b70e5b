import { attr, GraphBuilder } from "../../formats/onnx/graph-builder.js";
import type { OnnxExternalData, OnnxModel } from "../../formats/onnx/proto.js";
import { DTYPES } from "../../tensors/dtypes.js";
import { moeBlock } from "../moe/onnx-moe.js";
import { concatShape, futureKeys, GraphWeights, rmsNorm, rotaryTables, rotate, swigluMlp, type Rope } from "../onnx-blocks.js";
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
 * Builds a Llama / Mistral / Qwen2 / Qwen3 decoder, or a Mixtral / Qwen2-MoE / Qwen3-MoE one (dense and sparse layers
 * as config.json says, models/moe/onnx-moe.ts), as an ONNX model: input_ids, attention_mask [B,S] int64 →
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
  private readonly w: GraphWeights<R>;

  constructor(
    readonly g: GraphBuilder,
    private readonly d: GptDims,
    tensors: ReadonlyMap<string, R>,
    locate: (ref: R) => OnnxExternalData,
  ) {
    this.w = new GraphWeights(g, tensors, locate);
  }

  forward(ids: string, mask: string, last: boolean): string {
    const g = this.g;
    const d = this.d;
    const shapeBS = g.op("Shape", [ids]);
    const rope = rotaryTables(g, ids, ropeInvFreq(d));
    const masks = new Map<number | null, string>();
    const maskFor = (window: number | null): string => {
      let m = masks.get(window);
      if (m === undefined) {
        m = this.attentionMask(ids, mask, window);
        masks.set(window, m);
      }
      return m;
    };
    let x = this.w.embed("model.embed_tokens.weight", ids, d.hidden);
    for (let i = 0; i < d.layers; i++) {
      const p = layerPrefix(i);
      x = g.scope(`layers.${i}`, () => {
        const a = this.attention(this.rmsNorm(x, `${p}input_layernorm.weight`), p, shapeBS, rope, maskFor(d.slidingWindow[i] ?? null));
        const h = g.op("Add", [x, a]);
        const normed = this.rmsNorm(h, `${p}post_attention_layernorm.weight`);
        // Sparse layers route each token to its top-k experts (models/moe/onnx-moe.ts); the others are Llama's MLP.
        const ffn = d.moe?.sparse[i] === true ? moeBlock(this.w, d.family, d.moe, i, normed) : swigluMlp(this.w, normed, `${p}mlp`);
        return g.op("Add", [h, ffn]);
      });
    }
    let out = this.rmsNorm(x, "model.norm.weight");
    let outShape = concatShape(g, shapeBS, [d.vocab]);
    if (last) {
      const x3 = g.op("Reshape", [out, concatShape(g, shapeBS, [d.hidden])]);
      const lastPos = g.op("Slice", [x3, g.constI64([-1]), g.constI64([Number.MAX_SAFE_INTEGER]), g.constI64([1])]);
      out = g.op("Reshape", [lastPos, g.constI64([-1, d.hidden])]);
      outShape = g.constI64([-1, 1, d.vocab]);
    }
    const head = this.w.weight(d.tied ? "model.embed_tokens.weight" : "lm_head.weight");
    return g.op("Reshape", [g.op("Gemm", [out, head], { transB: attr.int(1) }), outShape]);
  }

  private rmsNorm(x: string, weight: string): string {
    return rmsNorm(this.g, x, this.w.weight(weight), this.d.rmsEps);
  }

  private attention(x: string, p: string, shapeBS: string, rope: Rope, mask: string): string {
    const g = this.g;
    const { heads: n, kvHeads: kv, headDim: dh } = this.d;
    const rep = n / kv;
    const split = (name: string, count: number) => {
      let t = g.op("Reshape", [this.w.linear(x, `${p}self_attn.${name}_proj`), concatShape(g, shapeBS, [count, dh])]);
      // Qwen3 normalises each head (over d) after the projection and before RoPE.
      if (this.d.qkNorm && name !== "v") t = this.rmsNorm(t, `${p}self_attn.${name}_norm.weight`);
      return g.op("Transpose", [t], { perm: attr.ints([0, 2, 1, 3]) });
    };
    const q = rotate(g, split("q", n), rope, dh);
    const k = rotate(g, split("k", kv), rope, dh);
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
    return this.w.linear(merged, `${p}self_attn.o_proj`);
  }

  /**
   * bool [B, 1, 1, S, S], true where query q may not see key k: k > q (causal), key k is padding (attention_mask 0),
   * or, with a sliding window w, q − k ≥ w (transformers' sliding_window_overlay keeps k > q − w).
   */
  private attentionMask(ids: string, mask: string, window: number | null): string {
    const g = this.g;
    const causal = futureKeys(g, ids);
    let blocked = causal.blocked;
    if (window !== null) {
      blocked = g.op("Or", [blocked, g.op("GreaterOrEqual", [g.op("Sub", [causal.queries, causal.keys]), g.constI64([window], [])])]);
    }
    const pad = g.op("Unsqueeze", [g.op("Equal", [mask, g.constI64([0], [])]), g.constI64([1, 2, 3])]);
    return g.op("Or", [blocked, pad]);
  }
}
