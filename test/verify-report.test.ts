import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readManifest } from "../src/plan/manifest.js";
import { cleanupHfDirs, copyHfDir, fixtureHfDir, permuteRows, referencePath, runCli } from "./verify-helpers.js";

afterAll(cleanupHfDirs);

describe("verify --report and the manifest record", () => {
  it("writes one self-contained HTML page with the three SVG charts, and records the result in megahub.json", async () => {
    const dir = await copyHfDir(await fixtureHfDir("fp16-tp2"), "report");
    const report = join(dir, "..", "report.html");
    const r = await runCli(["verify", dir, "--reference", referencePath("fp16-tp2"), "--device", "cpu", "--report", report]);
    expect(r.code).toBe(0);
    const html = await readFile(report, "utf8");
    expect(html.startsWith("<!doctype html>")).toBe(true);
    expect(html.match(/<svg /g)?.length).toBe(3);
    expect(html).toContain("Max |Δ| per decoder position");
    expect(html).toContain("Histogram of |Δ|");
    expect(html).toContain("Top-1 agreement");
    expect(html).toContain("PASS");
    expect(html).toMatch(/<h2>Where each node ran \(ORT profiling\)<\/h2>[^]*<td>model \(\d+ nodes\)<\/td><td>CPUExecutionProvider<\/td>/);
    // self-contained: no scripts, no external resources
    expect(html).not.toMatch(/<script|<link|src="http|href="http/);
    // one point per decoder position and row (3 rows × 8 positions)
    expect(html.match(/<circle /g)?.length).toBe(24);
    const manifest = await readManifest(dir);
    expect(manifest?.verification.at(-1)).toMatchObject({ kind: "reference", passed: true, provider: "cpu", dtype: "F16" });
  });

  it("shows the failure in the report of a corrupted model", async () => {
    const dir = await copyHfDir(await fixtureHfDir("fp32-tp1"), "report-bad");
    await permuteRows(dir, "lm_head.weight", (r) => (r === 5 ? 6 : r === 6 ? 5 : r));
    await permuteRows(dir, "encoder.block.0.mlp.fc_in.weight", (r) => (r % 2 === 0 ? r + 1 : r - 1));
    const report = join(dir, "..", "bad.html");
    const r = await runCli(["verify", dir, "--reference", referencePath("fp32-tp1"), "--device", "cpu", "--report", report]);
    expect(r.code).toBe(1);
    const html = await readFile(report, "utf8");
    expect(html).toContain('class="verdict fail"');
    expect(html).toMatch(/FAIL — .*max \|Δ\|/);
    expect((await readManifest(dir))?.verification.at(-1)?.passed).toBe(false);
  });

  it("escapes what it prints (paths are user data)", async () => {
    const { renderReportHtml } = await import("../src/verify/report-html.js");
    const { compareLogits } = await import("../src/verify/metrics.js");
    const { toleranceFor } = await import("../src/verify/tolerances.js");
    const m = compareLogits(new Float32Array([1, 2]), new Float32Array([1, 2]), 1, 1, 2);
    const html = renderReportHtml({
      title: "t",
      passed: true,
      failures: [],
      model: "<img src=x onerror=alert(1)>",
      reference: "r",
      provider: "cpu",
      dtype: "F32",
      tolerance: toleranceFor("F32"),
      metrics: m,
    });
    expect(html).not.toContain("<img");
    await writeFile(join(await fixtureHfDir("fp32-tp1"), "..", "esc.html"), html);
  });
});
