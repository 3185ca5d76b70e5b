import { execFileSync } from "node:child_process";
import { mkdir, rm, symlink } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { binDirOf, HAS_STANDINS, ortCopy, runMegahub, STANDIN_LIB_DIR, STANDIN_PROVIDER_DIR } from "./helpers/cuda.js";
import { cleanupHfDirs, fixtureHfDir, referencePath } from "./verify-helpers.js";

/**
 * ORT 1.29.0's real CUDA provider, installed by `megahub gpu install --from` into a private onnxruntime-node copy, with
 * stand-in CUDA 13 libraries (scripts/make_cuda_standins.sh) in front of the loader: ORT loads the provider through
 * its bridge, the provider binds every CUDA symbol, and the first call that needs a device — cudaSetDevice — returns
 * 100. No GPU is involved or needed. The stand-in's error string reports NVIDIA_TF32_OVERRIDE as the CUDA libraries
 * saw it, which is how the TF32 default is checked end to end.
 */
const CUDA = "libonnxruntime_providers_cuda.so";
let pkg: string;
let partial: string;

interface DoctorJson {
  usable: boolean;
  stage: string;
  verdict: string;
  libraries: { name: string; path?: string; via?: string; role: string }[];
  probe?: { ok: boolean; failure?: { kind: string; code?: number; expr?: string; library?: string; error?: string } };
}

beforeAll(async () => {
  if (!HAS_STANDINS) return;
  pkg = await ortCopy();
  const r = await runMegahub(["gpu", "install", "--from", STANDIN_PROVIDER_DIR], { MEGAHUB_ONNXRUNTIME_NODE: pkg });
  if (r.code !== 0) throw new Error(`gpu install failed: ${r.stderr}`);
  // Every stand-in but cuBLASLt, for the "a CUDA library is missing" case.
  partial = join(pkg, "..", "..", "standins-partial");
  await mkdir(partial);
  for (const lib of ["libcudart.so.13", "libcublas.so.13", "libcurand.so.10", "libcuda.so.1"]) await symlink(join(STANDIN_LIB_DIR, lib), join(partial, lib));
});
afterAll(async () => {
  await cleanupHfDirs();
  if (pkg) await rm(join(pkg, "..", ".."), { recursive: true, force: true });
});

const cublasLtInCache = (() => {
  try {
    return execFileSync("/sbin/ldconfig", ["-p"], { encoding: "utf8" }).includes("libcublasLt.so.13 ");
  } catch {
    return false;
  }
})();

describe.skipIf(!HAS_STANDINS)("the real CUDA provider with stand-in CUDA libraries", () => {
  const env = () => ({ MEGAHUB_ONNXRUNTIME_NODE: pkg, LD_LIBRARY_PATH: STANDIN_LIB_DIR });

  it("doctor: every library found where the loader finds it; the session fails cleanly at cudaSetDevice with error 100", async () => {
    const r = await runMegahub(["doctor", "--json"], env());
    const d = JSON.parse(r.stdout) as DoctorJson;
    for (const lib of ["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcurand.so.10", "libcuda.so.1"]) {
      expect(d.libraries.find((l) => l.name === lib), lib).toMatchObject({ role: "needed", path: join(STANDIN_LIB_DIR, lib), via: "LD_LIBRARY_PATH" });
    }
    expect(d).toMatchObject({ usable: false, stage: "session" });
    expect(d.probe?.failure).toMatchObject({ kind: "cuda", library: "CUDA", code: 100, expr: "cudaSetDevice(info_.device_id)" });
    expect(d.verdict).toBe(
      "CUDA execution provider unavailable: the CUDA provider loaded but could not start: CUDA failure 100 (cudaErrorNoDevice) " +
        "at cudaSetDevice(info_.device_id): stand-in libcudart.so.13: no CUDA device (NVIDIA_TF32_OVERRIDE=0). Fix: no GPU is " +
        "visible to this process (check nvidia-smi and CUDA_VISIBLE_DEVICES); or use --device cpu",
    );
  });

  it("--device cuda fails with the doctor's verdict; auto runs on CPU and says the same, with every node on CPU", async () => {
    const d = JSON.parse((await runMegahub(["doctor", "--json"], env())).stdout) as DoctorJson;
    const dir = await fixtureHfDir("fp32-tp1");
    const args = ["verify", dir, "--reference", referencePath("fp32-tp1"), "--no-record"];
    const cuda = await runMegahub([...args, "--device", "cuda"], env());
    expect(cuda.code).toBe(1);
    expect(cuda.stderr).toBe(`megahub verify: error: ${d.verdict}\n`);
    const auto = await runMegahub([...args, "--device", "auto"], env());
    expect(auto.code, auto.stderr).toBe(0);
    expect(auto.stderr).toContain(`warning: ran on CPU: ${d.verdict}`);
    expect(auto.stdout).toMatch(/execution provider: CPU; \d+ nodes: \d+ on CPUExecutionProvider\n/);
    const json = JSON.parse((await runMegahub([...args, "--json"], env())).stdout) as {
      ok: boolean; provider: string; fallbackReason: string; tf32: boolean; placement: { nodes: number; byProvider: { provider: string; nodes: number }[] };
    };
    expect(json).toMatchObject({ ok: true, provider: "cpu", fallbackReason: d.verdict, tf32: false });
    expect(json.placement.byProvider).toEqual([expect.objectContaining({ provider: "CPUExecutionProvider", nodes: json.placement.nodes })]);
    const g = await runMegahub(["generate", dir, "--prompt", "hi", "--device", "cuda", "--json"], env());
    expect(g.code).toBe(1);
    expect(JSON.parse(g.stdout)).toMatchObject({ ok: false, error: { code: "DEVICE", message: d.verdict } });
  });

  it("the CUDA libraries see NVIDIA_TF32_OVERRIDE=0 unless --tf32, whatever the shell had", async () => {
    const dir = await fixtureHfDir("fp32-tp1");
    const args = ["verify", dir, "--reference", referencePath("fp32-tp1"), "--no-record", "--json"];
    const cases: [string[], Record<string, string>, string][] = [
      [[], {}, "NVIDIA_TF32_OVERRIDE=0"],
      [[], { NVIDIA_TF32_OVERRIDE: "1" }, "NVIDIA_TF32_OVERRIDE=0"],
      [["--tf32"], {}, "NVIDIA_TF32_OVERRIDE=<unset>"],
      [["--tf32"], { NVIDIA_TF32_OVERRIDE: "0" }, "NVIDIA_TF32_OVERRIDE=<unset>"],
    ];
    for (const [flags, extra, want] of cases) {
      const r = JSON.parse((await runMegahub([...args, ...flags], { ...env(), ...extra })).stdout) as { fallbackReason: string; tf32: boolean; tolerance: { tf32?: boolean; maxAbs?: number } };
      expect(r.fallbackReason, `${flags} ${JSON.stringify(extra)}`).toContain(want);
      // It ran on CPU, so TF32 played no part and the fp32 gates stand.
      expect(r.tf32).toBe(false);
      expect(r.tolerance.tf32).toBeUndefined();
      expect(r.tolerance.maxAbs).toBe(1e-4);
    }
  });

  it.skipIf(cublasLtInCache)("a missing CUDA library: doctor names it, and --device cuda carries ORT's own loader words", async () => {
    const e = { MEGAHUB_ONNXRUNTIME_NODE: pkg, LD_LIBRARY_PATH: partial };
    const d = JSON.parse((await runMegahub(["doctor", "--json"], e)).stdout) as DoctorJson;
    expect(d).toMatchObject({ usable: false, stage: "libraries" });
    expect(d.libraries.find((l) => l.name === "libcublasLt.so.13")?.path).toBeUndefined();
    const ortWords = `Failed to load library ${join(binDirOf(pkg), CUDA)} with error: libcublasLt.so.13: cannot open shared object file: No such file or directory`;
    expect(d.probe?.failure).toMatchObject({ kind: "load", library: join(binDirOf(pkg), CUDA) });
    expect(d.verdict).toContain(`libcublasLt.so.13 (needed by ${CUDA}) not found on the loader's path (ORT: ${ortWords})`);
    const dir = await fixtureHfDir("fp32-tp1");
    const cuda = await runMegahub(["verify", dir, "--reference", referencePath("fp32-tp1"), "--device", "cuda", "--no-record"], e);
    expect(cuda.code).toBe(1);
    expect(cuda.stderr).toBe(`megahub verify: error: ${d.verdict}\n`);
  });
});
