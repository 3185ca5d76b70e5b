import { attr, type GraphBuilder } from "../formats/onnx/graph-builder.js";
import type { OnnxExternalData } from "../formats/onnx/proto.js";
import { DTYPES, type Dtype } from "../tensors/dtypes.js";

/**
 * Node builders the decoder-only graph (models/gpt/onnx-graph.ts, with its MoE blocks) and the OpenBA graph
 * (verify/openba-graph.ts) share: weights as external initializers cast once to fp32, linears as one Gemm on the
 * stored [out, in] matrix, RoPE tables and rotate-half, RMSNorm, SwiGLU. Each graph keeps only what is its own.
 */

/** The part of a tensor reference a graph reads (the rest — file, offset — only goes to `locate`). */
export interface GraphWeightRef {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
}

/** A model's tensors as graph values: each initializer declared once, each fp32 view (a Cast when stored in F16/BF16) made once. */
export class GraphWeights<R extends GraphWeightRef> {
  private readonly weights = new Map<string, string>();
  private readonly raws = new Map<string, string>();

  constructor(
    readonly g: GraphBuilder,
    private readonly tensors: ReadonlyMap<string, R>,
    private readonly locate: (ref: R) => OnnxExternalData,
  ) {}

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  ref(name: string): R {
    const t = this.tensors.get(name);
    if (!t) throw new TypeError(`graph needs tensor "${name}", which the model dir does not have`);
    return t;
  }

  /** The initializer in its stored dtype, declared once however often it is used. */
  raw(ref: R): string {
    const hit = this.raws.get(ref.name);
    if (hit !== undefined) return hit;
    const value = this.g.external(ref.name, DTYPES[ref.dtype].onnx, ref.shape, this.locate(ref));
    this.raws.set(ref.name, value);
    return value;
  }

  /** The weight as fp32: the external initializer itself, or one Cast of it (ORT folds it once at session start). */
  weight(name: string): string {
    const hit = this.weights.get(name);
    if (hit !== undefined) return hit;
    const ref = this.ref(name);
    const raw = this.raw(ref);
    const value = ref.dtype === "F32" ? raw : this.g.op("Cast", [raw], { to: attr.int(DTYPES.F32.onnx) });
    this.weights.set(name, value);
    return value;
  }

  /** x·Wᵀ (+ b when the dir has `prefix.bias`; the readers checked which exist), one Gemm on W as stored. */
  linear(x: string, prefix: string): string {
    const bias = this.has(`${prefix}.bias`) ? [this.weight(`${prefix}.bias`)] : [];
    return this.g.op("Gemm", [x, this.weight(`${prefix}.weight`), ...bias], { transB: attr.int(1) });
  }

  /**
   * Embedding rows [B·S, h] for ids [B, S]: gathered in the stored dtype, then only those rows cast — casting the
   * [V, h] table would make an fp32 copy of the largest tensor just to read a few rows.
   */
  embed(table: string, ids: string, hidden: number): string {
    const g = this.g;
    const ref = this.ref(table);
    let rows = g.op("Gather", [this.raw(ref), ids], { axis: attr.int(0) });
    if (ref.dtype !== "F32") rows = g.op("Cast", [rows], { to: attr.int(DTYPES.F32.onnx) });
    return g.op("Reshape", [rows, g.constI64([-1, hidden])]);
  }
}

export interface Rope {
  readonly cos: string;
  readonly sin: string;
}

/** Shape(x) ++ tail, for reshapes that keep the leading [B, S]. */
export function concatShape(g: GraphBuilder, shapeBS: string, tail: readonly number[]): string {
  return g.op("Concat", [shapeBS, g.constI64(tail)], { axis: attr.int(0) });
}

/** The sequence length of ids [B, S], as a scalar. */
export function seqLen(g: GraphBuilder, ids: string): string {
  return g.op("Gather", [g.op("Shape", [ids]), g.constI64([1], [])], { axis: attr.int(0) });
}

/** cos/sin [S, d] for positions 0..S−1: emb = [pos·inv_freq | pos·inv_freq] in fp32, as the HF rotary embeddings. */
export function rotaryTables(g: GraphBuilder, ids: string, invFreq: readonly number[]): Rope {
  const pos = g.op("Cast", [g.op("Range", [g.constI64([0], []), seqLen(g, ids), g.constI64([1], [])])], { to: attr.int(DTYPES.F32.onnx) });
  const freqs = g.op("Mul", [g.op("Unsqueeze", [pos, g.constI64([1])]), g.constF32(invFreq, [1, invFreq.length])]);
  const emb = g.op("Concat", [freqs, freqs], { axis: attr.int(-1) });
  return { cos: g.op("Cos", [emb]), sin: g.op("Sin", [emb]) };
}

/** x·cos + rotate_half(x)·sin on [B, heads, S, d], rotate_half(x) = [−x₂ | x₁]. */
export function rotate(g: GraphBuilder, x: string, rope: Rope, headDim: number): string {
  const half = headDim / 2;
  const axis = g.constI64([3]);
  const x1 = g.op("Slice", [x, g.constI64([0]), g.constI64([half]), axis]);
  const x2 = g.op("Slice", [x, g.constI64([half]), g.constI64([2 * half]), axis]);
  const rot = g.op("Concat", [g.op("Neg", [x2]), x1], { axis: attr.int(-1) });
  return g.op("Add", [g.op("Mul", [x, rope.cos]), g.op("Mul", [rot, rope.sin])]);
}

/** bool [S, S], true where key position k > query position q. */
export function futureKeys(g: GraphBuilder, ids: string): { blocked: string; keys: string; queries: string } {
  const r = g.op("Range", [g.constI64([0], []), seqLen(g, ids), g.constI64([1], [])]);
  const keys = g.op("Unsqueeze", [r, g.constI64([0])]);
  const queries = g.op("Unsqueeze", [r, g.constI64([1])]);
  return { blocked: g.op("Greater", [keys, queries]), keys, queries };
}

/** LlamaRMSNorm in fp32: weight · x · rsqrt(mean(x²) + eps), over the last axis (`weight` an fp32 value). */
export function rmsNorm(g: GraphBuilder, x: string, weight: string, eps: number): string {
  const variance = g.op("ReduceMean", [g.op("Mul", [x, x])], { axes: attr.ints([-1]), keepdims: attr.int(1) });
  const inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [variance, g.scalarF32(eps)])])]);
  return g.op("Mul", [weight, g.op("Mul", [x, inv])]);
}

/** silu(a) · b, the SwiGLU gate. */
export function swiglu(g: GraphBuilder, a: string, b: string): string {
  return g.op("Mul", [g.op("Mul", [a, g.op("Sigmoid", [a])]), b]);
}

/** down(silu(gate(x)) · up(x)) with `prefix.gate_proj` / `.up_proj` / `.down_proj` (Llama's MLP, Qwen-MoE's shared expert). */
export function swigluMlp<R extends GraphWeightRef>(w: GraphWeights<R>, x: string, prefix: string): string {
  return w.linear(swiglu(w.g, w.linear(x, `${prefix}.gate_proj`), w.linear(x, `${prefix}.up_proj`)), `${prefix}.down_proj`);
}
