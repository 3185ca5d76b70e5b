/**
 * The shape of a declarative architecture spec: which parameters exist, how Megatron names map to HF names, and how
 * tensor parallelism splits each one. Converters, reshard and pruning read these tables; adding an architecture is
 * adding a table.
 */
export type TpKind = "column" | "row" | "replicated" | "vocab";
export type Stack = "encoder" | "decoder";

/** Rows grouped per head: [n, 3, d] for fused QKV, [n, 2, d] for fused KV, [n, 1, d] for a plain projection. */
export interface HeadLayout {
  readonly groups: number;
}

export interface LayerParam {
  /** Name under `language_model.<stack>.layers.<i>.` in Megatron. */
  readonly megatron: string;
  /** Name under `<stack>.block.<i>.` in HF, or null when HF drops it (rotary buffers). */
  readonly hf: string | null;
  readonly tp: TpKind;
  readonly stacks: readonly Stack[];
  /** HF fuses several Megatron tensors along dim 0: this one is part `index` of `of`. */
  readonly fuse?: { readonly index: number; readonly of: number };
  /** Output rows (dim 0) or input columns (dim 1, for row-parallel) grouped per attention head. */
  readonly heads?: HeadLayout;
  /** What indexes each dim: "hidden", "heads", "ffn", or "-" when a dim is not pruned (inv_freq). */
  readonly dims: readonly ("hidden" | "heads" | "ffn" | "-")[];
}

export interface GlobalParam {
  readonly megatron: string;
  /** HF names this tensor becomes (the tied embedding becomes two). */
  readonly hf: readonly string[];
  readonly tp: TpKind;
  readonly dims: readonly ("hidden" | "vocab")[];
}

export interface ArchSpec {
  readonly name: string;
  readonly layerPrefix: (stack: Stack, layer: number) => { megatron: string; hf: string };
  readonly layerParams: readonly LayerParam[];
  readonly globalParams: readonly GlobalParam[];
}
