// prune --masks with OpenBA's own rank{r}.pt (written here by torch.save, in the layout init_prune_zs saves) and with
// hand-written masks that carry only indices: both must give exactly the prune the same masks give as megahub's
// own prune-masks.json.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { completeMasks, readMasksFile } from "../src/ops/prune/masks-read.js";
import { pruneCheckpoint } from "../src/ops/prune/run.js";
import type { MasksManifest } from "../src/ops/prune/structure.js";
import { HAS_TORCH, runPython } from "./helpers/torch.js";
import { ckpt, fixtureDims, workDir } from "./prune-helpers.js";

const work = workDir("megahub-prune-masks-");
afterAll(() => work.cleanup());
const NAME = "fp32-tp1";

/** A megahub prune of the fixture, whose masks the other spellings must reproduce. */
async function baseline() {
  return pruneCheckpoint({ input: ckpt(NAME), out: work.next(), hidden: 48, heads: 4, ffn: 96, dropDecoder: [1], seed: 3, dryRun: true });
}

describe.skipIf(!HAS_TORCH)("OpenBA's rank{r}.pt masks", () => {
  it.each([1, 2])("split over %i rank file(s), give the same prune as the same masks in megahub's JSON", async (tp) => {
    const base = await baseline();
    const d = fixtureDims(NAME);
    const dir = join(work.dir, `openba-tp${tp}`);
    // init_prune_zs: global hidden mask; per original layer (encoder, then decoder, dropped ones too) a head and an
    // intermediate mask, each rank saving its contiguous 1/tp slice with indices local to the slice.
    const drawn: { heads: number[]; ffn: number[] }[] = [];
    for (const stack of ["encoder", "decoder"] as const) {
      const n = stack === "encoder" ? d.encoder_layers : d.decoder_layers;
      for (let layer = 0; layer < n; layer++) {
        const l = base.masks.layers.find((x) => x.stack === stack && x.layer === layer);
        drawn.push({ heads: l?.head_index ?? [0, 1, 2, 3], ffn: l?.ffn_index ?? Array.from({ length: 96 }, (_, i) => i) });
      }
    }
    runPython(
      `import json, os, sys, torch
spec = json.loads(sys.argv[1]); os.makedirs(sys.argv[2], exist_ok=True)
tp, h, n, f = spec["tp"], spec["hidden"], spec["heads"], spec["ffn"]
def mask(size, keep):
    m = torch.zeros(size); m[keep] = 1.0; return m
for r in range(tp):
    hm = mask(h, spec["hidden_index"])
    heads = [mask(n, l["heads"])[r * n // tp:(r + 1) * n // tp] for l in spec["layers"]]
    ffn = [mask(f, l["ffn"])[r * f // tp:(r + 1) * f // tp] for l in spec["layers"]]
    torch.save({"hidden_mask": hm, "hidden_index": torch.where(hm == 1)[0], "head_masks": heads, "intermediate_masks": ffn,
                "head_indexes": [torch.where(m == 1)[0] for m in heads], "intermediate_indexes": [torch.where(m == 1)[0] for m in ffn]},
               os.path.join(sys.argv[2], f"rank{r}.pt"))`,
      [JSON.stringify({ tp, hidden: d.hidden, heads: d.heads, ffn: d.ffn, hidden_index: base.masks.hidden_index, layers: drawn }), dir],
    );
    const input = await readMasksFile(join(dir, "rank0.pt"));
    const res = await pruneCheckpoint({ input: ckpt(NAME), out: work.next(), masks: input, dropDecoder: [1], dryRun: true });
    expect(res.masks.hidden_index).toEqual(base.masks.hidden_index);
    expect(res.masks.layers).toEqual(base.masks.layers);
    expect(res.masks.target_dims).toEqual(base.masks.target_dims);
    expect(res.masks.prng).toMatch(/OpenBA's Python random.sample \(rank0.pt/);
  });
});

describe("prune --ffn", () => {
  it("warns when the FFN width is not a multiple of 256 (OpenBA's v1 modeling rounds to 256)", async () => {
    const base = await baseline();
    expect(base.notes.join("\n")).toMatch(/--ffn 96 is not a multiple of 256/);
    const keep = await pruneCheckpoint({ input: ckpt(NAME), out: work.next(), hidden: 48, dryRun: true });
    expect(keep.notes.join("\n")).not.toMatch(/multiple of 256/);
  });
});

describe("hand-written masks", () => {
  it("without format, source_dims or target_dims: layers not listed are dropped, the target follows the indices", async () => {
    const base = await baseline();
    const hand = {
      hidden_index: base.masks.hidden_index,
      layers: base.masks.layers.map(({ stack, layer, head_index, ffn_index }) => ({ stack, layer, head_index, ffn_index })),
    };
    const file = join(work.dir, "hand.json");
    const { writeFileSync } = await import("node:fs");
    writeFileSync(file, JSON.stringify(hand));
    const res = await pruneCheckpoint({ input: ckpt(NAME), out: work.next(), masks: await readMasksFile(file), dryRun: true });
    expect(res.masks.layers).toEqual(base.masks.layers);
    expect(res.masks.dropped_layers).toEqual(base.masks.dropped_layers);
    expect(res.masks.target_dims).toEqual(base.masks.target_dims);
    expect(res.masks.strategy).toBe("hand-written");
  });

  it.each([
    [{ hidden_index: [3, 2] }, /hidden_index must be ascending/],
    [{ hidden_index: [0, 999] }, /hidden_index\[1\] = 999 is not an index below/],
    [{ hidden_index: "x" }, /no hidden_index list/],
    [{ hidden_index: undefined }, /no hidden_index list/],
  ])("refuses %j with a FORMAT error", (patch, message) => {
    const d = fixtureDims(NAME);
    const dims = { hidden: d.hidden, heads: d.heads, kvChannels: d.kv_channels, ffn: d.ffn, encoderLayers: d.encoder_layers, decoderLayers: d.decoder_layers, vocab: d.padded_vocab };
    const layers = [{ stack: "encoder", layer: 0, head_index: [0], ffn_index: [0] }];
    const m = Object.assign({ hidden_index: [0, 1], layers }, patch) as unknown as Parameters<typeof completeMasks>[0];
    expect(() => completeMasks(m, dims, {})).toThrow(message);
  });

  it("a megahub masks file round-trips unchanged", async () => {
    const base = await baseline();
    const file = join(work.dir, "own.json");
    const { writeFileSync } = await import("node:fs");
    writeFileSync(file, JSON.stringify(base.masks));
    const res = await pruneCheckpoint({ input: ckpt(NAME), out: work.next(), masks: await readMasksFile(file), dryRun: true });
    expect(res.masks).toEqual(base.masks as MasksManifest);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual(base.masks);
  });
});
