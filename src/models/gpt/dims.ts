import { MegahubError } from "../../errors.js";
import type { ModelDims } from "../arch.js";

/** Facts from args (Megatron) or config.json (HF) that shapes alone cannot give. */
export interface DimHints {
  readonly headDim?: number | undefined;
  readonly heads?: number | undefined;
  readonly kvHeads?: number | undefined;
}

/**
 * GPT dims from global tensor shapes (canonical Megatron names). The fused QKV has (heads + 2·groups)·headDim rows
 * and linear_proj heads·headDim columns, so one of headDim or heads must come from args/config (or a q_layernorm).
 */
export function detectGptDims(
  shape: (name: string) => readonly number[] | undefined,
  layers: number,
  hints: DimHints,
  where: string,
): ModelDims {
  const need = (name: string) => {
    const s = shape(name);
    if (!s) throw new MegahubError("MODEL", `missing ${name}`, { file: where });
    return s;
  };
  if (layers === 0) throw new MegahubError("MODEL", "no decoder.layers.N tensors: not a GPT model", { file: where });
  const [vocab, hidden] = need("embedding.word_embeddings.weight") as [number, number];
  const qkvRows = need("decoder.layers.0.self_attention.linear_qkv.weight")[0] as number;
  const projIn = need("decoder.layers.0.self_attention.linear_proj.weight")[1] as number;
  const ffn = need("decoder.layers.0.mlp.linear_fc2.weight")[1] as number;
  const qNorm = shape("decoder.layers.0.self_attention.q_layernorm.weight")?.[0];
  const headDim = hints.headDim ?? qNorm ?? (hints.heads ? projIn / hints.heads : undefined);
  if (!headDim || !Number.isInteger(headDim)) {
    throw new MegahubError("MODEL", "cannot tell the head size: args/config give neither kv_channels (head_dim) nor num_attention_heads", { file: where });
  }
  const heads = projIn / headDim;
  const kvHeads = (qkvRows / headDim - heads) / 2;
  if (!Number.isInteger(heads) || !Number.isInteger(kvHeads) || kvHeads < 1 || heads % kvHeads !== 0) {
    throw new MegahubError(
      "MODEL",
      `linear_qkv has ${qkvRows} rows and linear_proj ${projIn} columns: not (heads + 2·groups) × ${headDim} with whole query groups`,
      { file: where, tensor: "decoder.layers.0.self_attention.linear_qkv.weight" },
    );
  }
  const disagree = [
    hints.heads !== undefined && hints.heads !== heads ? `num_attention_heads ${hints.heads} (tensors: ${heads})` : "",
    hints.kvHeads !== undefined && hints.kvHeads !== kvHeads ? `query groups ${hints.kvHeads} (tensors: ${kvHeads})` : "",
  ].filter(Boolean);
  if (disagree.length > 0) throw new MegahubError("MODEL", `args/config disagree with the tensors: ${disagree.join(", ")}`, { file: where });
  return { hidden, vocab, ffn, heads, kvHeads, headDim, layers };
}

/**
 * Row indices of q, k and v inside the fused QKV: per query group g, the group's heads/groups query heads, then
 * its key head, then its value head (megatron-core-format.md §5.2).
 */
export function qkvRows(d: ModelDims): { q: number[]; k: number[]; v: number[] } {
  const perGroup = d.heads / d.kvHeads;
  const block = (perGroup + 2) * d.headDim;
  const q: number[] = [];
  const k: number[] = [];
  const v: number[] = [];
  for (let g = 0; g < d.kvHeads; g++) {
    const base = g * block;
    for (let j = 0; j < perGroup * d.headDim; j++) q.push(base + j);
    for (let j = 0; j < d.headDim; j++) k.push(base + perGroup * d.headDim + j);
    for (let j = 0; j < d.headDim; j++) v.push(base + (perGroup + 1) * d.headDim + j);
  }
  return { q, k, v };
}
