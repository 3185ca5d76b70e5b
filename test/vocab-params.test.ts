import { readFile } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { dimsFromHfConfig } from "../src/ops/prune/plan.js";
import { coverageSvg, renderVocabReportHtml, type VocabReport } from "../src/ops/vocab/report.js";
import { prunedRows, vocabParams } from "../src/ops/vocab/remap.js";
import { fixture } from "./helpers/fixtures.js";
import { runCli } from "./verify-helpers.js";

const V2_CONFIG = fixture("configs", "openba-v2-config.json");

describe("parameter arithmetic of vocabulary pruning", () => {
  it("OpenBA-v2 (hidden 2560, 8/24 layers, FFN 6912, 20 × 128 heads, vocab 250240) keeping 100k pieces: 3.8B → 3.4B", async () => {
    const { dims } = dimsFromHfConfig(JSON.parse(await readFile(V2_CONFIG, "utf8")) as Record<string, unknown>);
    expect(dims).toEqual({ hidden: 2560, heads: 20, kvChannels: 128, ffn: 6912, encoderLayers: 8, decoderLayers: 24, vocab: 250240 });
    const rows = prunedRows(100_000, 103, 128, 1);
    expect(rows).toBe(100_224);
    const p = vocabParams(dims, rows);
    expect(p.before.total).toBe(3_808_598_400);
    expect(p.before.total - p.after.total).toBe((250_240 - 100_224) * (2560 + 1)); // embedding rows + bias, head tied
    expect(p.hfTotal.before - p.hfTotal.after).toBe((250_240 - 100_224) * (2 * 2560 + 1)); // plus HF's lm_head.weight copy
    expect(p.after.total / 1e9).toBeCloseTo(3.4, 1);
    expect(p.before.encoder + p.before.decoder).toBe(p.after.encoder + p.after.decoder);
  });

  it("the CLI reports it from the config alone (prune-vocab --from-config … --keep 100k)", async () => {
    const r = await runCli(["prune-vocab", "--from-config", V2_CONFIG, "--keep", "100k", "--json"]);
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout) as { rows: { before: number; after: number }; params: { before: { total: number }; after: { total: number } } };
    expect(json.rows).toEqual({ before: 250_240, after: 100_224 });
    expect(json.params.after.total).toBe(3_424_407_424);
    const human = await runCli(["prune-vocab", "--from-config", V2_CONFIG, "--keep", "100000"]);
    expect(human.stdout).toContain("parameters 3.81B → 3.42B");
    const tooMany = await runCli(["prune-vocab", "--from-config", V2_CONFIG, "--keep", "300000"]);
    expect(tooMany.code).toBe(2);
    expect(tooMany.stderr).toContain("more than the model's 250240");
  });

  it("the report shows the coverage curve with the chosen size marked and the parameter counts", async () => {
    const { dims } = dimsFromHfConfig(JSON.parse(await readFile(V2_CONFIG, "utf8")) as Record<string, unknown>);
    const curve = [1, 50_000, 100_000, 150_000, 250_100].map((pieces) => ({ pieces, coverage: 1 - Math.exp(-pieces / 20_000) }));
    const report: VocabReport = {
      source: "/ckpt/openba-v2",
      out: "/out/<pruned>",
      rule: { kind: "keep", pieces: 100_000 },
      corpus: { files: ["zh.txt", "en.txt"], tokens: 1_000_000 },
      pieces: { before: 250_100, kept: 100_000, forced: 259, usedByCorpus: 180_000 },
      coverage: curve[2]?.coverage ?? 0,
      curve,
      vocab: { before: { spSize: 250_100, trueVocab: 250_203, rows: 250_240 }, after: { spSize: 100_000, trueVocab: 100_103, rows: 100_224 } },
      params: vocabParams(dims, 100_224),
      notes: ["a <note> & more"],
    };
    const html = renderVocabReportHtml(report);
    expect(html).toContain('data-chosen="100000"');
    expect(html).toContain("3.81B → <b>3.42B</b>");
    expect(html).toContain("/out/&lt;pruned&gt;");
    expect(html).toContain("a &lt;note&gt; &amp; more");
    expect(html).not.toMatch(/<script|<link|src=/);
    // The marker sits on the curve: x at 100000 of 250100 pieces, y at its coverage.
    const svg = coverageSvg(curve, 250_100, { pieces: 100_000, coverage: report.coverage });
    const cx = Number(/<circle cx="([\d.]+)"/.exec(svg)?.[1]);
    expect(cx).toBeCloseTo(64 + (632 * 100_000) / 250_100, 0);
  });

  it("a --dry-run on a checkpoint reports the same numbers in --json", async () => {
    const r = await runCli([
      "prune-vocab",
      fixture("megatron", "fp16-tp1"),
      "--out",
      "/nonexistent/never-written",
      "--tokenizer",
      fixture("tokenizer", "spiece.model"),
      "--corpus",
      fixture("corpus", "train.txt"),
      "--coverage",
      "99%",
      "--dry-run",
      "--json",
    ]);
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout) as { dryRun: boolean; report: VocabReport; plan: { files: { path: string }[] } };
    expect(json.dryRun).toBe(true);
    const { report } = json;
    expect(report.coverage).toBeGreaterThanOrEqual(0.99);
    expect(report.vocab.after.trueVocab).toBe(report.pieces.kept + 103);
    expect(report.vocab.after.rows).toBe(Math.ceil((report.pieces.kept + 103) / 128) * 128);
    expect(report.params.before.total - report.params.after.total).toBe((1152 - report.vocab.after.rows) * 65);
    expect(json.plan.files.map((f) => f.path)).toEqual(expect.arrayContaining(["spiece.model", "vocab-id-map.json"]));
  });
});
