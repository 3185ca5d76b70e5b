import { attr } from "../../formats/onnx/graph-builder.js";
import { GraphWeights, swiglu, swigluMlp, type GraphWeightRef } from "../onnx-blocks.js";
import { moeTensorNames, type GptMoeDims } from "./config-dims.js";

/**
 * One sparse MoE block (MixtralSparseMoeBlock / Qwen2MoeSparseMoeBlock / Qwen3MoeSparseMoeBlock) on the normed
 * residual x [T, h] fp32, returning [T, h]. Routing is transformers 5.18's TopKRouter step by step:
 * router logits = x·Wᵣᵀ → softmax in fp32 → TopK (largest, sorted; ONNX puts the lower expert first on a tie) →
 * ÷ their sum when renormalising → the k weights scattered back to [T, E], zeros elsewhere. The routers cast the
 * weights back to the hidden dtype and the experts run in it; the graph computes in fp32 throughout (as for the dense
 * layers), so that cast is the identity here and an fp32 transformers forward is the reference it matches.
 *
 * Experts: every expert runs on every token as one batched MatMul over the stacked weights — [E, 2F, h] (gate | up)
 * × xᵀ → SwiGLU → [E, h, F] × → [E, h, T] — then each expert's output is scaled by its routing weight and the E
 * outputs summed. Why not gather each token's k experts: gathering weights per token materialises [T, k, h, F]
 * (gigabytes at real widths for a 36-token verify batch), and a per-expert NonZero/ScatterND loop grows the graph by
 * E subgraphs per layer. Batched, each expert's weights are read once per forward (what a small batch costs anyway),
 * the graph is the same size for 8 or 128 experts, and the result is exact: an expert a token is not routed to is
 * multiplied by an exact 0 and adds exactly 0, and the routed ones are summed in expert order, as transformers'
 * index_add_ over the hit experts does. The price is E/k times the expert FLOPs, and a transient [E, 2F, T] per layer.
 * The stacked fp32 weights are constants ORT folds once at session start.
 *
 * Qwen2-MoE adds its shared expert behind a sigmoid gate: experts + sigmoid(x·w_gᵀ) · shared(x).
 */
export function moeBlock<R extends GraphWeightRef>(w: GraphWeights<R>, family: string, m: GptMoeDims, layer: number, x: string): string {
  const g = w.g;
  const n = moeTensorNames(family, layer);
  const F = m.expertFfn;
  return g.scope("moe", () => {
    const routing = routingWeights(w, m, n.router, x);
    // Stacked in the stored [out, in] layout: per expert [gate_j; up_j] → [E, 2F, h], down_j → [E, h, F]. The
    // experts then run on xᵀ ([h, T]) so no weight needs a transposed copy; only the small activations turn.
    const stack = (parts: ((j: number) => string)[]) =>
      g.op(
        "Concat",
        Array.from({ length: m.experts }, (_, j) => parts.map((name) => g.op("Unsqueeze", [w.weight(`${name(j)}.weight`), g.constI64([0])]))).flat(),
        { axis: attr.int(0) },
      );
    const gateUp = g.op("Reshape", [stack([n.gate, n.up]), g.constI64([m.experts, 2 * F, -1])]);
    const xT = g.op("Transpose", [x], { perm: attr.ints([1, 0]) });
    const [a, b] = g.opN("Split", [g.op("MatMul", [gateUp, xT]), g.constI64([F, F])], 2, { axis: attr.int(1) }) as [string, string];
    // [E, h, F] × [E, F, T] → [E, h, T], each expert's output column t scaled by token t's weight for it ([E, 1, T]).
    const perExpert = g.op("MatMul", [stack([n.down]), swiglu(g, a, b)]);
    const scale = g.op("Unsqueeze", [g.op("Transpose", [routing], { perm: attr.ints([1, 0]) }), g.constI64([1])]);
    const summed = g.op("ReduceSum", [g.op("Mul", [perExpert, scale]), g.constI64([0])], { keepdims: attr.int(0) });
    const experts = g.op("Transpose", [summed], { perm: attr.ints([1, 0]) });
    if (m.sharedFfn === 0 || n.shared === undefined || n.sharedGate === undefined) return experts;
    const gate = g.op("Sigmoid", [w.linear(x, n.sharedGate)]);
    return g.op("Add", [experts, g.op("Mul", [gate, swigluMlp(w, x, n.shared)])]);
  });
}

/** [T, E] fp32: each token's top-k routing weights at their experts' columns, 0 at the others. */
function routingWeights<R extends GraphWeightRef>(w: GraphWeights<R>, m: GptMoeDims, router: string, x: string): string {
  const g = w.g;
  const probs = g.op("Softmax", [w.linear(x, router)], { axis: attr.int(-1) });
  const [top, experts] = g.opN("TopK", [probs, g.constI64([m.topk])], 2, { axis: attr.int(-1), largest: attr.int(1), sorted: attr.int(1) }) as [
    string,
    string,
  ];
  const weights = m.renormalize ? g.op("Div", [top, g.op("ReduceSum", [top, g.constI64([-1])], { keepdims: attr.int(1) })]) : top;
  // ConstantOfShape without a value is float32 zeros.
  return g.op("ScatterElements", [g.op("ConstantOfShape", [g.op("Shape", [probs])]), experts, weights], { axis: attr.int(1) });
}
