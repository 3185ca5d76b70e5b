import { MegahubError } from "../../errors.js";
import { OPENBA_GLOBAL_PARAMS, OPENBA_LAYER_PARAMS } from "./spec.js";
import type { Stack } from "./types.js";

export interface OpenbaDims {
  hidden: number;
  heads: number;
  kvChannels: number;
  ffn: number;
  encoderLayers: number;
  decoderLayers: number;
  /** Embedding rows (padded vocabulary). */
  vocab: number;
}

export interface ParamCounts {
  embedding: number;
  encoder: number;
  decoder: number;
  /** lm_head: bias only when tied (Megatron), weight + bias when untied (HF). */
  head: number;
  total: number;
}

/** Layer indices present for a stack, from names like `<prefix>layers.<i>.` */
export function layerIndices(names: Iterable<string>, pattern: RegExp): number[] {
  const found = new Set<number>();
  for (const n of names) {
    const m = pattern.exec(n);
    if (m) found.add(Number(m[1]));
  }
  const sorted = [...found].sort((a, b) => a - b);
  sorted.forEach((v, i) => {
    if (v !== i) {
      throw new MegahubError("MODEL", `layer indices are not 0..${sorted.length - 1}: found ${sorted.join(", ")}`);
    }
  });
  return sorted;
}

/**
 * Dims from global tensor shapes — never from args or config, which go stale in pruned lineages. kv_channels comes
 * from the rotary buffer when present (it is never pruned), else from `kvChannelsHint`; heads = P / kv_channels.
 */
export function detectDims(
  shape: (stack: Stack | null, layer: number, megatronParam: string) => readonly number[] | undefined,
  layers: { encoder: number; decoder: number },
  kvChannelsHint: number | undefined,
  where: string,
): OpenbaDims {
  const need = (stack: Stack | null, layer: number, p: string): readonly number[] => {
    const s = shape(stack, layer, p);
    if (!s) {
      throw new MegahubError("MODEL", `missing ${stack ? `${stack} layer ${layer} ` : ""}${p}`, { file: where });
    }
    return s;
  };
  const emb = need(null, 0, OPENBA_GLOBAL_PARAMS[0].megatron);
  if (emb.length !== 2) {
    throw new MegahubError("MODEL", `word embeddings must be 2-D, got [${emb.join(", ")}]`, { file: where });
  }
  const [vocab, hidden] = emb as [number, number];
  if (layers.encoder === 0 || layers.decoder === 0) {
    throw new MegahubError("MODEL", `found ${layers.encoder} encoder and ${layers.decoder} decoder layers; OpenBA has both`, { file: where });
  }
  const qkv = need("encoder", 0, "self_attention.query_key_value.weight");
  const P3 = qkv[0] as number;
  const invFreq = shape("encoder", 0, "self_attention.rotary_embed.inv_freq");
  const kvChannels = invFreq ? 2 * (invFreq[0] as number) : kvChannelsHint;
  if (!kvChannels) {
    throw new MegahubError("MODEL", "cannot tell kv_channels: no rotary inv_freq buffer and no kv_channels setting", { file: where });
  }
  if (P3 % (3 * kvChannels) !== 0) {
    throw new MegahubError("MODEL", `QKV has ${P3} rows, not a multiple of 3 × kv_channels (${kvChannels})`, { file: where });
  }
  const heads = P3 / (3 * kvChannels);
  const ffn = need("encoder", 0, "mlp.w1.weight")[0] as number;
  const dims: OpenbaDims = { hidden, heads, kvChannels, ffn, encoderLayers: layers.encoder, decoderLayers: layers.decoder, vocab };
  checkShapes(shape, dims, where);
  return dims;
}

/** The shape every parameter must have for the given dims. */
export function expectedShape(p: (typeof OPENBA_LAYER_PARAMS)[number] | (typeof OPENBA_GLOBAL_PARAMS)[number], d: OpenbaDims): number[] {
  const P = d.heads * d.kvChannels;
  return p.dims.map((dim, i) => {
    switch (dim) {
      case "hidden":
        return d.hidden;
      case "vocab":
        return d.vocab;
      case "ffn":
        return d.ffn;
      case "heads":
        return P * ("heads" in p ? p.heads.groups : 1);
      case "-":
        return i === 0 ? d.kvChannels / 2 : 0;
    }
  });
}

function checkShapes(
  shape: (stack: Stack | null, layer: number, megatronParam: string) => readonly number[] | undefined,
  d: OpenbaDims,
  where: string,
): void {
  for (const stack of ["encoder", "decoder"] as const) {
    const n = stack === "encoder" ? d.encoderLayers : d.decoderLayers;
    for (let i = 0; i < n; i++) {
      for (const p of OPENBA_LAYER_PARAMS) {
        if (!(p.stacks as readonly Stack[]).includes(stack)) continue;
        const s = shape(stack, i, p.megatron);
        if (!s) {
          if (p.hf === null) continue; // rotary buffers are optional
          throw new MegahubError("MODEL", `missing ${stack} layer ${i} ${p.megatron}`, { file: where });
        }
        const want = expectedShape(p, d);
        if (s.length !== want.length || s.some((v, k) => v !== want[k])) {
          throw new MegahubError(
            "MODEL",
            `${stack} layer ${i} ${p.megatron} is [${s.join(", ")}], expected [${want.join(", ")}] (hidden ${d.hidden}, ${d.heads} heads × ${d.kvChannels}, FFN ${d.ffn}); every layer must share the dims`,
            { file: where },
          );
        }
      }
    }
  }
  for (const p of OPENBA_GLOBAL_PARAMS) {
    const s = shape(null, 0, p.megatron);
    const want = expectedShape(p, d);
    if (!s || s.length !== want.length || s.some((v, k) => v !== want[k])) {
      throw new MegahubError("MODEL", `${p.megatron} is [${s?.join(", ") ?? "missing"}], expected [${want.join(", ")}]`, { file: where });
    }
  }
}

/** Parameter counts per part; `tiedHead` counts the output projection once (Megatron) or twice (HF). */
export function countParams(d: OpenbaDims, tiedHead: boolean): ParamCounts {
  let encoder = 0;
  let decoder = 0;
  for (const p of OPENBA_LAYER_PARAMS) {
    if (p.hf === null) continue;
    const n = expectedShape(p, d).reduce((a, b) => a * b, 1);
    if ((p.stacks as readonly Stack[]).includes("encoder")) encoder += n * d.encoderLayers;
    if ((p.stacks as readonly Stack[]).includes("decoder")) decoder += n * d.decoderLayers;
  }
  encoder += 2 * d.hidden;
  decoder += 2 * d.hidden;
  const embedding = d.vocab * d.hidden;
  const head = d.vocab + (tiedHead ? 0 : embedding);
  return { embedding, encoder, decoder, head, total: embedding + encoder + decoder + head };
}
