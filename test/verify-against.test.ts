import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { readModelDir } from "../src/models/openba/hf-dir.js";
import { verifyModel } from "../src/verify/verify-model.js";
import { cleanupHfDirs, copyHfDir, fixtureHfDir, permuteRows, pruneVocabCopy, referencePath, runCli } from "./verify-helpers.js";

afterAll(cleanupHfDirs);

describe("verify --against another model", () => {
  it("passes with zero difference for the same weights stored twice (fp32 vs its copy)", async () => {
    const a = await fixtureHfDir("fp32-tp1");
    const b = await copyHfDir(a, "twin");
    const r = await verifyModel(b, { against: a, device: "cpu", record: false });
    expect(r.passed).toBe(true);
    expect(r.metrics.maxAbs).toBe(0);
    expect(r.metrics.positions).toBe(16);
  });

  it("says which model is pruned when one carries a masks manifest", async () => {
    const a = await fixtureHfDir("fp32-tp1");
    const b = await copyHfDir(a, "masked");
    await writeFile(join(b, "prune-masks.json"), JSON.stringify({ layers: [] }));
    const r = await verifyModel(b, { against: a, device: "cpu", record: false });
    expect(r.notes.join(" ")).toMatch(/the model under test \(.*\) is the pruned one: masks manifest prune-masks\.json/);
  });

  it("runs both on the reference file's inputs with --inputs and fails for a corrupted model", async () => {
    const a = await fixtureHfDir("fp32-tp1");
    const b = await copyHfDir(a, "against-bad");
    await permuteRows(b, "decoder.block.0.inter_attn.kv.weight", (r) => (r < 8 ? r + 8 : r < 16 ? r - 8 : r));
    const r = await runCli(["verify", b, "--against", a, "--inputs", referencePath("fp32-tp1"), "--device", "cpu", "--no-record"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("verification FAILED");
  });

  it("compares a vocab-pruned model on the kept ids through an id map", async () => {
    const original = await fixtureHfDir("fp32-tp1");
    const { vocab } = (await readModelDir(original)).dims;
    // keep specials, every third piece, and all added tokens; new id = index
    const keep = Array.from({ length: vocab }, (_, i) => i).filter((i) => i < 3 || i >= 1000 || i % 3 === 0);
    const pruned = await pruneVocabCopy(original, keep.slice(0, keep.indexOf(1103)));
    const mapFile = join(pruned, "..", "id-map.json");
    await writeFile(mapFile, JSON.stringify(keep.slice(0, keep.indexOf(1103))));
    const r = await runCli(["verify", pruned, "--against", original, "--id-map", mapFile, "--device", "cpu", "--no-record", "--json"]);
    const json = JSON.parse(r.stdout) as { ok: boolean; metrics: { maxAbs: number; vocab: number }; notes: string[] };
    expect(json.ok).toBe(true);
    expect(json.metrics.vocab).toBe(keep.indexOf(1103));
    expect(json.metrics.maxAbs).toBeLessThanOrEqual(1e-5);
    expect(json.notes.join(" ")).toContain("kept ids");
    expect(json.notes.join(" ")).not.toContain("is the pruned one"); // no masks manifest, no prune lineage here
    expect(r.code).toBe(0);
  });

  it("fails when the id map does not match the pruned rows", async () => {
    const original = await fixtureHfDir("fp32-tp1");
    const keep = Array.from({ length: 1103 }, (_, i) => i);
    const pruned = await pruneVocabCopy(original, keep);
    const wrong = [...keep];
    [wrong[400], wrong[401]] = [401, 400];
    const mapFile = join(pruned, "..", "wrong-map.json");
    await writeFile(mapFile, JSON.stringify(wrong));
    const r = await verifyModel(pruned, { against: original, idMap: mapFile, device: "cpu", record: false });
    expect(r.passed).toBe(false);
  });

  it("holds differently rounded copies to the looser dtype's gates: bf16 vs fp32, fp16 (TP 2 padding) vs fp32", async () => {
    const fp32 = await fixtureHfDir("fp32-tp1");
    const bf16 = await verifyModel(await fixtureHfDir("bf16-tp1"), { against: fp32, device: "cpu", record: false });
    expect(bf16.tolerance).toMatchObject({ dtype: "BF16", comparison: "lossy" });
    expect(bf16.failures).toEqual([]);
    expect(bf16.metrics.maxAbs).toBeGreaterThan(1e-4); // rounding is visible: the exact gate would fail
    // fp16-tp2 pads the vocab to 1280 rows, fp32-tp1 to 1152: compare on the 1103 real ids.
    const mapFile = join(await fixtureHfDir("fp16-tp2"), "..", "identity.json");
    await writeFile(mapFile, JSON.stringify(Array.from({ length: 1103 }, (_, i) => i)));
    const fp16 = await verifyModel(await fixtureHfDir("fp16-tp2"), { against: fp32, idMap: mapFile, device: "cpu", record: false });
    expect(fp16.tolerance).toMatchObject({ dtype: "F16", comparison: "lossy" });
    expect(fp16.failures).toEqual([]);
    expect(fp16.metrics.vocab).toBe(1103);
  });

  it("refuses to compare different vocab sizes without an id map", async () => {
    const original = await fixtureHfDir("fp32-tp1");
    const pruned = await pruneVocabCopy(original, Array.from({ length: 1103 }, (_, i) => i));
    const r = await runCli(["verify", pruned, "--against", original, "--device", "cpu", "--no-record"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("pass --id-map");
  });
});
