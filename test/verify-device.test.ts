import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { cleanupHfDirs, fixtureHfDir, referencePath, runCli } from "./verify-helpers.js";

afterAll(cleanupHfDirs);

/** The test's premise: onnxruntime-node installed without its CUDA provider library (npm's default; gpu-standins.test.ts covers the rest). */
const binDir = join(dirname(createRequire(import.meta.url).resolve("onnxruntime-node")), "..", "bin", "napi-v6", process.platform, process.arch);
const cudaLibraryPresent = existsSync(join(binDir, "libonnxruntime_providers_cuda.so"));

describe.skipIf(cudaLibraryPresent)("execution provider selection without the CUDA libraries", () => {
  it("--device auto falls back to CPU and says so", async () => {
    const dir = await fixtureHfDir("fp32-tp1");
    const r = await runCli(["verify", dir, "--reference", referencePath("fp32-tp1"), "--device", "auto", "--no-record"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain(
      `warning: ran on CPU: CUDA execution provider unavailable: ORT's CUDA execution provider is not installed: ` +
        `libonnxruntime_providers_shared.so and libonnxruntime_providers_cuda.so missing from ${binDir}. Fix: run \`megahub gpu install\``,
    );
    expect(r.stdout).toMatch(/execution provider: CPU; \d+ nodes: \d+ on CPUExecutionProvider\n/);
  });

  it("--device auto is also the default, and --json carries the provider and the reason", async () => {
    const dir = await fixtureHfDir("fp32-tp1");
    const r = await runCli(["verify", dir, "--reference", referencePath("fp32-tp1"), "--no-record", "--json"]);
    const json = JSON.parse(r.stdout) as { ok: boolean; provider: string; fallbackReason?: string; placement: { nodes: number } };
    expect(json).toMatchObject({ ok: true, provider: "cpu", placement: { byProvider: [{ provider: "CPUExecutionProvider" }] } });
    expect(json.placement.nodes).toBeGreaterThan(100);
    expect(json.fallbackReason).toMatch(/^CUDA execution provider unavailable: ORT's CUDA execution provider is not installed/);
  });

  it("--device cuda fails with a DEVICE error that says what is missing and how to get it", async () => {
    const dir = await fixtureHfDir("fp32-tp1");
    const r = await runCli(["verify", dir, "--reference", referencePath("fp32-tp1"), "--device", "cuda", "--no-record"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("megahub verify: error: CUDA execution provider unavailable: ORT's CUDA execution provider is not installed");
    expect(r.stderr).toContain("Fix: run `megahub gpu install` (offline: `megahub gpu install --from <folder or .tgz");
    const g = await runCli(["generate", dir, "--prompt", "hi", "--device", "cuda", "--json"]);
    expect(g.code).toBe(1);
    expect(JSON.parse(g.stdout)).toMatchObject({ ok: false, error: { code: "DEVICE" } });
  });

  it("rejects an unknown device", async () => {
    const r = await runCli(["verify", "x", "--reference", "y", "--device", "tpu"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--device must be auto, cuda or cpu");
  });
});
