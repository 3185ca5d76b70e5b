import { countModelParams } from "../arch.js";
import type { McoreModel } from "../mcore-global.js";
import { activeParams } from "./dims.js";
import { MCORE_PARAMS } from "./spec.js";

/** What inspect shows of a mixture-of-experts model. */
export interface MoeSummary {
  readonly experts: number;
  readonly topk: number;
  readonly moeLayers: number;
  readonly denseLayers: number;
  readonly expertFfn: number;
  readonly sharedExpertFfn: number;
  readonly sharedExpertGate: boolean;
  readonly expertLayout: "sequential" | "grouped";
  /** How probabilities come out of the router (megatron-core-format.md §6.1). */
  readonly routing: string;
  readonly ep?: number;
  readonly expertsPerRank?: number;
  readonly totalParameters: number;
  readonly activeParameters: number;
}

export function moeSummary(m: McoreModel, ep?: number): MoeSummary | undefined {
  const moe = m.dims.moe;
  if (!moe || !m.moe) return undefined;
  const r = m.moe.routing;
  const total = countModelParams(MCORE_PARAMS, m.dims, m.features).total;
  const routing =
    r.score !== "softmax"
      ? `${r.score} scores, top-${r.topk}${m.features.expertBias ? " with expert bias" : ""}`
      : r.preSoftmax
        ? `softmax over all experts, then top-${r.topk} (not renormalised)`
        : `top-${r.topk} logits, softmax over them (= softmax, top-k, renormalise)`;
  return {
    experts: moe.experts,
    topk: r.topk,
    moeLayers: moe.layers.filter(Boolean).length,
    denseLayers: moe.layers.filter((x) => !x).length,
    expertFfn: moe.ffn,
    sharedExpertFfn: moe.sharedFfn,
    sharedExpertGate: m.features.sharedGate === true,
    expertLayout: m.moe.layout,
    routing,
    ...(ep === undefined ? {} : { ep, expertsPerRank: moe.experts / ep }),
    totalParameters: total,
    activeParameters: activeParams(total, moe, m.dims.hidden, r.topk),
  };
}
