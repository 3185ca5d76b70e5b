import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { pruneCheckpoint, type PruneJob } from "../src/ops/prune/run.js";
import { resolvePrune } from "../src/ops/prune/masks.js";
import { isMegahubError } from "../src/errors.js";
import type { OpenbaDims } from "../src/models/openba/dims.js";
import { megahub } from "./helpers/cli.js";
import { ckpt, megatronFixtures, workDir } from "./prune-helpers.js";

const work = workDir("megahub-prune-err-");
afterAll(() => work.cleanup());

const TINY: OpenbaDims = { hidden: 64, heads: 12, kvChannels: 8, ffn: 132, encoderLayers: 2, decoderLayers: 3, vocab: 1024 };

describe("targets that cannot be reached are refused with a clear message", () => {
  it.each([
    [{ hidden: 128 }, /--hidden 128 is larger than the source's hidden size 64/],
    [{ heads: 13 }, /--heads 13 is larger than the source's number of attention heads 12/],
    [{ ffn: 500 }, /--ffn 500 is larger than the source's FFN width 132/],
    [{ encoderLayers: 3 }, /--encoder-layers 3 is larger than the source's 2 encoder layers/],
    [{ dropEncoder: [0, 1] }, /drops every encoder layer/],
    [{ decoderLayers: 0 }, /--decoder-layers 0 would drop every decoder layer/],
    [{ dropDecoder: [3] }, /decoder layer 3 does not exist \(the source's decoder has layers 0..2\)/],
    [{ dropDecoder: [1, 1] }, /lists a layer twice/],
    [{ dropDecoder: [1], decoderLayers: 2 }, /either --drop-decoder-layers or --decoder-layers/],
    [{ hidden: 0 }, /--hidden must be a positive integer/],
  ] as const)("%j", (target, message) => {
    const err = (() => {
      try {
        resolvePrune(TINY, target);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(isMegahubError(err) && err.code).toBe("USAGE");
    expect((err as Error).message).toMatch(message);
  });
});

describe.skipIf(megatronFixtures().length === 0)("bad prune jobs write nothing", () => {
  const name = megatronFixtures()[0] as string;
  const fails = async (job: Omit<PruneJob, "input" | "out">, message: RegExp) => {
    const out = work.next();
    const err = await pruneCheckpoint({ input: ckpt(name), out, ...job }).catch((e: unknown) => e);
    expect(isMegahubError(err), String(err)).toBe(true);
    expect((err as Error).message).toMatch(message);
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(work.dir).filter((f) => f.startsWith("."))).toEqual([]); // no staged leftovers
  };

  it("a target larger than the source", () => fails({ ffn: 1000 }, /larger than the source's FFN width/));
  it("heads that do not divide the new TP", () => fails({ heads: 8, to: "megatron", tp: 3 }, /TP 3 does not divide the 8 heads/));
  it("an FFN width that does not divide the new TP", () => fails({ ffn: 100, to: "megatron", tp: 3 }, /TP 3 does not divide the FFN width 100/));
  it("dropping every layer", () => fails({ dropEncoder: [0, 1] }, /drops every encoder layer/));
  it("--tp with HF output", () => fails({ tp: 2 }, /--tp applies to --to megatron only/));

  it("masks made for another model, or not masks at all", async () => {
    const first = await pruneCheckpoint({ input: ckpt(name), out: work.next(), hidden: 32, dryRun: true });
    const other = { ...first.masks, source_dims: { ...first.masks.source_dims, heads: 99 } };
    await fails({ masks: other }, /masks were made for a different model: heads 99 there, 12 here/);
    await fails({ masks: first.masks, hidden: 16 }, /--masks sets the whole target/);
    const file = join(work.dir, "not-masks.json");
    writeFileSync(file, "{ nope");
    const r = megahub(["prune", ckpt(name), "--out", work.next(), "--masks", file]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/not-masks\.json.*not JSON/);
  });

  it("an output that already has files", async () => {
    const out = work.next();
    mkdirSync(out);
    writeFileSync(join(out, "keep.txt"), "mine");
    const err = await pruneCheckpoint({ input: ckpt(name), out, hidden: 32 }).catch((e: unknown) => e);
    expect(isMegahubError(err) && err.code).toBe("OUTPUT");
    expect(readdirSync(out)).toEqual(["keep.txt"]);
  });

  it("CLI: one line on stderr, exit 2 for usage errors, nothing written", () => {
    const out = work.next();
    const r = megahub(["prune", ckpt(name), "--out", out, "--heads", "8", "--to", "megatron", "--tp", "3"]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/megahub prune: error: TP 3 does not divide the 8 heads/);
    expect(existsSync(out)).toBe(false);
    const bad = megahub(["prune", ckpt(name), "--out", out, "--drop-encoder-layers", "1,x"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/layer numbers separated by commas/);
    const j = megahub(["prune", ckpt(name), "--out", out, "--hidden", "99", "--json"]);
    expect(j.code).toBe(2);
    expect(j.json<{ ok: boolean; error: { code: string; message: string } }>()).toMatchObject({ ok: false, error: { code: "USAGE" } });
    expect(existsSync(out)).toBe(false);
  });
});
