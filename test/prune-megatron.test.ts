import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { convertMegatronToHf } from "../src/ops/openba/convert.js";
import { megatronGlobalModel } from "../src/ops/openba/global-model.js";
import { pruneCheckpoint } from "../src/ops/prune/run.js";
import { argNumber, openMegatron } from "../src/formats/megatron/read.js";
import { readManifest } from "../src/plan/manifest.js";
import { HAS_TORCH } from "./helpers/torch.js";
import { ckpt, expectSameMegatron, expectSameSafetensors, fixture, fixtureDims, megatronFixtures, torchReference, workDir } from "./prune-helpers.js";

const work = workDir("megahub-prune-meg-");
afterAll(() => work.cleanup());

const FIXTURES = megatronFixtures().filter((f) => fixtureDims(f).hidden === 64);
const multiRank = FIXTURES.find((f) => f === "bf16-tp4") ?? FIXTURES.find((f) => /tp[2-9]$/.test(f));
const singleRank = FIXTURES.find((f) => f === "fp16-tp1") ?? FIXTURES[0];

async function sourceTrueVocab(dir: string): Promise<number | undefined> {
  const c = await openMegatron(dir);
  try {
    return megatronGlobalModel(c).trueVocab;
  } finally {
    await c.close();
  }
}

describe.skipIf(!HAS_TORCH || FIXTURES.length === 0)("prune → Megatron is bit-exact with torch, rank by rank", () => {
  it.skipIf(!multiRank)("TP > 1 source, random masks, re-split evenly to TP 2; args say the new dims", async () => {
    const name = multiRank as string;
    const out = work.next();
    const res = await pruneCheckpoint({ input: ckpt(name), out, to: "megatron", tp: 2, hidden: 48, heads: 6, ffn: 100, dropEncoder: [0], decoderLayers: 2, seed: 5 });
    const ref = join(work.dir, `${name}-ranks`);
    torchReference({ megatron: ckpt(name) }, res.masks, { megatron: { dir: ref, tp: 2, vocabRows: res.dims.vocab, ...trueVocabArg(await sourceTrueVocab(ckpt(name))) } }, work.dir);
    await expectSameMegatron(out, ref, 2);
    const written = await openMegatron(out);
    try {
      const args = written.args;
      expect([argNumber(args, "hidden_size"), argNumber(args, "num_attention_heads"), argNumber(args, "ffn_hidden_size")]).toEqual([48, 6, 100]);
      expect([argNumber(args, "encoder_num_layers"), argNumber(args, "decoder_num_layers"), argNumber(args, "tensor_model_parallel_size")]).toEqual([1, 2, 2]);
      expect(megatronGlobalModel(written).dims).toEqual(res.dims);
    } finally {
      await written.close();
    }
    expect(existsSync(join(out, "prune-masks.json"))).toBe(true);
    const step = (await readManifest(out))?.lineage.at(-1);
    expect(step?.settings).toMatchObject({ output: "megatron", tp: 2, dropEncoderLayers: [0] });
  });

  it("magnitude masks to TP 3 (vocab re-padded from the tokenizer), and the output converts back to torch's HF", async () => {
    const name = singleRank as string;
    const out = work.next();
    const tokenizer = fixture("tokenizer", "spiece.model");
    const res = await pruneCheckpoint({ input: ckpt(name), out, to: "megatron", tp: 3, heads: 6, ffn: 66, hidden: 60, strategy: "magnitude", tokenizer });
    const ref = join(work.dir, `${name}-ranks3`);
    const trueVocab = 1000 + 103; // the fixture tokenizer's 1000 pieces + OpenBA's sentinels and mode tokens
    torchReference({ megatron: ckpt(name) }, res.masks, { megatron: { dir: ref, tp: 3, vocabRows: res.dims.vocab, trueVocab } }, work.dir);
    await expectSameMegatron(out, ref, 3);
    // Megatron → HF of the pruned checkpoint equals torch's pruned HF (vocab tensors were re-padded for TP 3 and are
    // checked rank by rank above).
    const hf = work.next();
    await convertMegatronToHf({ input: out, out: hf });
    const hfRef = join(work.dir, `${name}-mag-hf.safetensors`);
    torchReference({ megatron: ckpt(name) }, res.masks, { hf: hfRef }, work.dir);
    const vocabTensors = new Set(["shared_embedding.weight", "lm_head.weight", "lm_head.bias"]);
    await expectSameSafetensors(join(hf, "model.safetensors"), hfRef, (n) => vocabTensors.has(n));
  });

  it("from an HF directory (args synthesised; rotary buffers computed, so not compared)", async () => {
    const name = FIXTURES[0] as string;
    const hf = work.next();
    await convertMegatronToHf({ input: ckpt(name), out: hf, tokenizer: fixture("tokenizer", "spiece.model") });
    const out = work.next();
    const res = await pruneCheckpoint({ input: hf, out, to: "megatron", tp: 2, heads: 4, hidden: 32, ffn: 64, dropDecoder: [0, 2], seed: 21 });
    expect(res.tp).toBe(2);
    const ref = join(work.dir, `${name}-hf-ranks`);
    torchReference({ megatron: ckpt(name) }, res.masks, { megatron: { dir: ref, tp: 2, vocabRows: res.dims.vocab, trueVocab: 1103 } }, work.dir);
    await expectSameMegatron(out, ref, 2, (k) => k.endsWith("rotary_embed.inv_freq"));
    expect(JSON.parse(readFileSync(join(out, "prune-masks.json"), "utf8"))).toMatchObject({ dropped_layers: { encoder: [], decoder: [0, 2] } });
  });
});

function trueVocabArg(v: number | undefined): { trueVocab?: number } {
  return v === undefined ? {} : { trueVocab: v };
}

