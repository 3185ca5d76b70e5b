import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { convertMegatronToHf } from "../src/ops/openba/convert.js";
import { pruneCheckpoint } from "../src/ops/prune/run.js";
import type { MasksManifest } from "../src/ops/prune/structure.js";
import { readManifest } from "../src/plan/manifest.js";
import { megahub } from "./helpers/cli.js";
import { runPython, HAS_TORCH } from "./helpers/torch.js";
import { ckpt, expectedHf, expectSameSafetensors, fixture, fixtureDims, megatronFixtures, torchReference, workDir } from "./prune-helpers.js";

const work = workDir("megahub-prune-hf-");
afterAll(() => work.cleanup());

const FIXTURES = megatronFixtures();
const MAIN = FIXTURES.filter((f) => fixtureDims(f).hidden === 64);

/** Every kind of pruning at once, scaled to a fixture's dims: hidden, heads, FFN, and a layer of each stack. */
function widthAndDepth(name: string) {
  const d = fixtureDims(name);
  return {
    target: {
      hidden: Math.round(d.hidden * 0.625),
      heads: Math.ceil(d.heads / 2) - 1 || 1,
      ffn: Math.round(d.ffn * 0.53),
      dropEncoder: d.encoder_layers > 1 ? [d.encoder_layers - 1] : [],
      dropDecoder: [1],
    },
    d,
  };
}

describe.skipIf(!HAS_TORCH || FIXTURES.length === 0)("prune → HF is bit-exact with torch's own slicing", () => {
  it.each(FIXTURES)("%s, random masks (torch reads the Megatron checkpoint itself)", async (name) => {
    const { target, d } = widthAndDepth(name);
    const out = work.next();
    const res = await pruneCheckpoint({ input: ckpt(name), out, ...target, seed: 7 });
    expect(res.dims).toMatchObject({ hidden: target.hidden, heads: target.heads, ffn: target.ffn, decoderLayers: d.decoder_layers - 1 });
    const ref = join(work.dir, `${name}-ref.safetensors`);
    torchReference({ megatron: ckpt(name) }, res.masks, { hf: ref }, work.dir);
    expect(await expectSameSafetensors(join(out, "model.safetensors"), ref)).toBeGreaterThan(30);
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
    expect(config).toMatchObject({ hidden_size: target.hidden, num_heads: target.heads, ffn_hidden_size: target.ffn, kv_channels: d.kv_channels });
    expect(config).toMatchObject({ num_layers: d.encoder_layers - target.dropEncoder.length, num_decoder_layers: d.decoder_layers - 1 });
    const written = JSON.parse(readFileSync(join(out, "prune-masks.json"), "utf8")) as MasksManifest;
    expect(written).toEqual(res.masks);
    expect(written.layers.filter((l) => l.stack === "decoder").map((l) => `${l.layer}→${l.new_layer}`)).toEqual(
      Array.from({ length: d.decoder_layers }, (_, i) => i).filter((i) => i !== 1).map((l, k) => `${l}→${k}`),
    );
    const step = (await readManifest(out))?.lineage.at(-1);
    expect(step?.step).toBe("prune");
    expect(step?.settings).toMatchObject({ strategy: "random", seed: 7, masks: "prune-masks.json", output: "hf" });
  });

  it.skipIf(!existsSync(expectedHf("release-tp1")))("release-tp1: torch prunes the committed expected-hf.safetensors", async () => {
    const out = work.next();
    const res = await pruneCheckpoint({ input: ckpt("release-tp1"), out, hidden: 24, heads: 3, ffn: 50, dropDecoder: [0], seed: 1 });
    const ref = join(work.dir, "release-hf-ref.safetensors");
    torchReference({ hf: expectedHf("release-tp1") }, res.masks, { hf: ref }, work.dir);
    await expectSameSafetensors(join(out, "model.safetensors"), ref);
  });

  it.each(MAIN.filter((f) => /^(fp16-tp3|bf16-tp1|fp32-tp1)$/.test(f)))("%s, magnitude: the masks torch computes from the norms, and the same bytes", async (name) => {
    const out = work.next();
    const res = await pruneCheckpoint({ input: ckpt(name), out, hidden: 48, heads: 6, ffn: 66, dropDecoder: [2], strategy: "magnitude" });
    expect(res.masks.strategy).toBe("magnitude");
    expect(res.masks.seed).toBeNull();
    const ref = join(work.dir, `${name}-mag.safetensors`);
    const refMasks = join(work.dir, `${name}-mag-masks.json`);
    torchReference({ megatron: ckpt(name) }, res.masks, { hf: ref, magnitude: refMasks }, work.dir);
    const torchMasks = JSON.parse(readFileSync(refMasks, "utf8")) as { hidden_index: number[]; layers: { head_index: number[]; ffn_index: number[] }[] };
    expect(res.masks.hidden_index).toEqual(torchMasks.hidden_index);
    expect(res.masks.layers.map((l) => [l.head_index, l.ffn_index])).toEqual(torchMasks.layers.map((l) => [l.head_index, l.ffn_index]));
    await expectSameSafetensors(join(out, "model.safetensors"), ref);
  });

  it.skipIf(!MAIN.includes("fp16-tp2"))("from an HF directory, with the tokenizer carried over and the lineage kept", async () => {
    const hf = work.next();
    await convertMegatronToHf({ input: ckpt("fp16-tp2"), out: hf, tokenizer: fixture("tokenizer", "spiece.model") });
    const out = work.next();
    const res = await pruneCheckpoint({ input: hf, out, hidden: 32, heads: 4, ffn: 64, encoderLayers: 1, seed: 3 });
    expect(res.source.format).toBe("hf");
    expect(res.resolved.drop.encoder).toHaveLength(1);
    const ref = join(work.dir, "fromhf.safetensors");
    torchReference({ megatron: ckpt("fp16-tp2") }, res.masks, { hf: ref }, work.dir);
    await expectSameSafetensors(join(out, "model.safetensors"), ref);
    expect(readFileSync(join(out, "spiece.model")).equals(readFileSync(fixture("tokenizer", "spiece.model")))).toBe(true);
    expect((await readManifest(out))?.lineage.map((s) => s.step)).toEqual(["convert", "prune"]);
  });

  it.skipIf(!MAIN.includes("fp16-tp2") || !existsSync(ckpt("pruned-uneven-tp2")))(
    "OpenBA's own masks (pruned-uneven-tp2's rank*.pt) re-applied to its origin reproduce OpenBA's pruned checkpoint",
    async () => {
      // pruned-uneven-tp2 is fp16-tp2's weights pruned the way prune_model does (Python random, per-rank sliced
      // masks, uneven shards, stale args). Its global masks are the concatenation of the ranks' slices.
      const code = `
import json, sys, torch
ranks = [torch.load(sys.argv[1] + "/rank%d.pt" % r) for r in (0, 1)]
L = len(ranks[0]["head_masks"])
cat = lambda key, g: torch.where(torch.cat([r[key][g] for r in ranks]))[0].tolist()
print(json.dumps({"hidden": ranks[0]["hidden_index"].tolist(), "heads": [cat("head_masks", g) for g in range(L)], "ffn": [cat("intermediate_masks", g) for g in range(L)]}))`;
      const openba = JSON.parse(runPython(code, [ckpt("pruned-uneven-tp2")])) as { hidden: number[]; heads: number[][]; ffn: number[][] };
      const from = { hidden: 64, heads: 12, kvChannels: 8, ffn: 132, encoderLayers: 2, decoderLayers: 3, vocab: 1280 };
      const kept = [0, 1, 2, 4]; // encoder 0, 1; decoder 0 and 2 (decoder 1 dropped), as global layer numbers
      const masks: MasksManifest = {
        format: "megahub-prune-masks",
        version: 1,
        strategy: "random",
        seed: 1252,
        prng: "Python random (OpenBA's prune_model)",
        source_dims: from,
        target_dims: { ...from, hidden: 48, heads: 8, ffn: 80, decoderLayers: 2 },
        hidden_index: openba.hidden,
        dropped_layers: { encoder: [], decoder: [1] },
        layers: kept.map((g, k) => ({
          stack: g < 2 ? ("encoder" as const) : ("decoder" as const),
          layer: g < 2 ? g : g - 2,
          new_layer: g < 2 ? k : k - 2,
          head_index: openba.heads[g] as number[],
          ffn_index: openba.ffn[g] as number[],
        })),
      };
      const mine = work.next();
      await pruneCheckpoint({ input: ckpt("fp16-tp2"), out: mine, masks });
      const theirs = work.next();
      await convertMegatronToHf({ input: ckpt("pruned-uneven-tp2"), out: theirs });
      await expectSameSafetensors(join(mine, "model.safetensors"), join(theirs, "model.safetensors"));
      // The same masks through the CLI's --masks.
      const file = join(work.dir, "openba-masks.json");
      writeFileSync(file, JSON.stringify(masks));
      const cli = work.next();
      const r = megahub(["prune", ckpt("fp16-tp2"), "--out", cli, "--masks", file]);
      expect(r.code, r.stderr).toBe(0);
      expect(readFileSync(join(cli, "model.safetensors")).equals(readFileSync(join(mine, "model.safetensors")))).toBe(true);
    },
  );

  it.skipIf(!existsSync(ckpt("pruned-uneven-tp2")))("prunes an already pruned lineage (uneven shards, stale args) further", async () => {
    const out = work.next();
    const res = await pruneCheckpoint({ input: ckpt("pruned-uneven-tp2"), out, hidden: 40, heads: 6, ffn: 60, dropEncoder: [0], seed: 8 });
    expect(res.resolved.from).toMatchObject({ hidden: 48, heads: 8, ffn: 80, encoderLayers: 2, decoderLayers: 2 });
    const ref = join(work.dir, "uneven-ref.safetensors");
    torchReference({ megatron: ckpt("pruned-uneven-tp2") }, res.masks, { hf: ref }, work.dir);
    await expectSameSafetensors(join(out, "model.safetensors"), ref);
  });

  it.skipIf(MAIN.length === 0)("CLI: prunes with a progress bar, prints the layer choice; --dry-run --json describes the plan", () => {
    const name = MAIN[0] as string;
    const out = work.next();
    const r = megahub(["prune", ckpt(name), "--out", out, "--hidden", "48", "--decoder-layers", "2", "--heads", "6"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/dropped decoder layers \[1\] \(chosen; original numbering\)/);
    expect(r.stdout).toMatch(/to {4}hidden 48, 6 heads × 8/);
    expect(r.stderr).toMatch(/prune \[#+\] 100%/);
    const target = work.next();
    const dry = megahub(["prune", ckpt(name), "--out", target, "--ffn", "100", "--strategy", "magnitude", "--dry-run", "--json"]);
    expect(dry.code, dry.stderr).toBe(0);
    const plan = dry.json<{ dryRun: boolean; dims: { ffn: number }; plan: { files: { path: string }[] } }>();
    expect(plan.dryRun).toBe(true);
    expect(plan.dims.ffn).toBe(100);
    expect(plan.plan.files.map((f) => f.path)).toEqual(expect.arrayContaining(["model.safetensors", "config.json", "prune-masks.json"]));
    expect(existsSync(target)).toBe(false);
  });
});


describe.skipIf(MAIN.length === 0)("prune without torch", () => {
  it("the same seed gives the same bytes, another seed other masks; --dry-run writes nothing", async () => {
    const name = MAIN[0] as string;
    const a = work.next();
    const b = work.next();
    const ra = await pruneCheckpoint({ input: ckpt(name), out: a, hidden: 50, seed: 11 });
    const rb = await pruneCheckpoint({ input: ckpt(name), out: b, hidden: 50, seed: 11 });
    expect(ra.masks).toEqual(rb.masks);
    expect(readFileSync(join(a, "model.safetensors")).equals(readFileSync(join(b, "model.safetensors")))).toBe(true);
    const c = work.next();
    const rc = await pruneCheckpoint({ input: ckpt(name), out: c, hidden: 50, seed: 12, dryRun: true });
    expect(rc.masks.hidden_index).not.toEqual(ra.masks.hidden_index);
    expect(rc.execution).toBeUndefined();
    expect(existsSync(c)).toBe(false);
  });
});
