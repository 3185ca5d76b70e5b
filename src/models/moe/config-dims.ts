/**
 * The mixture-of-experts part of an HF MixtralConfig / Qwen2MoeConfig / Qwen3MoeConfig, read as transformers 5.18's
 * modeling code reads it (models/{mixtral,qwen2_moe,qwen3_moe}), for the ONNX graph (onnx-moe.ts) and the dims
 * check of models/gpt/config-dims.ts:
 *
 * - Mixtral: every layer is sparse; `num_local_experts` (alias `num_experts`) experts of width `intermediate_size`; top-k
 *   `num_experts_per_tok` (class default 2), always renormalised (MixtralTopKRouter divides by the top-k sum).
 * - Qwen2-MoE / Qwen3-MoE: layer i is sparse when i ∉ `mlp_only_layers` (default []), `num_experts` (Qwen3-MoE:
 *   alias `num_local_experts`, the spelling 5.18 saves) > 0 and
 *   (i + 1) % `decoder_sparse_step` (default 1) == 0; experts of width `moe_intermediate_size`, dense layers of
 *   `intermediate_size`; top-k class defaults 4 / 8; renormalised only with `norm_topk_prob` (default false).
 *   Qwen2-MoE adds a shared expert of width `shared_expert_intermediate_size` behind a sigmoid gate.
 *
 * Sizes that shape tensors (expert count and widths) must be in config.json, as for the dense fields: a class
 * default there is a guess the tensors would contradict. Routing fields take the class defaults, as transformers does.
 */

export const MOE_FAMILIES = {
  mixtral: "MixtralForCausalLM",
  qwen2_moe: "Qwen2MoeForCausalLM",
  qwen3_moe: "Qwen3MoeForCausalLM",
} as const;
export type MoeFamily = keyof typeof MOE_FAMILIES;

export interface GptMoeDims {
  readonly experts: number;
  /** num_experts_per_tok. */
  readonly topk: number;
  /** Divide the top-k probabilities by their sum (Mixtral always; Qwen-MoE with norm_topk_prob). */
  readonly renormalize: boolean;
  /** One expert's FFN width. */
  readonly expertFfn: number;
  /** The shared expert's FFN width (Qwen2-MoE), 0 when there is none. */
  readonly sharedFfn: number;
  /** Per layer: true when the layer is a sparse MoE block. */
  readonly sparse: readonly boolean[];
}

type Config = Readonly<Record<string, unknown>>;

const isMoeFamily = (f: string): f is MoeFamily => Object.hasOwn(MOE_FAMILIES, f);
const int = (c: Config, key: string): number | undefined => {
  const v = c[key];
  return typeof v === "number" && Number.isSafeInteger(v) ? v : undefined;
};

/** The MoE dims of a config, or undefined for a dense family or a Qwen-MoE config without sparse layers. */
export function moeConfigDims(family: string, c: Config, layers: number, problems: string[]): GptMoeDims | undefined {
  if (!isMoeFamily(family)) return undefined;
  const need = (key: string, min = 1): number => {
    const v = int(c, key);
    if (v === undefined || v < min) problems.push(`config.json lacks ${key}${min === 0 ? " (an integer ≥ 0)" : ""}`);
    return v ?? 0;
  };
  const mixtral = family === "mixtral";
  const experts = expertCount(family, c, problems, need);
  const topk = int(c, "num_experts_per_tok") ?? { mixtral: 2, qwen2_moe: 4, qwen3_moe: 8 }[family];
  if (topk < 1 || (experts > 0 && topk > experts)) problems.push(`num_experts_per_tok ${topk} must be between 1 and the ${experts} experts`);
  const sparse = mixtral ? new Array<boolean>(layers).fill(true) : qwenSparseLayers(c, layers, experts, problems);
  if (!sparse.includes(true)) return undefined;
  return {
    experts,
    topk,
    renormalize: mixtral || c.norm_topk_prob === true,
    expertFfn: need(mixtral ? "intermediate_size" : "moe_intermediate_size"),
    sharedFfn: family === "qwen2_moe" ? need("shared_expert_intermediate_size") : 0,
    sparse,
  };
}

/**
 * The expert count. MixtralConfig and Qwen3MoeConfig alias num_experts to num_local_experts (attribute_map), and
 * 5.18 saves the latter, so either spelling is read; Qwen2MoeConfig has no alias and reads num_experts alone.
 */
function expertCount(family: MoeFamily, c: Config, problems: string[], need: (key: string, min?: number) => number): number {
  const min = family === "mixtral" ? 1 : 0;
  if (family === "qwen2_moe") return need("num_experts", min);
  const local = int(c, "num_local_experts");
  const plain = int(c, "num_experts");
  if (local !== undefined && plain !== undefined && local !== plain) {
    problems.push(`num_local_experts ${local} and num_experts ${plain} disagree (the config class treats them as one field)`);
  }
  return need(local !== undefined || plain === undefined ? "num_local_experts" : "num_experts", min);
}

/** Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer's rule for which layers get a sparse block. */
function qwenSparseLayers(c: Config, layers: number, experts: number, problems: string[]): boolean[] {
  const step = c.decoder_sparse_step === undefined ? 1 : int(c, "decoder_sparse_step");
  // transformers takes (i + 1) % step: 0 raises ZeroDivisionError, a negative step would make odd patterns.
  if (step === undefined || step < 1) {
    problems.push(`decoder_sparse_step ${JSON.stringify(c.decoder_sparse_step)} must be a positive integer`);
    return new Array<boolean>(layers).fill(false);
  }
  const raw = c.mlp_only_layers ?? [];
  const only = Array.isArray(raw) ? raw : [];
  if (!Array.isArray(raw)) problems.push("mlp_only_layers must be a list of layer indices");
  return Array.from({ length: layers }, (_, i) => !only.includes(i) && experts > 0 && (i + 1) % step === 0);
}

/** Module prefixes (no `.weight`) of one sparse block. */
export interface MoeTensorNames {
  readonly router: string;
  readonly gate: (expert: number) => string;
  readonly up: (expert: number) => string;
  readonly down: (expert: number) => string;
  /** Qwen-MoE's shared-expert MLP and its one-row gate (present in the dir only for Qwen2-MoE). */
  readonly shared?: string;
  readonly sharedGate?: string;
}

/** HF tensor names of layer i's sparse block: Mixtral's block_sparse_moe.* or Qwen-MoE's mlp.*. */
export function moeTensorNames(family: string, layer: number): MoeTensorNames {
  const p = `model.layers.${layer}.`;
  if (family === "mixtral") {
    const e = (j: number) => `${p}block_sparse_moe.experts.${j}`;
    return { router: `${p}block_sparse_moe.gate`, gate: (j: number) => `${e(j)}.w1`, up: (j: number) => `${e(j)}.w3`, down: (j: number) => `${e(j)}.w2` };
  }
  const e = (j: number) => `${p}mlp.experts.${j}`;
  return {
    router: `${p}mlp.gate`,
    gate: (j: number) => `${e(j)}.gate_proj`,
    up: (j: number) => `${e(j)}.up_proj`,
    down: (j: number) => `${e(j)}.down_proj`,
    shared: `${p}mlp.shared_expert`,
    sharedGate: `${p}mlp.shared_expert_gate`,
  };
}

/** Every tensor of layer i's sparse block, with its shape ([out, in], as nn.Linear stores it). */
export function expectedMoeLayerTensors(family: string, m: GptMoeDims, hidden: number, layer: number): [string, number[]][] {
  const n = moeTensorNames(family, layer);
  const out: [string, number[]][] = [[`${n.router}.weight`, [m.experts, hidden]]];
  for (let j = 0; j < m.experts; j++) {
    out.push([`${n.gate(j)}.weight`, [m.expertFfn, hidden]], [`${n.up(j)}.weight`, [m.expertFfn, hidden]], [`${n.down(j)}.weight`, [hidden, m.expertFfn]]);
  }
  if (m.sharedFfn > 0 && n.shared !== undefined && n.sharedGate !== undefined) {
    out.push(
      [`${n.shared}.gate_proj.weight`, [m.sharedFfn, hidden]],
      [`${n.shared}.up_proj.weight`, [m.sharedFfn, hidden]],
      [`${n.shared}.down_proj.weight`, [hidden, m.sharedFfn]],
      [`${n.sharedGate}.weight`, [1, hidden]],
    );
  }
  return out;
}

/**
 * Parameters per token: all of them, less the experts a token is not routed to (top-k of E in each sparse layer).
 * `total` counts every tensor of the dir.
 */
export function moeActiveParams(m: GptMoeDims, hidden: number, total: number): number {
  const perExpert = 3 * hidden * m.expertFfn;
  return total - m.sparse.filter(Boolean).length * (m.experts - m.topk) * perExpert;
}

/** One line for verify's notes: the routing the graph ran and the parameters a token uses of all the dir holds. */
export function moeNote(m: GptMoeDims, hidden: number, tensors: ReadonlyMap<string, { readonly shape: readonly number[] }>): string {
  let total = 0;
  for (const t of tensors.values()) total += t.shape.reduce((a, b) => a * b, 1);
  const sparse = m.sparse.filter(Boolean).length;
  const shared = m.sharedFfn > 0 ? `, gated shared expert FFN ${m.sharedFfn}` : "";
  const rule = m.renormalize ? "softmax → top-k → renormalised" : "softmax → top-k, not renormalised";
  const active = moeActiveParams(m, hidden, total);
  return (
    `mixture of experts: ${m.experts} experts × FFN ${m.expertFfn}, top-${m.topk} (${rule}) in ${sparse} of ${m.sparse.length} layers${shared}; ` +
    `${active.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} parameters active per token`
  );
}
