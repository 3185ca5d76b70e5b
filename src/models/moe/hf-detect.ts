import { MegahubError } from "../../errors.js";
import type { MoeDims, MoeFeature } from "../arch.js";
import type { HfNaming } from "../gpt/hf-tensors.js";
import type { MoeRouting } from "./dims.js";
import type { GptMoeDims } from "./config-dims.js";
import { routingOfHf } from "./hf-config.js";
import { MCORE_PARAMS, mixtralName } from "./spec.js";

export interface HfMoe {
  readonly dims: MoeDims;
  readonly features: Partial<Record<MoeFeature, boolean>>;
  readonly routing: MoeRouting;
  readonly naming: HfNaming;
  /** One expert's FFN when every layer is sparse and config.json names no dense width (Mixtral's intermediate_size is the experts'). */
  readonly denseFfn: number | undefined;
}

/**
 * The mixture-of-experts part of an HF directory (Mixtral's `block_sparse_moe.*`, Qwen-MoE's `mlp.gate` / `mlp.experts.E`),
 * or undefined for a dense one. Sparse layers are the ones with a router; `cfg` is what transformers reads from
 * config.json (config-dims.ts: decoder_sparse_step, mlp_only_layers, expert count, top-k), and must agree with them.
 */
export function detectHfMoe(shape: (name: string) => readonly number[] | undefined, cfg: GptMoeDims | undefined, mixtralConfig: boolean, layers: number, denseFfn: number | undefined, where: string): HfMoe | undefined {
  const mixtral = shape("model.layers.0.block_sparse_moe.gate.weight") !== undefined || mixtralConfig;
  const hfName = mixtral ? mixtralName : (n: string) => n;
  const at = (i: number, rest: string) => hfName(`model.layers.${i}.${rest}`);
  const sparse = Array.from({ length: layers }, (_, i) => shape(at(i, "mlp.gate.weight")) !== undefined);
  const first = sparse.indexOf(true);
  if (first < 0) return undefined;
  const list = (v: readonly boolean[]) => v.flatMap((x, i) => (x ? [i] : [])).join(", ") || "none";
  if (!cfg) throw new MegahubError("MODEL", `the tensors have routers in layers ${list(sparse)}, but config.json describes a dense model`, { file: where });
  if (cfg.sparse.join() !== sparse.join()) {
    throw new MegahubError("MODEL", `config.json makes layers ${list(cfg.sparse)} sparse, the tensors have routers in layers ${list(sparse)}`, { file: where });
  }
  const experts = shape(at(first, "mlp.gate.weight"))?.[0] as number;
  const down = shape(at(first, "mlp.experts.0.down_proj.weight"));
  if (!down) throw new MegahubError("MODEL", `layer ${first} has a router but no expert 0 (${at(first, "mlp.experts.0.down_proj.weight")})`, { file: where });
  const shared = shape(at(first, "mlp.shared_expert.down_proj.weight"));
  const gate = shape(at(first, "mlp.shared_expert_gate.weight"));
  if (cfg.experts !== experts) throw new MegahubError("MODEL", `config.json says ${cfg.experts} experts, the router has ${experts} rows`, { file: where });
  return {
    dims: { experts, ffn: down[1] as number, sharedFfn: (shared?.[1] as number | undefined) ?? 0, layers: sparse },
    features: { sharedExperts: shared !== undefined, sharedGate: gate !== undefined, expertBias: false },
    routing: routingOfHf(cfg),
    naming: { rules: MCORE_PARAMS, hfName },
    denseFfn: mixtral ? (down[1] as number) : denseFfn,
  };
}
