import type { ExpertLayout, ParamRule, SpecFlavour } from "../arch.js";
import { GPT_PARAMS } from "../gpt/spec.js";

const L = "decoder.layers.{layer}.";
const H = "model.layers.{layer}.";

/**
 * Megatron-Core MoELayer parameters (megatron-core-format.md §1.4, §2.1, §6.2) in registration order: the router,
 * the experts (SequentialMLP's `local_experts.E` modules, or TEGroupedMLP's `weightE` parameters), the shared experts.
 * Names carry the GLOBAL expert index; legacy files use the local one (global = ep_rank · E_local + local).
 * HF names are Qwen2-MoE / Qwen3-MoE's; Mixtral's are derived by mixtralName.
 */
export const MOE_PARAMS = [
  { megatron: [`${L}mlp.router.weight`], hf: `${H}mlp.gate.weight`, tp: "replicated", dims: ["experts", "hidden"], layers: "moe" },
  // DeepSeek-V3 style expert-bias routing: an fp32 buffer no Mixtral / Qwen-MoE class has
  { megatron: [`${L}mlp.router.expert_bias`], hf: null, tp: "replicated", dims: ["experts"], layers: "moe", feature: "expertBias" },
  {
    megatron: [`${L}mlp.experts.local_experts.{expert}.linear_fc1.weight`],
    grouped: `${L}mlp.experts.linear_fc1.weight{expert}`,
    hf: { split: [`${H}mlp.experts.{expert}.gate_proj.weight`, `${H}mlp.experts.{expert}.up_proj.weight`], by: "parts" },
    // expert tensor parallelism (= TP here) splits each expert like a dense fc1: [gate_r; up_r] per rank
    tp: { kind: "column-parts", parts: 2 },
    dims: ["moeFfn2", "hidden"],
    layers: "moe",
  },
  {
    megatron: [`${L}mlp.experts.local_experts.{expert}.linear_fc2.weight`],
    grouped: `${L}mlp.experts.linear_fc2.weight{expert}`,
    hf: `${H}mlp.experts.{expert}.down_proj.weight`,
    tp: "row",
    dims: ["hidden", "moeFfn"],
    layers: "moe",
  },
  // SharedExpertMLP: its own gate_weight registers before its child linears
  { megatron: [`${L}mlp.shared_experts.gate_weight`], hf: `${H}mlp.shared_expert_gate.weight`, tp: "replicated", dims: ["one", "hidden"], layers: "moe", feature: "sharedGate" },
  {
    megatron: [`${L}mlp.shared_experts.linear_fc1.weight`],
    hf: { split: [`${H}mlp.shared_expert.gate_proj.weight`, `${H}mlp.shared_expert.up_proj.weight`], by: "parts" },
    tp: { kind: "column-parts", parts: 2 },
    dims: ["sharedFfn2", "hidden"],
    layers: "moe",
    feature: "sharedExperts",
  },
  { megatron: [`${L}mlp.shared_experts.linear_fc2.weight`], hf: `${H}mlp.shared_expert.down_proj.weight`, tp: "row", dims: ["hidden", "sharedFfn"], layers: "moe", feature: "sharedExperts" },
] as const satisfies readonly ParamRule[];

/** Every Megatron-Core GPTModel parameter, dense and MoE: expand() keeps the MoE rules out of a dense model. */
export const MCORE_PARAMS: readonly ParamRule[] = [...GPT_PARAMS, ...MOE_PARAMS];

/** Mixtral's on-disk names for the Qwen-MoE names of the table (transformers' conversion_mapping reads them). */
export function mixtralName(qwen: string): string {
  return qwen
    .replace(/\.mlp\.gate\.weight$/, ".block_sparse_moe.gate.weight")
    .replace(/\.mlp\.experts\.(\d+)\.gate_proj\./, ".block_sparse_moe.experts.$1.w1.")
    .replace(/\.mlp\.experts\.(\d+)\.up_proj\./, ".block_sparse_moe.experts.$1.w3.")
    .replace(/\.mlp\.experts\.(\d+)\.down_proj\./, ".block_sparse_moe.experts.$1.w2.");
}

/**
 * Modules of one MoE layer whose `_extra_state` a Megatron-Core load expects (every linear of the local spec and every
 * TE module; the router and SharedExpertMLP themselves have none). Names relative to `decoder.layers.N.`.
 */
export function moeLayerExtraState(layout: ExpertLayout, flavour: SpecFlavour, localExperts: number, shared: boolean): string[] {
  const out = ["self_attention.linear_proj", "self_attention.linear_qkv"];
  if (flavour === "te") out.push("self_attention.core_attention", "pre_mlp_layernorm");
  if (layout === "grouped") out.push("mlp.experts.linear_fc1", "mlp.experts.linear_fc2");
  else for (let j = 0; j < localExperts; j++) out.push(`mlp.experts.local_experts.${j}.linear_fc1`, `mlp.experts.local_experts.${j}.linear_fc2`);
  if (shared) out.push("mlp.shared_experts.linear_fc1", "mlp.shared_experts.linear_fc2");
  return out;
}

/**
 * The same modules in torch_dist, where SequentialMLP and TEGroupedMLP save alike (experts.py): `perExpert` modules
 * get one `_extra_state` per (layer, global expert) on the expert axis, the others one per layer. The grouped
 * layout's list names each expert module once, which is the torch_dist shape.
 */
export function moeLayerDistExtraState(flavour: SpecFlavour, shared: boolean): { modules: string[]; perExpert: string[] } {
  const all = moeLayerExtraState("grouped", flavour, 0, shared);
  const experts = "mlp.experts.";
  return {
    modules: all.filter((m) => !m.startsWith(experts)),
    perExpert: all.filter((m) => m.startsWith(experts)).map((m) => `mlp.experts.experts.${m.slice(experts.length)}`),
  };
}

/** A legacy key's expert index and its pattern (`{expert}` in place of the local index), or undefined for a non-expert key. */
export function expertKey(key: string): { pattern: string; local: number } | undefined {
  const seq = /^(.*\.mlp\.experts\.local_experts\.)(\d+)(\..+)$/.exec(key);
  if (seq) return { pattern: `${seq[1]}{expert}${seq[3]}`, local: Number(seq[2]) };
  const grouped = /^(.*\.mlp\.experts\.linear_fc[12]\.(?:weight|bias))(\d+)$/.exec(key);
  if (grouped) return { pattern: `${grouped[1]}{expert}`, local: Number(grouped[2]) };
  return undefined;
}
