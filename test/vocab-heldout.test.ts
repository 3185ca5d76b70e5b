import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pruneVocab } from "../src/ops/vocab/run.js";
import { ID_MAP_FILE } from "../src/ops/vocab/remap.js";
import { openSentencePiece, type SentencePieceEncoder } from "../src/ops/vocab/count.js";
import { loadTokenizer } from "../src/tokenizers/tokenizer.js";
import { fixture } from "./helpers/fixtures.js";
import { cleanupHfDirs, fixtureHfDir } from "./verify-helpers.js";

const TRAIN = fixture("corpus", "train.txt");
const SPM_ENCODE = "/usr/bin/spm_encode";

let dir: string;
let old: SentencePieceEncoder;
let heldout: string[];
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "megahub-vocab-heldout-"));
  old = await openSentencePiece(fixture("tokenizer", "spiece.model"));
  heldout = (await readFile(fixture("corpus", "heldout.txt"), "utf8")).split("\n").filter((l) => l !== "");
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  await cleanupHfDirs();
});

/** Splits ids into words: a word starts at a piece beginning with "▁" (sentencepiece's whitespace). */
function words(ids: readonly number[], pieces: readonly string[]): number[][] {
  const out: number[][] = [];
  for (const id of ids) {
    if (out.length === 0 || (pieces[id] ?? "").startsWith("▁")) out.push([]);
    out.at(-1)?.push(id);
  }
  return out;
}

const same = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

describe("held-out text through the pruned tokenizer", () => {
  for (const keep of [400, 600, 800]) {
    it(`--keep ${keep}: remapped old ids wherever every old id was kept (lines and words), the same text everywhere`, async () => {
      const out = join(dir, `keep${keep}`);
      await pruneVocab({ input: await fixtureHfDir("fp16-tp1"), out, corpus: [TRAIN], keep });
      const pruned = await openSentencePiece(join(out, "spiece.model"));
      const map = JSON.parse(await readFile(join(out, ID_MAP_FILE), "utf8")) as { old_to_new: Record<string, number> };
      const toNew = new Map(Object.entries(map.old_to_new).map(([o, n]) => [Number(o), n]));
      const oldPieces = old.model.pieces.map((p) => p.piece);
      const newPieces = pruned.model.pieces.map((p) => p.piece);
      const stats = { lines: 0, linesKept: 0, words: 0, wordsKept: 0, tokens: 0, tokensInKeptWords: 0, decodedSame: 0 };
      const failures: string[] = [];
      for (const line of heldout) {
        const a = old.encode(line);
        const b = pruned.encode(line);
        stats.lines++;
        stats.tokens += a.length;
        if (a.every((id) => toNew.has(id))) {
          stats.linesKept++;
          if (!same(a.map((id) => toNew.get(id) as number), b)) failures.push(`line ${JSON.stringify(line.slice(0, 50))}`);
        }
        const wa = words(a, oldPieces);
        const wb = words(b, newPieces);
        expect(wb.length, "pruning never moves a word boundary").toBe(wa.length);
        wa.forEach((w, i) => {
          stats.words++;
          if (!w.every((id) => toNew.has(id))) return;
          stats.wordsKept++;
          stats.tokensInKeptWords += w.length;
          if (!same(w.map((id) => toNew.get(id) as number), wb[i] ?? [])) failures.push(`word ${i} of ${JSON.stringify(line.slice(0, 50))}`);
        });
        if (pruned.decode(b) === old.decode(a)) stats.decodedSame++;
        else failures.push(`decode of ${JSON.stringify(line.slice(0, 50))}`);
      }
      const pct = (a: number, b: number) => `${((100 * a) / b).toFixed(1)}%`;
      console.log(
        `--keep ${keep}: ${pct(stats.linesKept, stats.lines)} of ${stats.lines} held-out lines and ${pct(stats.wordsKept, stats.words)} of ${stats.words} words ` +
          `(${pct(stats.tokensInKeptWords, stats.tokens)} of ${stats.tokens} tokens) had every old id kept and gave exactly the remapped ids; ` +
          `${pct(stats.decodedSame, stats.lines)} of lines decode to the same text`,
      );
      expect(failures).toEqual([]);
      expect(stats.decodedSame).toBe(stats.lines);
      // The test must be able to see a difference: some words keep all their ids, some do not.
      expect(stats.wordsKept).toBeGreaterThan(0);
      expect(stats.wordsKept).toBeLessThan(stats.words);
    });
  }

  it.skipIf(!existsSync(SPM_ENCODE))("Google's native spm_encode reads the rewritten model exactly as the WASM build does", async () => {
    const out = join(dir, "keep600");
    if (!existsSync(out)) await pruneVocab({ input: await fixtureHfDir("fp16-tp1"), out, corpus: [TRAIN], keep: 600 });
    const pruned = await openSentencePiece(join(out, "spiece.model"));
    const native = execFileSync(SPM_ENCODE, [`--model=${join(out, "spiece.model")}`, "--output_format=id"], { input: `${heldout.join("\n")}\n`, encoding: "utf8" })
      .split("\n")
      .slice(0, -1);
    expect(native).toHaveLength(heldout.length);
    expect(heldout.map((l) => pruned.encode(l).join(" "))).toEqual(native);
  });

  it("the pruned HF dir's tokenizer files give OpenBA's added tokens their new ids", async () => {
    const out = join(dir, "keep600");
    if (!existsSync(out)) await pruneVocab({ input: await fixtureHfDir("fp16-tp1"), out, corpus: [TRAIN], keep: 600 });
    const tok = await loadTokenizer(out);
    expect(tok.spSize).toBe(600);
    expect(tok.specials.get("<extra_id_0>")).toBe(699);
    expect(tok.specials.get("<extra_id_99>")).toBe(600);
    expect([tok.specials.get("<R>"), tok.specials.get("<S>"), tok.specials.get("<X>")]).toEqual([700, 701, 702]);
    const prompt = tok.encode("<S> Human rights <extra_id_0>");
    expect(prompt[0]).toBe(701);
    expect(prompt.slice(-2)).toEqual([699, 1]);
    expect(tok.decode(prompt)).toBe("Human rights");
  });
});
