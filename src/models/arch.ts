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
export type DimLabel = "hidden" | "vocab" | "ffn" | "ffn2" | "qkv" | "qHeads" | "headDim";

/** Optional parts of a model, detected from which tensors exist. */
export type Feature = "qkvBias" | "qkNorm" | "linearBias" | "normBias" | "untied";

export interface ParamRule {
  /** Megatron spellings; the first is the local spec's (canonical), the others Transformer Engine's. `{layer}` marks a layer. */
  readonly megatron: readonly [string, ...string[]];
  readonly hf: HfLayout;
  readonly tp: TpRule;
  readonly dims: readonly DimLabel[];
  /** Present only when the model has this feature. */
  readonly feature?: Feature;
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
}

export type Features = Readonly<Record<Feature, boolean>>;

/** Which spelling a checkpoint used: Megatron-Core's local modules or Transformer Engine's fused ones. */
export type SpecFlavour = "local" | "te";

export const LAYER = "{layer}";

/** The concrete name of a spelling for one layer. */
export function nameAt(pattern: string, layer: number): string {
  return pattern.replace(LAYER, String(layer));
}

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
  }
}

export interface ExpandedParam {
  readonly rule: ParamRule;
  /** The canonical (local spec) name. */
  readonly name: string;
  /** The spelling the given flavour writes. */
  readonly written: string;
  readonly layer: number | undefined;
  readonly shape: readonly number[];
}

/** Every parameter a model with these dims and features has, in module registration order (the one stack/layer loop). */
export function expand(rules: readonly ParamRule[], d: ModelDims, features: Features, flavour: SpecFlavour = "local"): ExpandedParam[] {
  const out: ExpandedParam[] = [];
  const spelling = (r: ParamRule) => (flavour === "te" && r.megatron[1] !== undefined ? r.megatron[1] : r.megatron[0]);
  const shape = (r: ParamRule) => r.dims.map((l) => dimSize(l, d));
  const globalsFirst = rules.filter((r) => !r.megatron[0].includes(LAYER) && r.megatron[0].startsWith("embedding."));
  const perLayer = rules.filter((r) => r.megatron[0].includes(LAYER));
  const globalsLast = rules.filter((r) => !r.megatron[0].includes(LAYER) && !globalsFirst.includes(r));
  const has = (r: ParamRule) => r.feature === undefined || features[r.feature];
  for (const r of globalsFirst.filter(has)) out.push({ rule: r, name: r.megatron[0], written: spelling(r), layer: undefined, shape: shape(r) });
  for (let i = 0; i < d.layers; i++) {
    for (const r of perLayer.filter(has)) {
      out.push({ rule: r, name: nameAt(r.megatron[0], i), written: nameAt(spelling(r), i), layer: i, shape: shape(r) });
    }
  }
  for (const r of globalsLast.filter(has)) out.push({ rule: r, name: r.megatron[0], written: spelling(r), layer: undefined, shape: shape(r) });
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
