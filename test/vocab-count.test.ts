import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatFrequencies, readFrequencies } from "../src/ops/vocab/freq.js";
import { countCorpus, openSentencePiece, type SentencePieceEncoder } from "../src/ops/vocab/count.js";
import { fixture } from "./helpers/fixtures.js";
import { runCli } from "./verify-helpers.js";

const SPIECE = fixture("tokenizer", "spiece.model");
const TRAIN = fixture("corpus", "train.txt");
const HELDOUT = fixture("corpus", "heldout.txt");
const SPM_ENCODE = "/usr/bin/spm_encode";
const HAS_SPM = existsSync(SPM_ENCODE);

let sp: SentencePieceEncoder;
let dir: string;
beforeAll(async () => {
  sp = await openSentencePiece(SPIECE);
  dir = await mkdtemp(join(tmpdir(), "megahub-vocab-count-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Per-id counts of what Debian's native spm_encode prints for a file (one line of ids per input line). */
function spmCounts(file: string, spSize: number): { counts: Float64Array; lines: number; seconds: number } {
  const t0 = performance.now();
  const out = execFileSync(SPM_ENCODE, [`--model=${SPIECE}`, "--output_format=id", `--input=${file}`], { encoding: "utf8", maxBuffer: 1 << 30 });
  const seconds = (performance.now() - t0) / 1000;
  const counts = new Float64Array(spSize);
  const lines = out.split("\n");
  lines.pop();
  for (const line of lines) for (const id of line.split(" ")) if (id !== "") counts[Number(id)] = (counts[Number(id)] as number) + 1;
  return { counts, lines: lines.length, seconds };
}

function differingIds(a: Float64Array, b: Float64Array): string[] {
  const out: string[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) out.push(`${i}: ${a[i]} vs ${b[i]}`);
  return out;
}

describe("vocab count: ids exactly as sentencepiece tokenizes", () => {
  it("gives spm_encode's ids, line for line, on the held-out text (fixtures/tokenizer/heldout.ids.txt)", async () => {
    const text = (await readFile(HELDOUT, "utf8")).split("\n");
    const expected = (await readFile(fixture("tokenizer", "heldout.ids.txt"), "utf8")).split("\n");
    let compared = 0;
    for (const [i, want] of expected.entries()) {
      if (i === expected.length - 1 && want === "") break;
      expect(sp.encode(text[i] ?? "").join(" "), `line ${i + 1}`).toBe(want);
      compared++;
    }
    expect(compared).toBe(522);
  });

  it.skipIf(!HAS_SPM)("counts what Debian's spm_encode counts on the real bilingual corpus, in one thread and in worker threads", async () => {
    // ×8 makes it ~1.8 MB, so a worker pool is worth starting and each thread sees many batches.
    const big = join(dir, "train8.txt");
    await writeFile(big, (await readFile(TRAIN, "utf8")).repeat(8));
    const native = spmCounts(big, sp.spSize);
    for (const threads of [1, 2]) {
      const ours = await countCorpus([big], sp, { threads });
      expect(ours.threads).toBe(threads);
      expect(differingIds(ours.counts, native.counts)).toEqual([]);
      expect(ours.lines).toBe(native.lines);
      expect(ours.tokens).toBe(native.counts.reduce((a, b) => a + b, 0));
    }
  });

  // Speed is measured in `npm run bench`; here the large corpus only proves the worker-thread path counts exactly.
  it.skipIf(!HAS_SPM)("counts a 40× corpus exactly as spm_encode, on one thread and on worker threads", async () => {
    const big = join(dir, "train40.txt");
    await writeFile(big, (await readFile(TRAIN, "utf8")).repeat(40));
    const native = spmCounts(big, sp.spSize);
    const ours = await countCorpus([big], sp, { threads: 1 });
    const two = await countCorpus([big], sp, { threads: 2 });
    expect(differingIds(two.counts, native.counts)).toEqual([]);
    expect(differingIds(ours.counts, native.counts)).toEqual([]);
  });

  it("reads JSON lines (--field, nested with dots), and .gz, to the same counts as the plain text", async () => {
    const lines = (await readFile(HELDOUT, "utf8")).split("\n").filter((l) => l !== "");
    const plain = join(dir, "h.txt");
    await writeFile(plain, `${lines.join("\n")}\n`);
    const jsonl = join(dir, "h.jsonl");
    await writeFile(jsonl, `${lines.map((l, i) => JSON.stringify({ id: i, meta: { body: l } })).join("\n")}\n\n`);
    const gz = join(dir, "h.txt.gz");
    await writeFile(gz, gzipSync(await readFile(plain)));
    const a = await countCorpus([plain], sp);
    const b = await countCorpus([jsonl], sp, { field: "meta.body" });
    const c = await countCorpus([gz], sp);
    expect(b.lines).toBe(lines.length);
    expect(differingIds(b.counts, a.counts)).toEqual([]);
    expect(differingIds(c.counts, a.counts)).toEqual([]);
    expect(a.tokens).toBeGreaterThan(5000);
    await expect(countCorpus([jsonl], sp, { field: "text" })).rejects.toThrow(/line 1 has no string field "text"/);
  });

  it("refuses an empty corpus and writes no frequency file", async () => {
    const empty = join(dir, "empty.txt");
    await writeFile(empty, "\n\n   \n");
    await expect(countCorpus([empty], sp)).rejects.toThrow(/the corpus has no tokens/);
    const out = join(dir, "empty.tsv");
    const r = await runCli(["vocab", "count", empty, "--tokenizer", SPIECE, "--out", out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("the corpus has no tokens");
    expect(existsSync(out)).toBe(false);
    const missing = await runCli(["vocab", "count", join(dir, "nope.txt"), "--tokenizer", SPIECE, "--out", out]);
    expect(missing.stderr).toContain("cannot read the corpus file (ENOENT)");
  });
});

describe("frequency files", () => {
  it("round-trips every id (zeros too) and carries the tokenizer's identity; the CLI writes the same file", async () => {
    const c = await countCorpus([TRAIN], sp);
    const text = formatFrequencies(c, sp.model);
    const rows = text.split("\n").filter((l) => /^\d/.test(l));
    expect(rows).toHaveLength(sp.spSize);
    expect(text).toContain(`sha256=${sp.sha256}`);
    const file = join(dir, "train.tsv");
    await writeFile(file, text);
    const back = await readFrequencies(file, sp, sp.spSize + 103);
    expect(differingIds(back.counts, c.counts)).toEqual([]);
    expect(back.notes).toEqual([]);
    const cli = join(dir, "cli.tsv");
    const r = await runCli(["vocab", "count", TRAIN, "--tokenizer", SPIECE, "--out", cli, "--json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, tokens: c.tokens, lines: 4582, pieces: 1000 });
    const strip = (s: string) => s.split("\n").filter((l) => !l.startsWith("# corpus")).join("\n");
    expect(strip(await readFile(cli, "utf8"))).toBe(strip(text));
  });

  it("reads OpenBA's get_vocab_freq.py format (`id count`, sorted by count, added-token ids included)", async () => {
    const c = await countCorpus([TRAIN], sp);
    const order = [...c.counts.keys()].sort((a, b) => (c.counts[b] as number) - (c.counts[a] as number));
    const file = join(dir, "openba.txt");
    await writeFile(file, `${[...order.map((id) => `${id} ${c.counts[id]}`), "1099 17", "1102 3"].join("\n")}\n`);
    const back = await readFrequencies(file, sp, 1103);
    expect(differingIds(back.counts, c.counts)).toEqual([]);
    expect(back.notes.join(" ")).toMatch(/does not say which tokenizer.*2 counted ids ≥ 1000/);
    await writeFile(file, "5000 3\n");
    await expect(readFrequencies(file, sp, 1103)).rejects.toThrow(/counts id 5000, but the model has only 1103 tokens/);
  });

  it("refuses counts made with another tokenizer", async () => {
    const c = await countCorpus([HELDOUT], sp);
    const good = formatFrequencies(c, sp.model);
    const file = join(dir, "other.tsv");
    await writeFile(file, good.replace(/\n300\t(\d+)\t[^\n]*/, "\n300\t$1\t▁zzz"));
    await expect(readFrequencies(file, sp, 1103)).rejects.toThrow(/counted with another tokenizer: 1 pieces differ \(id 300 is "▁zzz" there/);
    await writeFile(file, good.replace("pieces=1000", "pieces=250100"));
    await expect(readFrequencies(file, sp, 1103)).rejects.toThrow(/250100-piece tokenizer, this one has 1000/);
  });
});
