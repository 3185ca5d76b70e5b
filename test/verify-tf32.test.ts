import { describe, expect, it } from "vitest";
import { compareLogits } from "../src/verify/metrics.js";
import { renderReportHtml } from "../src/verify/report-html.js";
import { TF32, TOLERANCES, toleranceFor, checkTolerance } from "../src/verify/tolerances.js";
import { cleanupHfDirs, fixtureHfDir, referencePath, runCli } from "./verify-helpers.js";
import { afterAll } from "vitest";

afterAll(cleanupHfDirs);

describe("TF32 gates (verify --tf32 on CUDA)", () => {
  it.each([
    ["F32", "exact"],
    ["F16", "exact"],
    ["F16", "lossy"],
    ["BF16", "lossy"],
  ] as const)("%s %s: every gate is at least as loose as both the dtype's and TF32's, and says TF32", (dtype, comparison) => {
    const base = TOLERANCES[dtype][comparison];
    const t = toleranceFor(dtype, comparison, undefined, true);
    expect(t.tf32).toBe(true);
    expect(t.maxAbs).toBeUndefined();
    expect(t.maxAbsPerStd).toBe(Math.max(base.maxAbsPerStd ?? 0, TF32.maxAbsPerStd ?? 0));
    expect(t.minCosine).toBe(Math.min(base.minCosine, TF32.minCosine));
    expect(t.maxNmse).toBe(Math.max(base.maxNmse, TF32.maxNmse));
    expect(t.maxMeanKl).toBe(Math.max(base.maxMeanKl, TF32.maxMeanKl));
    expect(t.minTop1).toBe(Math.min(base.minTop1, TF32.minTop1));
    expect(t.why).toContain("TF32 allowed (--tf32)");
    expect(toleranceFor(dtype, comparison).tf32).toBeUndefined();
  });

  it("--atol still has the last word, and the gate is scale-free: a TF32-sized error passes, a 10× one fails", () => {
    expect(toleranceFor("F32", "exact", 5e-3, true)).toMatchObject({ maxAbs: 5e-3, maxAbsPerStd: undefined, tf32: true });
    // Four positions of 64 logits, pseudo-random in [-1, 1) with one clear winner each (as trained models have).
    let r = 7;
    const ref = Float32Array.from({ length: 4 * 64 }, (_, i) => {
      r = (r * 1103515245 + 12345) % 2 ** 31;
      return (r / 2 ** 30 - 1) + (i % 64 === (i >> 6) * 5 ? 12 : 0);
    });
    const std = Math.sqrt(ref.reduce((s, x) => s + x * x, 0) / ref.length);
    const bump = (k: number) => ref.map((x, i) => x + (i % 7 === 0 ? k * std : 0));
    const t = toleranceFor("F32", "exact", undefined, true);
    expect(checkTolerance(compareLogits(bump(0.005), ref, 1, 4, 64), t)).toEqual([]);
    expect(checkTolerance(compareLogits(bump(0.005), ref, 1, 4, 64), toleranceFor("F32"))).not.toEqual([]);
    expect(checkTolerance(compareLogits(bump(0.05), ref, 1, 4, 64), t)).not.toEqual([]);
  });

  it("the report says whether TF32 was allowed on CUDA", () => {
    const m = compareLogits(new Float32Array([1, 2]), new Float32Array([1, 2]), 1, 1, 2);
    const base = { title: "t", passed: true, failures: [], model: "m", reference: "r", dtype: "F32", metrics: m };
    expect(renderReportHtml({ ...base, provider: "cuda", tf32: true, tolerance: toleranceFor("F32", "exact", undefined, true) })).toContain("cuda, TF32 allowed (--tf32)");
    expect(renderReportHtml({ ...base, provider: "cuda", tf32: false, tolerance: toleranceFor("F32") })).toContain("cuda, TF32 off");
  });

  it("on CPU --tf32 changes nothing: the fp32 gates stand and the result says TF32 was not used", async () => {
    const dir = await fixtureHfDir("fp32-tp1");
    const r = await runCli(["verify", dir, "--reference", referencePath("fp32-tp1"), "--device", "cpu", "--tf32", "--no-record", "--json"]);
    const json = JSON.parse(r.stdout) as { ok: boolean; tf32: boolean; tolerance: { maxAbs: number; tf32?: boolean } };
    expect(json).toMatchObject({ ok: true, tf32: false, tolerance: { maxAbs: 1e-4 } });
    expect(json.tolerance.tf32).toBeUndefined();
  });
});
