import { afterAll, describe, expect, it } from "vitest";
import { readModelDir } from "../src/models/openba/hf-dir.js";
import { cleanupHfDirs, copyHfDir, fixtureHfDir, permuteRows, referencePath, runCli } from "./verify-helpers.js";

afterAll(cleanupHfDirs);

const verifyArgs = (dir: string, name: string) => ["verify", dir, "--reference", referencePath(name), "--device", "cpu", "--no-record"];

/** QKV rows are grouped per head as [n, 3, d]: head h owns rows h·3d … h·3d+3d−1, q first, then k, then v. */
describe.each(["fp32-tp1", "bf16-tp1"])("verify fails on a corrupted %s checkpoint", (name) => {
  it("passes on the intact copy (so the failures below come from the corruption)", async () => {
    const dir = await copyHfDir(await fixtureHfDir(name), "intact");
    const r = await runCli(verifyArgs(dir, name));
    expect(r.stderr).not.toContain("FAILED");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("PASS");
  });

  it("fails when two heads are swapped in one qkv weight and bias", async () => {
    const dir = await copyHfDir(await fixtureHfDir(name), "swapped-head");
    const { kvChannels: d } = (await readModelDir(dir)).dims;
    const block = 3 * d;
    const swap = (r: number) => (r < block ? r + block : r < 2 * block ? r - block : r);
    await permuteRows(dir, "decoder.block.1.self_attn.qkv.weight", swap);
    await permuteRows(dir, "decoder.block.1.self_attn.qkv.bias", swap);
    const r = await runCli(verifyArgs(dir, name));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/megahub verify: error: verification FAILED: .*max \|Δ\|/);
  });

  it("fails when q and k are flipped inside one head", async () => {
    const dir = await copyHfDir(await fixtureHfDir(name), "flipped-qk");
    const { kvChannels: d } = (await readModelDir(dir)).dims;
    const head = 2 * 3 * d; // head 2
    const flip = (r: number) => (r >= head && r < head + d ? r + d : r >= head + d && r < head + 2 * d ? r - d : r);
    await permuteRows(dir, "encoder.block.0.self_attn.qkv.weight", flip);
    await permuteRows(dir, "encoder.block.0.self_attn.qkv.bias", flip);
    const r = await runCli([...verifyArgs(dir, name), "--json"]);
    expect(r.code).toBe(1);
    const json = JSON.parse(r.stdout) as { ok: boolean; failures: string[]; metrics: { maxAbs: number } };
    expect(json.ok).toBe(false);
    expect(json.failures.join(" ")).toContain("max |Δ|");
    expect(json.metrics.maxAbs).toBeGreaterThan(1e-3);
  });

  it("still fails under the dtype's looser gates (--reference-precision native)", async () => {
    const dir = await copyHfDir(await fixtureHfDir(name), "flipped-qk-native");
    const { kvChannels: d } = (await readModelDir(dir)).dims;
    const head = 2 * 3 * d;
    const flip = (r: number) => (r >= head && r < head + d ? r + d : r >= head + d && r < head + 2 * d ? r - d : r);
    await permuteRows(dir, "encoder.block.0.self_attn.qkv.weight", flip);
    await permuteRows(dir, "encoder.block.0.self_attn.qkv.bias", flip);
    const r = await runCli([...verifyArgs(dir, name), "--reference-precision", "native", "--json"]);
    expect(r.code).toBe(1);
    const json = JSON.parse(r.stdout) as { tolerance: { comparison: string }; failures: string[] };
    expect(json.tolerance.comparison).toBe(name === "fp32-tp1" ? "exact" : "lossy");
    expect(json.failures.join(" ")).toMatch(/NMSE|max \|Δ\|/);
  });
});
