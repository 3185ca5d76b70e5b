/**
 * The declarative shape of a Megatron-Core architecture: one table of parameters (Megatron spellings with aliases,
 * where each goes in HF layout, how tensor parallelism lays it out, what indexes each dim). Readers, writers,
 * reshard and inspect walk the table; adding an architecture is adding a table and a small dims detector.
 */

/** How tensor parallelism lays a parameter across ranks in legacy checkpoints (torch_dist stores global tensors). */
export type TpRule =
  | "replicated"
  | "column" // rows split contiguously (fused QKV too: its global row order is per query group, so rank order restores it)
  | "row" // columns (dim 1) split
  | "vocab" // rows split, padded to Megatron's vocabulary multiple
  | { readonly kind: "column-parts"; readonly parts: number }; // per rank [gate_r; up_r] → global [gate; up]

/** Where a parameter goes in HF layout. */
export type HfLayout =
  | string
  | null // no HF counterpart: the HF targets refuse a model that has it (see ArchFeatures)
  | { readonly split: readonly string[]; readonly by: "parts" | "qkv" };

/** What indexes a tensor dim: drives shape checks and parameter counts. */
export type DimLabel =
  | "hidden"
  | "vocab"
  | "ffn"
  | "ffn2"
  | "qkv"
  | "qHeads"
  | "headDim"
  // mixture of experts (ModelDims.moe): router rows, one expert's FFN, the shared experts' FFN, the shared gate's one row
  | "experts"
  | "moeFfn"
  | "moeFfn2"
  | "sharedFfn"
  | "sharedFfn2"
  | "one";

/** Optional parts of a dense model, detected from which tensors exist. */
export type DenseFeature = "qkvBias" | "qkNorm" | "linearBias" | "normBias" | "untied";
/** Optional parts of mixture-of-experts layers (absent = false, so dense models never name them). */
export type MoeFeature = "sharedExperts" | "sharedGate" | "expertBias";
export type Feature = DenseFeature | MoeFeature;

export interface ParamRule {
  /** Megatron spellings; the first is the local spec's (canonical), the others Transformer Engine's. `{layer}` marks a layer. */
  readonly megatron: readonly [string, ...string[]];
  readonly hf: HfLayout;
  readonly tp: TpRule;
  readonly dims: readonly DimLabel[];
  /** Present only when the model has this feature. */
  readonly feature?: Feature;
  /** Mixture of experts: only in dense layers, or only in MoE layers (absent: every layer). */
  readonly layers?: "dense" | "moe";
  /** The Transformer Engine spelling (megatron[1]) applies in dense layers only: MoE layers keep a separate norm (§2.1). */
  readonly teDenseOnly?: true;
  /** Per-expert rules (`{expert}` in the name): TEGroupedMLP's spelling (`…linear_fc1.weight{expert}`). */
  readonly grouped?: string;
}

/** Mixture-of-experts dims: the expert count, one expert's FFN, the shared experts' FFN (0: none), which layers are MoE. */
export interface MoeDims {
  readonly experts: number;
  readonly ffn: number;
  readonly sharedFfn: number;
  /** Per global layer: true when the layer is an MoE layer (Megatron's moe_layer_freq pattern). */
  readonly layers: readonly boolean[];
}

/** Generic model dims, the same for every architecture. */
export interface ModelDims {
  readonly hidden: number;
  /** Embedding rows (padded vocabulary). */
  readonly vocab: number;
  readonly ffn: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly layers: number;
  /** Mixture of experts; absent for dense models. */
  readonly moe?: MoeDims | undefined;
}

export type Features = Readonly<Record<DenseFeature, boolean>> & Readonly<Partial<Record<MoeFeature, boolean>>>;

/** How MoE experts are stored: SequentialMLP (`local_experts.E.linear_fc1.weight`) or TEGroupedMLP (`linear_fc1.weightE`). */
export type ExpertLayout = "sequential" | "grouped";

/** Which spelling a checkpoint used: Megatron-Core's local modules or Transformer Engine's fused ones. */
export type SpecFlavour = "local" | "te";

export const LAYER = "{layer}";
export const EXPERT = "{expert}";

/** The concrete name of a spelling for one layer (and expert). */
export function nameAt(pattern: string, layer: number, expert?: number): string {
  const named = pattern.replace(LAYER, String(layer));
  return expert === undefined ? named : named.replace(EXPERT, String(expert));
}

const moeDims = (d: ModelDims): MoeDims => {
  if (!d.moe) throw new Error("a mixture-of-experts dim of a dense model");
  return d.moe;
};

/** The size of a labelled dim. */
export function dimSize(label: DimLabel, d: ModelDims): number {
  switch (label) {
    case "hidden":
      return d.hidden;
    case "vocab":
      return d.vocab;
    case "ffn":
      return d.ffn;
    case "ffn2":
      return 2 * d.ffn;
    case "qkv":
      return (d.heads + 2 * d.kvHeads) * d.headDim;
    case "qHeads":
      return d.heads * d.headDim;
    case "headDim":
      return d.headDim;
    case "experts":
      return moeDims(d).experts;
    case "moeFfn":
      return moeDims(d).ffn;
    case "moeFfn2":
      return 2 * moeDims(d).ffn;
    case "sharedFfn":
      return moeDims(d).sharedFfn;
    case "sharedFfn2":
      return 2 * moeDims(d).sharedFfn;
    case "one":
      return 1;
  }
}

export interface ExpandedParam {
  readonly rule: ParamRule;
  /** The canonical (local spec) name. */
  readonly name: string;
  /** The spelling the given flavour writes. */
  readonly written: string;
  readonly layer: number | undefined;
  /** The global expert index of a per-expert parameter. */
  readonly expert?: number | undefined;
  /** The written spelling with its `{layer}` / `{expert}` placeholders (writers renumber with it). */
  readonly pattern: string;
  readonly shape: readonly number[];
}

/**
 * Every parameter a model with these dims and features has, in module registration order (the one stack/layer loop).
 * MoE layers take the rules marked "moe" instead of the dense MLP's; per-expert rules expand over the global experts
 * (expert-major for SequentialMLP's modules, parameter-major for TEGroupedMLP's weight0…weightN).
 */
export function expand(rules: readonly ParamRule[], d: ModelDims, features: Features, flavour: SpecFlavour = "local", experts: ExpertLayout = "sequential"): ExpandedParam[] {
  const out: ExpandedParam[] = [];
  const spelling = (r: ParamRule, moeLayer = false) => {
    if (experts === "grouped" && r.grouped !== undefined) return r.grouped;
    return flavour === "te" && r.megatron[1] !== undefined && !(moeLayer && r.teDenseOnly) ? r.megatron[1] : r.megatron[0];
  };
  const shape = (r: ParamRule) => r.dims.map((l) => dimSize(l, d));
  const globalsFirst = rules.filter((r) => !r.megatron[0].includes(LAYER) && r.megatron[0].startsWith("embedding."));
  const perLayer = rules.filter((r) => r.megatron[0].includes(LAYER));
  const globalsLast = rules.filter((r) => !r.megatron[0].includes(LAYER) && !globalsFirst.includes(r));
  const has = (r: ParamRule) => r.feature === undefined || features[r.feature] === true;
  const global = (r: ParamRule): ExpandedParam => ({ rule: r, name: r.megatron[0], written: spelling(r), layer: undefined, pattern: spelling(r), shape: shape(r) });
  for (const r of globalsFirst.filter(has)) out.push(global(r));
  for (let i = 0; i < d.layers; i++) {
    const moe = d.moe?.layers[i] === true;
    const mine = perLayer.filter((r) => has(r) && (r.layers === undefined || r.layers === (moe ? "moe" : "dense")));
    const one = (r: ParamRule, e?: number): ExpandedParam => {
      const pattern = spelling(r, moe);
      return { rule: r, name: nameAt(r.megatron[0], i, e), written: nameAt(pattern, i, e), layer: i, ...(e === undefined ? {} : { expert: e }), pattern, shape: shape(r) };
    };
    const perExpert = mine.filter((r) => r.megatron[0].includes(EXPERT));
    for (const r of mine) {
      if (!perExpert.includes(r)) out.push(one(r));
      else if (r === perExpert[0]) {
        const n = d.moe?.experts ?? 0;
        if (experts === "grouped") for (const x of perExpert) for (let e = 0; e < n; e++) out.push(one(x, e));
        else for (let e = 0; e < n; e++) for (const x of perExpert) out.push(one(x, e));
      }
    }
  }
  for (const r of globalsLast.filter(has)) out.push(global(r));
  return out;
}

/** Parameter counts: embedding, the layers, the final norm and head; a tied head counts once. */
export function countModelParams(rules: readonly ParamRule[], d: ModelDims, features: Features): { embedding: number; layers: number; head: number; total: number } {
  let embedding = 0;
  let layers = 0;
  let head = 0;
  for (const p of expand(rules, d, features)) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    if (p.layer !== undefined) layers += n;
    else if (p.rule.tp === "vocab" && p.name.startsWith("embedding.")) embedding += n;
    else head += n;
  }
  return { embedding, layers, head, total: embedding + layers + head };
}
