import { MegahubError } from "../../errors.js";
import type { ExpertLayout, Features, MoeDims, MoeFeature } from "../arch.js";

/** How Megatron routes tokens (args; config.json on the HF side), megatron-core-format.md §6.1. */
export interface MoeRouting {
  readonly topk: number;
  /** moe_router_pre_softmax: softmax over all experts, then top-k, no renormalisation (Qwen2-MoE's norm_topk_prob false). */
  readonly preSoftmax: boolean;
  readonly score: string;
  readonly scaling: number | undefined;
  readonly groupTopk: number | undefined;
}

/** What a mixture-of-experts model carries beyond its dims: how experts are stored and how tokens are routed. */
export interface McoreMoe {
  readonly layout: ExpertLayout;
  readonly routing: MoeRouting;
}

const layerName = (i: number, rest: string) => `decoder.layers.${i}.${rest}`;
const ROUTER = "mlp.router.weight";

/**
 * MoE dims from global (canonical) shapes, undefined for a dense model: MoE layers are the ones with a router,
 * the expert count is the router's rows, one expert's FFN is expert 0's fc2 columns, the shared experts' their fc2's.
 */
export function detectMoeDims(shape: (name: string) => readonly number[] | undefined, layers: number, where: string): MoeDims | undefined {
  const moeLayers = Array.from({ length: layers }, (_, i) => shape(layerName(i, ROUTER)) !== undefined);
  const first = moeLayers.indexOf(true);
  if (first < 0) return undefined;
  const experts = shape(layerName(first, ROUTER))?.[0] as number;
  const fc2 = shape(layerName(first, "mlp.experts.local_experts.0.linear_fc2.weight"));
  if (!fc2) throw new MegahubError("MODEL", `layer ${first} has a router but no expert 0 (mlp.experts.local_experts.0.linear_fc2.weight or …linear_fc2.weight0)`, { file: where });
  const shared = shape(layerName(first, "mlp.shared_experts.linear_fc2.weight"));
  const problems: string[] = [];
  moeLayers.forEach((moe, i) => {
    if (moe && shape(layerName(i, ROUTER))?.[0] !== experts) problems.push(`layer ${i}'s router has ${shape(layerName(i, ROUTER))?.[0]} experts, layer ${first}'s ${experts}`);
  });
  if (problems.length > 0) throw new MegahubError("MODEL", problems.join("; "), { file: where });
  return { experts, ffn: fc2[1] as number, sharedFfn: (shared?.[1] as number | undefined) ?? 0, layers: moeLayers };
}

/** The MoE features of a global model (read from its first MoE layer; checkShapes holds every layer to them). */
export function moeFeaturesOf(tensors: ReadonlyMap<string, unknown>, moe: MoeDims | undefined): Partial<Record<MoeFeature, boolean>> {
  if (!moe) return {};
  const first = moe.layers.indexOf(true);
  const has = (rest: string) => tensors.has(layerName(first, rest));
  return { sharedExperts: moe.sharedFfn > 0, sharedGate: has("mlp.shared_experts.gate_weight"), expertBias: has("mlp.router.expert_bias") };
}

/**
 * A shape lookup for detectGptDims on a model whose layer 0 may be an MoE layer: the dense FFN comes from the first
 * dense layer, or from args/config (ffn_hidden_size / intermediate_size) when every layer is MoE, else the experts'.
 */
export function denseFfnShim(shape: (name: string) => readonly number[] | undefined, moe: MoeDims | undefined, denseFfn: number | undefined): (name: string) => readonly number[] | undefined {
  if (!moe) return shape;
  const dense = moe.layers.indexOf(false);
  return (name) => {
    if (name !== "decoder.layers.0.mlp.linear_fc2.weight") return shape(name);
    if (dense >= 0) return shape(layerName(dense, "mlp.linear_fc2.weight"));
    const hidden = shape("embedding.word_embeddings.weight")?.[1];
    return hidden === undefined ? undefined : [hidden, denseFfn ?? moe.ffn];
  };
}

export const withMoeFeatures = (f: Features, moe: MoeDims | undefined, tensors: ReadonlyMap<string, unknown>): Features => ({ ...f, ...moeFeaturesOf(tensors, moe) });

/** Active parameters per token: everything but the routed experts, plus top-k of them. */
export function activeParams(total: number, moe: MoeDims | undefined, hidden: number, topk: number | undefined): number {
  if (!moe || topk === undefined) return total;
  const perExpert = 3 * moe.ffn * hidden;
  const moeLayers = moe.layers.filter(Boolean).length;
  return total - moeLayers * (moe.experts - Math.min(topk, moe.experts)) * perExpert;
}
