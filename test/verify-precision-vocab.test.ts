// verify's reference precision (tolerances by the precision the reference was computed in, and convert --dtype
// that rounds the weights) and --reference against a model with fewer padded vocabulary rows (real ids compared).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { verifyModel } from "../src/verify/verify-model.js";
import { cleanupHfDirs, fixtureHfDir, pruneVocabCopy, referencePath, runCli, SPIECE } from "./verify-helpers.js";

const scratch: string[] = [];
afterAll(async () => {
  await cleanupHfDirs();
  for (const d of scratch) await rm(d, { recursive: true, force: true });
});

describe("reference precision", () => {
  it("convert --dtype bf16 --verify <fp32 reference> passes at bf16's gates; the fp32 gates would refuse it", async () => {
    const root = await mkdtemp(join(tmpdir(), "megahub-prec-"));
    scratch.push(root);
    const out = join(root, "hf");
    const ref = referencePath("fp32-tp1");
    const r = await runCli(["convert", "fixtures/megatron/fp32-tp1", "--out", out, "--dtype", "bf16", "--tokenizer", SPIECE, "--verify", ref, "--device", "cpu", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const strict = await verifyModel(out, { reference: ref, device: "cpu", record: false });
    expect(strict.passed).toBe(false); // bf16 rounding is far outside the exact fp32 gates
    const lossy = await verifyModel(out, { reference: ref, device: "cpu", record: false, weightsRounded: true });
    expect(lossy.passed).toBe(true);
    expect(lossy.tolerance).toMatchObject({ dtype: "BF16", comparison: "lossy" });
  }, 120_000);

  it.each([
    ["fp32", "F32", "exact"],
    ["bf16", "BF16", "lossy"],
    ["fp16", "F16", "lossy"],
    ["native", "F32", "exact"],
  ] as const)("--reference-precision %s on fp32 weights → %s %s gates", async (precision, dtype, comparison) => {
    const dir = await fixtureHfDir("fp32-tp1");
    const v = await verifyModel(dir, { reference: referencePath("fp32-tp1"), device: "cpu", record: false, referencePrecision: precision });
    expect(v.tolerance).toMatchObject({ dtype, comparison });
    expect(v.passed).toBe(true);
  });

  it("refuses an unknown precision with a usage error", async () => {
    const dir = await fixtureHfDir("fp32-tp1");
    const r = await runCli(["verify", dir, "--reference", referencePath("fp32-tp1"), "--reference-precision", "fp8"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--reference-precision must be fp32, fp16, bf16 or native/);
  });
});

describe("--reference with a different padded vocabulary", () => {
  it("compares on the real ids when the model has fewer padding rows than the reference", async () => {
    const dir = await fixtureHfDir("fp32-tp1"); // 1152 rows, 1103 real ids (1000 pieces + 103 OpenBA tokens)
    const fewer = await pruneVocabCopy(dir, Array.from({ length: 1110 }, (_, i) => i));
    const v = await verifyModel(fewer, { reference: referencePath("fp32-tp1"), device: "cpu", record: false });
    expect(v.passed, v.failures.join("; ")).toBe(true);
    expect(v.notes.join(" ")).toMatch(/compared on the 1103 real ids \(reference has 1152 padded rows, the model 1110\)/);
  });

  it("still catches a wrong real row, and refuses a model without the real ids", async () => {
    const dir = await fixtureHfDir("fp32-tp1");
    const swapped = await pruneVocabCopy(dir, [...Array.from({ length: 1110 }, (_, i) => i)].map((i) => (i === 5 ? 6 : i === 6 ? 5 : i)));
    const v = await verifyModel(swapped, { reference: referencePath("fp32-tp1"), device: "cpu", record: false });
    expect(v.passed).toBe(false);
    const short = await pruneVocabCopy(dir, Array.from({ length: 1100 }, (_, i) => i));
    await expect(verifyModel(short, { reference: referencePath("fp32-tp1"), device: "cpu", record: false })).rejects.toThrow(/tokenizer has 1103 ids/);
  });
});
