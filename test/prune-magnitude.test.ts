import { describe, expect, it } from "vitest";
import type { GlobalModel } from "../src/ops/openba/global-model.js";
import { megatronKey } from "../src/ops/openba/global-model.js";
import {
  applyPruneMasks,
  magnitudeMasks,
  masksFromManifest,
  masksManifest,
  Prng,
  randomMasks,
  resolvePrune,
  topK,
} from "../src/ops/prune/structure.js";
import { bytesSource } from "../src/io/byte-source.js";
import { expectedShape, type OpenbaDims } from "../src/models/openba/dims.js";
import { OPENBA_GLOBAL_PARAMS, OPENBA_LAYER_PARAMS } from "../src/models/openba/spec.js";
import type { Stack } from "../src/models/openba/types.js";
import { readTensor, type Recipe } from "../src/plan/recipe.js";
import { recipeBytes } from "./prune-helpers.js";

/** hidden 6, 4 heads × 2 (P 8), FFN 5, 1 encoder + 2 decoder layers, 8 vocab rows. */
const DIMS: OpenbaDims = { hidden: 6, heads: 4, kvChannels: 2, ffn: 5, encoderLayers: 1, decoderLayers: 2, vocab: 8 };

type Fill = (stack: Stack | null, layer: number, param: string, row: number, col: number) => number;

/** An in-memory F32 GlobalModel whose every value comes from `fill` (row/col of the 1-D or 2-D tensor). */
function model(fill: Fill, dims = DIMS): GlobalModel {
  const tensors = new Map<string, Recipe>();
  const make = (key: string, shape: number[], f: (r: number, c: number) => number) => {
    const [rows, cols] = shape.length === 2 ? (shape as [number, number]) : [shape[0] as number, 1];
    const data = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) data[r * cols + c] = f(r, c);
    tensors.set(key, readTensor(bytesSource(new Uint8Array(data.buffer), key), 0, "F32", shape, key));
  };
  for (const p of OPENBA_GLOBAL_PARAMS) make(p.megatron, expectedShape(p, dims), (r, c) => fill(null, 0, p.megatron, r, c));
  for (const stack of ["encoder", "decoder"] as const) {
    for (let i = 0; i < (stack === "encoder" ? dims.encoderLayers : dims.decoderLayers); i++) {
      for (const p of OPENBA_LAYER_PARAMS) {
        if ((p.stacks as readonly Stack[]).includes(stack)) make(megatronKey(stack, i, p.megatron), expectedShape(p, dims), (r, c) => fill(stack, i, p.megatron, r, c));
      }
    }
  }
  return { dims, tensors };
}

async function values(m: GlobalModel, key: string): Promise<number[]> {
  const r = m.tensors.get(key) as Recipe;
  const b = await recipeBytes(r);
  return Array.from(new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4));
}

describe("magnitude pruning keeps the largest norms", () => {
  // Small everywhere, except where the test plants large weights it knows about.
  const planted: Fill = (stack, layer, p, r, c) => {
    const big = 10;
    // Encoder heads 1 and 3: large QKV rows (rows 3·2·h .. 3·2·h+5).
    if (stack === "encoder" && p === "self_attention.query_key_value.weight" && [1, 3].includes(Math.floor(r / 6))) return big;
    // Decoder layer 0, head 0: only its CROSS-attention key_value rows are large — self- and cross-attention share
    // the head mask, so head 0 must win there. Head 2: large output columns (dense [h, P], columns 4..5).
    if (stack === "decoder" && layer === 0 && p === "inter_attention.key_value.weight" && Math.floor(r / 4) === 0) return big;
    if (stack === "decoder" && layer === 0 && p === "self_attention.dense.weight" && Math.floor(c / 2) === 2) return big;
    // Decoder layer 1: heads 2 and 3 by their cross-attention query rows.
    if (stack === "decoder" && layer === 1 && p === "inter_attention.query.weight" && Math.floor(r / 2) >= 2) return big;
    // FFN: channel 4 by its w2 column everywhere; channel 1 by its w1 row, channel 0 by its w3 row.
    if (p === "mlp.w2.weight" && c === 4) return big;
    if (p === "mlp.w1.weight" && r === 1) return big;
    if (p === "mlp.w3.weight" && r === 0) return 0.5 * big;
    // Hidden: channel 5 read by the embedding, channel 2 written by every w2 (rows), channel 3 nowhere large.
    if (p === OPENBA_GLOBAL_PARAMS[0].megatron && c === 5) return big;
    if (p === "mlp.w2.weight" && r === 2) return big;
    // LayerNorms and biases are not matrices: a huge LayerNorm weight on channel 3 must not count.
    if (p.endsWith("layernorm.weight") && r === 3) return 1000;
    return 0.01 * (((r * 7 + c * 3) % 5) + 1);
  };

  it("picks the heads, FFN channels and hidden channels with the largest L2 norms", async () => {
    const m = model(planted);
    const resolved = resolvePrune(m.dims, { heads: 2, ffn: 3, hidden: 2 });
    const masks = await magnitudeMasks(m, resolved);
    expect(masks.hidden).toEqual([2, 5]);
    const byLayer = Object.fromEntries(masks.layers.map((l) => [`${l.stack}${l.layer}`, l]));
    expect(byLayer.encoder0?.heads).toEqual([1, 3]);
    expect(byLayer.decoder0?.heads).toEqual([0, 2]);
    expect(byLayer.decoder1?.heads).toEqual([2, 3]);
    for (const l of masks.layers) expect(l.ffn, `${l.stack}${l.layer}`).toEqual([0, 1, 4]);
  });

  it("counts only kept layers toward the hidden norm", async () => {
    // Hidden channel 0 is large only in decoder layer 1's w1 columns: dropping that layer must drop its claim.
    const fill: Fill = (stack, layer, p, r, c) => (stack === "decoder" && layer === 1 && p === "mlp.w1.weight" && c === 0 ? 50 : 0.01 * (((r + c) % 3) + 1));
    const m = model(fill);
    const kept = await magnitudeMasks(m, resolvePrune(m.dims, { hidden: 1 }));
    expect(kept.hidden).toEqual([0]);
    const dropped = await magnitudeMasks(m, resolvePrune(m.dims, { hidden: 1, dropDecoder: [1] }));
    expect(dropped.hidden).not.toEqual([0]);
  });

  it("ties keep the lower index; NaN counts as the smallest", () => {
    expect(topK(Float64Array.from([1, 3, 3, 2]), 2)).toEqual([1, 2]);
    expect(topK(Float64Array.from([NaN, 0, 5]), 2)).toEqual([1, 2]);
  });
});

describe("applying masks follows OpenBA's prune_model, driven by the spec", () => {
  // Every value says where it came from: stack, layer, parameter index, row and column.
  const ids = new Map<string, number>([...OPENBA_LAYER_PARAMS, ...OPENBA_GLOBAL_PARAMS].map((p, i) => [p.megatron, i]));
  const tagged: Fill = (stack, layer, p, r, c) => (stack === "decoder" ? 1 : 0) * 1e6 + layer * 1e5 + (ids.get(p) ?? 0) * 1e3 + r * 16 + c;
  const m = model(tagged);
  const resolved = resolvePrune(m.dims, { hidden: 4, heads: 2, ffn: 3, dropDecoder: [0] });
  const masks = {
    strategy: "random" as const,
    hidden: [0, 2, 3, 5],
    layers: [
      { stack: "encoder" as const, layer: 0, heads: [1, 3], ffn: [0, 2, 4] },
      { stack: "decoder" as const, layer: 1, heads: [0, 2], ffn: [1, 2, 3] },
    ],
    drop: resolved.drop,
  };
  const pruned = applyPruneMasks(m, masks, resolved.to);

  it("every tensor has the shape the new dims call for; dropped layers are gone and the rest renumbered", () => {
    expect(pruned.dims).toEqual({ ...DIMS, hidden: 4, heads: 2, ffn: 3, decoderLayers: 1 });
    for (const p of OPENBA_LAYER_PARAMS) {
      for (const stack of p.stacks) expect(pruned.tensors.get(megatronKey(stack, 0, p.megatron))?.shape, `${stack} ${p.megatron}`).toEqual(expectedShape(p, pruned.dims));
    }
    expect([...pruned.tensors.keys()].some((k) => k.includes("decoder.layers.1."))).toBe(false);
  });

  it("QKV keeps whole heads [n, 3, d] and the hidden columns; dense keeps the same heads as columns", async () => {
    const qkv = await values(pruned, megatronKey("encoder", 0, "self_attention.query_key_value.weight"));
    const qkvRows = [1, 3].flatMap((h) => [0, 1, 2, 3, 4, 5].map((k) => h * 6 + k));
    const base = (ids.get("self_attention.query_key_value.weight") as number) * 1e3;
    expect(qkv).toEqual(qkvRows.flatMap((r) => masks.hidden.map((c) => base + r * 16 + c)));
    const dense = await values(pruned, megatronKey("encoder", 0, "self_attention.dense.weight"));
    const dBase = (ids.get("self_attention.dense.weight") as number) * 1e3;
    expect(dense).toEqual(masks.hidden.flatMap((r) => [2, 3, 6, 7].map((c) => dBase + r * 16 + c)));
  });

  it("a decoder layer's cross-attention uses its self-attention head mask; FFN and LayerNorms follow their masks", async () => {
    const kv = await values(pruned, megatronKey("decoder", 0, "inter_attention.key_value.bias"));
    const kvBase = 1e6 + 1e5 + (ids.get("inter_attention.key_value.bias") as number) * 1e3;
    expect(kv).toEqual([0, 1, 2, 3, 8, 9, 10, 11].map((r) => kvBase + r * 16));
    const w2 = await values(pruned, megatronKey("decoder", 0, "mlp.w2.weight"));
    const w2Base = 1e6 + 1e5 + (ids.get("mlp.w2.weight") as number) * 1e3;
    expect(w2).toEqual(masks.hidden.flatMap((r) => [1, 2, 3].map((c) => w2Base + r * 16 + c)));
    const ln = await values(pruned, "language_model.decoder.final_layernorm.weight");
    const lnBase = (ids.get("language_model.decoder.final_layernorm.weight") as number) * 1e3;
    expect(ln).toEqual(masks.hidden.map((r) => lnBase + r * 16));
    const bias = await values(pruned, "lm_head.bias");
    expect(bias).toHaveLength(DIMS.vocab);
  });

  it("masks that do not fit the dims are refused", () => {
    expect(() => applyPruneMasks(m, { ...masks, hidden: [0, 2, 5, 3] }, resolved.to)).toThrow(/ascending/);
    expect(() => applyPruneMasks(m, { ...masks, layers: masks.layers.slice(1) }, resolved.to)).toThrow(/keep encoder layers/);
  });

  it("the masks manifest round-trips, with layers under their original numbers", () => {
    const manifest = masksManifest(resolved, masks);
    expect(manifest.layers.map((l) => [l.stack, l.layer, l.new_layer])).toEqual([
      ["encoder", 0, 0],
      ["decoder", 1, 0],
    ]);
    expect(masksFromManifest(JSON.parse(JSON.stringify(manifest)) as typeof manifest)).toEqual(masks);
  });
});

describe("random masks", () => {
  it("are reproducible, uniform-looking, ascending, and drawn in OpenBA's order", () => {
    const a = new Prng(1234);
    const b = new Prng(1234);
    expect(Array.from({ length: 8 }, () => a.nextUint32())).toEqual(Array.from({ length: 8 }, () => b.nextUint32()));
    const counts = new Array<number>(10).fill(0);
    const rng = new Prng(9);
    for (let i = 0; i < 20000; i++) for (const v of rng.sample(10, 3)) counts[v] = (counts[v] as number) + 1;
    for (const c of counts) expect(Math.abs(c - 6000)).toBeLessThan(400);
    const s = new Prng(3).sample(100, 40);
    expect(s).toEqual([...new Set(s)].sort((x, y) => x - y));
    // Dropping a layer must not change any kept layer's masks (masks are drawn for every original layer).
    const full = randomMasks(resolvePrune(DIMS, { heads: 2, ffn: 3, hidden: 4 }), 77);
    const fewer = randomMasks(resolvePrune(DIMS, { heads: 2, ffn: 3, hidden: 4, dropDecoder: [0] }), 77);
    expect(fewer.hidden).toEqual(full.hidden);
    expect(fewer.layers).toEqual(full.layers.filter((l) => !(l.stack === "decoder" && l.layer === 0)));
    expect(randomMasks(resolvePrune(DIMS, { hidden: 4 }), 78).hidden).not.toEqual(full.hidden);
  });
});
