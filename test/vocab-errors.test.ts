import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nonNormalPieces } from "../src/ops/vocab/select.js";
import { prunedSentencePiece } from "../src/ops/vocab/tokenizer.js";
import { parseSentencePieceModel, serializeSentencePieceModel } from "../src/formats/sentencepiece/model.js";
import { fixture } from "./helpers/fixtures.js";
import { runCli } from "./verify-helpers.js";

const TRAIN = fixture("corpus", "train.txt");
const SPIECE = fixture("tokenizer", "spiece.model");
const MEGATRON = fixture("megatron", "fp16-tp1");

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "megahub-vocab-errors-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs prune-vocab into a fresh --out (and --report) and returns the result plus whether anything appeared. */
async function prune(name: string, args: string[]): Promise<{ code: number; stderr: string; stdout: string; wrote: boolean }> {
  const out = join(dir, name);
  const report = join(dir, `${name}.html`);
  const r = await runCli(["prune-vocab", ...args, "--out", out, "--report", report]);
  return { ...r, wrote: existsSync(out) || existsSync(report) };
}

describe("prune-vocab: bad input fails clearly and writes nothing", () => {
  it("an unknown token in --keep-tokens", async () => {
    const keep = join(dir, "keep.txt");
    await writeFile(keep, "▁the\n<extra_id_5>\n▁definitely-not-a-piece\n");
    const r = await prune("unknown-token", [MEGATRON, "--tokenizer", SPIECE, "--corpus", TRAIN, "--keep", "600", "--keep-tokens", keep]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--keep-tokens line 3: "▁definitely-not-a-piece" is not a token of this tokenizer');
    expect(r.wrote).toBe(false);
  });

  it("a tokenizer that does not match the embedding: too many pieces, too few, or not the HF dir's added tokens", async () => {
    const model = parseSentencePieceModel(await readFile(SPIECE), SPIECE);
    const small = join(dir, "small.model");
    await writeFile(small, prunedSentencePiece(model, [...nonNormalPieces(model), ...Array.from({ length: 400 }, (_, i) => 300 + i)].sort((a, b) => a - b)).bytes);
    const big = join(dir, "big.model");
    const extra = Array.from({ length: 100 }, (_, i) => ({ piece: `▁extra${i}`, score: -20, type: 1, unknown: [] }));
    await writeFile(big, serializeSentencePieceModel({ ...model, pieces: [...model.pieces, ...extra] }));
    const tooFew = await prune("too-few", [MEGATRON, "--tokenizer", small, "--corpus", TRAIN, "--keep", "600"]);
    expect(tooFew.code).toBe(1);
    expect(tooFew.stderr).toMatch(/the embedding has 1152 rows, which is not Megatron's padding \(128 × TP, TP 1–8\) of the tokenizer's 659 pieces \+ 103 OpenBA tokens = 762: wrong tokenizer for this checkpoint/);
    expect(tooFew.wrote).toBe(false);
    const tooMany = await prune("too-many", [MEGATRON, "--tokenizer", big, "--corpus", TRAIN, "--keep", "600"]);
    expect(tooMany.code).toBe(1);
    expect(tooMany.stderr).toMatch(/1100 pieces \+ 103 OpenBA tokens = 1203 need more rows than the embedding's 1152: wrong tokenizer/);
    expect(tooMany.wrote).toBe(false);
    // An HF dir knows its token count from added_tokens.json; a slightly smaller tokenizer that still fits the
    // padding is caught by that.
    const hf = join(dir, "hf-src");
    const conv = await runCli(["convert", MEGATRON, "--out", hf, "--tokenizer", SPIECE, "--quiet"]);
    expect(conv.code).toBe(0);
    const near = join(dir, "near.model");
    await writeFile(near, prunedSentencePiece(model, Array.from({ length: 990 }, (_, i) => i)).bytes);
    const wrongHf = await prune("wrong-hf", [hf, "--tokenizer", near, "--corpus", TRAIN, "--keep", "600"]);
    expect(wrongHf.code).toBe(1);
    expect(wrongHf.stderr).toContain("the model has 1103 tokens but the tokenizer's 990 pieces + 103 OpenBA tokens = 1093: wrong tokenizer");
    expect(wrongHf.wrote).toBe(false);
  });

  it("an empty corpus", async () => {
    const empty = join(dir, "empty.txt");
    await writeFile(empty, "");
    const r = await prune("empty", [MEGATRON, "--tokenizer", SPIECE, "--corpus", empty, "--keep", "600"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("the corpus has no tokens");
    expect(r.wrote).toBe(false);
  });

  it("counts made with another tokenizer", async () => {
    const freq = join(dir, "other.tsv");
    const counted = await runCli(["vocab", "count", TRAIN, "--tokenizer", SPIECE, "--out", freq, "--quiet"]);
    expect(counted.code).toBe(0);
    await writeFile(freq, (await readFile(freq, "utf8")).replace(/\n700\t(\d+)\t[^\n]*/, "\n700\t$1\t▁elsewhere"));
    const r = await prune("other-freq", [MEGATRON, "--tokenizer", SPIECE, "--freq", freq, "--keep", "600"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("counted with another tokenizer: 1 pieces differ");
    expect(r.wrote).toBe(false);
  });

  it("missing or contradictory options, a Megatron input without --tokenizer, a non-empty --out, too small a --keep", async () => {
    const cases: [string[], RegExp][] = [
      [[MEGATRON, "--tokenizer", SPIECE, "--keep", "600"], /exactly one of --freq <freq.tsv> or --corpus/],
      [[MEGATRON, "--tokenizer", SPIECE, "--corpus", TRAIN], /exactly one of --keep N or --coverage F/],
      [[MEGATRON, "--tokenizer", SPIECE, "--corpus", TRAIN, "--keep", "600", "--coverage", "0.9"], /exactly one of --keep N or --coverage F/],
      [[MEGATRON, "--tokenizer", SPIECE, "--corpus", TRAIN, "--coverage", "1.5"], /--coverage takes a share in \(0, 1\]/],
      [[MEGATRON, "--corpus", TRAIN, "--keep", "600"], /a Megatron checkpoint carries no tokenizer: pass --tokenizer/],
      [[MEGATRON, "--tokenizer", SPIECE, "--corpus", TRAIN, "--keep", "100"], /--keep 100 is fewer than the 259 pieces that must stay/],
    ];
    for (const [i, [args, message]] of cases.entries()) {
      const r = await prune(`case${i}`, args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.stderr, args.join(" ")).toMatch(message);
      expect(r.wrote).toBe(false);
    }
    const busy = join(dir, "busy");
    await mkdir(busy);
    await writeFile(join(busy, "keep-me"), "x");
    const r = await runCli(["prune-vocab", MEGATRON, "--tokenizer", SPIECE, "--corpus", TRAIN, "--keep", "600", "--out", busy]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("output already exists and is not empty");
  });
});
