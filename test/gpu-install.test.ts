import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { binDirOf, buildLib, HAS_GCC, ortCopy, runMegahub } from "./helpers/cuda.js";
import { cleanupHfDirs, fixtureHfDir, referencePath } from "./verify-helpers.js";

/**
 * `megahub gpu install` and `megahub doctor` on provider look-alikes built with gcc (right names, NEEDED lists and
 * ORT version strings, no ORT inside), installed into a private onnxruntime-node copy. None of these is ever
 * dlopen'ed by ORT: the checks that refuse them run before it (doctor --no-probe; verify's pre-flight).
 */
const SHARED = "libonnxruntime_providers_shared.so";
const CUDA = "libonnxruntime_providers_cuda.so";
const FAKE_CUDART = "libmegahubfake_cudart.so.13";

let root: string;
let cudaDir: string;
const sha = (f: string) => createHash("sha256").update(readFileSync(f)).digest("hex");

/** A provider pair in `dir` (at `sub` below it) whose CUDA provider says it is ORT `version`. */
async function fakeProviders(dir: string, version: string, sub = ""): Promise<string> {
  const at = join(dir, sub);
  await buildLib(join(at, SHARED), { soname: SHARED });
  await buildLib(join(at, CUDA), { strings: ["onnxruntime", version], needed: [{ name: FAKE_CUDART, dir: cudaDir }] });
  return dir;
}

beforeAll(async () => {
  if (!HAS_GCC) return;
  root = await mkdtemp(join(tmpdir(), "megahub-gpu-install-"));
  cudaDir = join(root, "cuda-libs");
  await buildLib(join(cudaDir, FAKE_CUDART), { soname: FAKE_CUDART });
});
afterAll(async () => {
  await cleanupHfDirs();
  if (root) await rm(root, { recursive: true, force: true });
});

describe.skipIf(!HAS_GCC)("megahub gpu install --from", () => {
  it("installs from a folder (found a few levels down) and from a .tgz, byte for byte, and records where from", async () => {
    const src = await fakeProviders(join(root, "src-ok"), "1.29.0", "package/Plugins/Linux/x64");
    const tgz = join(root, "ok.tgz");
    execFileSync("tar", ["-czf", tgz, "-C", src, "package"]);
    for (const from of [src, tgz]) {
      const pkg = await ortCopy();
      const r = await runMegahub(["gpu", "install", "--from", from, "--json"], { MEGAHUB_ONNXRUNTIME_NODE: pkg });
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { ok: boolean; ortVersion: string; files: { name: string; sha256: string }[] };
      expect(out).toMatchObject({ ok: true, ortVersion: "1.29.0" });
      const bin = binDirOf(pkg);
      for (const name of [SHARED, CUDA]) {
        const want = sha(join(src, "package/Plugins/Linux/x64", name));
        expect(sha(join(bin, name)), name).toBe(want);
        expect(out.files.find((f) => f.name === name)?.sha256).toBe(want);
      }
      const record = JSON.parse(readFileSync(join(bin, "megahub-gpu.json"), "utf8")) as { source: string };
      expect(record.source).toBe(from);
      expect((await readdir(bin)).filter((f) => f.includes(".tmp-"))).toEqual([]);
    }
  });

  it("refuses sources ORT would not load or would crash on, and leaves the core's folder as it was", async () => {
    const wrong = await fakeProviders(join(root, "src-128"), "1.28.0");
    const noShared = join(root, "src-noshared");
    await mkdir(noShared);
    await copyFile(join(wrong, CUDA), join(noShared, CUDA));
    const noVersion = join(root, "src-nover");
    await buildLib(join(noVersion, SHARED), { soname: SHARED });
    await buildLib(join(noVersion, CUDA), {});
    const text = join(root, "src-text");
    await mkdir(text);
    await writeFile(join(text, SHARED), "not a library at all, just text that happens to be long enough\n".repeat(3));
    await copyFile(join(wrong, CUDA), join(text, CUDA));
    const twice = join(root, "src-twice");
    await fakeProviders(twice, "1.29.0", "a");
    await fakeProviders(twice, "1.29.0", "b");
    const twiceTgz = join(root, "twice.tgz");
    execFileSync("tar", ["-czf", twiceTgz, "-C", twice, "a", "b"]);
    const notGzip = join(root, "plain.tar");
    execFileSync("tar", ["-cf", notGzip, "-C", wrong, CUDA]);
    const badGzip = join(root, "bad.tgz");
    await writeFile(badGzip, Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(100, 7)]));
    const cases: [string, string, RegExp][] = [
      ["another ORT version", wrong, /libonnxruntime_providers_cuda\.so from .* is ORT 1\.28\.0 but the core is 1\.29\.0/],
      ["no shared provider", noShared, /holds no libonnxruntime_providers_shared\.so/],
      ["no version string", noVersion, /is ORT of no recognisable version but the core is 1\.29\.0/],
      ["not a library", text, /libonnxruntime_providers_shared\.so from .* is not a shared library/],
      ["two copies in a folder", twice, /libonnxruntime_providers_\w+\.so is there 2 times/],
      ["two copies in a tgz", twiceTgz, /holds libonnxruntime_providers_\w+\.so twice/],
      ["not gzip", notGzip, /neither a folder nor a gzip'd tar/],
      ["corrupt gzip", badGzip, /cannot read this \.tgz/],
      ["nothing there", join(root, "absent"), /no such file or folder/],
    ];
    const pkg = await ortCopy();
    const bin = binDirOf(pkg);
    const before = (await readdir(bin)).sort();
    for (const [name, from, want] of cases) {
      const r = await runMegahub(["gpu", "install", "--from", from], { MEGAHUB_ONNXRUNTIME_NODE: pkg });
      expect(r.code, name).not.toBe(0);
      expect(r.stderr, name).toMatch(want);
      expect((await readdir(bin)).sort(), name).toEqual(before);
    }
  });
});

interface DoctorJson {
  usable: boolean;
  stage: string;
  verdict: string;
  fix: string;
  libraries: { name: string; path?: string; via?: string; offPath?: string; role: string }[];
}

describe.skipIf(!HAS_GCC)("megahub doctor and --device on provider files it must not load", () => {
  it("follows the provider's libraries ldd-style and gives the LD_LIBRARY_PATH that fixes them", async () => {
    const pkg = await ortCopy();
    await fakeProviders(binDirOf(pkg), "1.29.0");
    const env = { MEGAHUB_ONNXRUNTIME_NODE: pkg, LD_LIBRARY_PATH: "" };
    const missing = JSON.parse((await runMegahub(["doctor", "--no-probe", "--json"], env)).stdout) as DoctorJson;
    expect(missing).toMatchObject({ usable: false, stage: "libraries" });
    expect(missing.libraries.find((l) => l.name === FAKE_CUDART)).toMatchObject({ role: "needed" });
    expect(missing.libraries.find((l) => l.name === FAKE_CUDART)?.path).toBeUndefined();
    expect(missing.verdict).toContain(`${FAKE_CUDART} (needed by ${CUDA}) not found on the loader's path`);
    const searched = JSON.parse((await runMegahub(["doctor", "--no-probe", "--json", "--search", cudaDir], env)).stdout) as DoctorJson;
    expect(searched.libraries.find((l) => l.name === FAKE_CUDART)?.offPath).toBe(join(cudaDir, FAKE_CUDART));
    expect(searched.fix).toBe(`export LD_LIBRARY_PATH=${cudaDir}\${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} (found there, off the loader's path)`);
    const text = await runMegahub(["doctor", "--no-probe", "--search", cudaDir], env);
    expect(text.stdout).toContain(`${FAKE_CUDART} => not found — present off the loader's path at ${join(cudaDir, FAKE_CUDART)}`);
    const found = JSON.parse((await runMegahub(["doctor", "--no-probe", "--json"], { ...env, LD_LIBRARY_PATH: cudaDir })).stdout) as DoctorJson;
    expect(found.libraries.find((l) => l.name === FAKE_CUDART)).toMatchObject({ path: join(cudaDir, FAKE_CUDART), via: "LD_LIBRARY_PATH" });
    expect(found.usable).toBe(true); // as far as files go: --no-probe never opens a session
    const required = await runMegahub(["doctor", "--no-probe", "--require-cuda"], env);
    expect(required.code).toBe(1);
  });

  it("a provider of another ORT version is never loaded: doctor says so, --device cuda fails with its verdict, auto falls back", async () => {
    const pkg = await ortCopy();
    await fakeProviders(binDirOf(pkg), "1.28.0");
    const env = { MEGAHUB_ONNXRUNTIME_NODE: pkg };
    const d = JSON.parse((await runMegahub(["doctor", "--json"], env)).stdout) as DoctorJson;
    expect(d).toMatchObject({ usable: false, stage: "provider-version" });
    expect(d.verdict).toBe(
      "CUDA execution provider unavailable: the CUDA provider is ORT 1.28.0 but the core is 1.29.0; ORT crashes rather than fails " +
        "on a mismatched provider, so CUDA is not tried. Fix: run `megahub gpu install` (offline: `megahub gpu install --from " +
        "<folder or .tgz with libonnxruntime_providers_cuda.so and libonnxruntime_providers_shared.so of ORT 1.29.0>`) to replace it",
    );
    const dir = await fixtureHfDir("fp32-tp1");
    const cuda = await runMegahub(["verify", dir, "--reference", referencePath("fp32-tp1"), "--device", "cuda", "--no-record"], env);
    expect(cuda.code).toBe(1);
    expect(cuda.stderr).toBe(`megahub verify: error: ${d.verdict}\n`);
    const auto = await runMegahub(["verify", dir, "--reference", referencePath("fp32-tp1"), "--no-record", "--json"], env);
    expect(auto.code).toBe(0);
    expect(JSON.parse(auto.stdout)).toMatchObject({ ok: true, provider: "cpu", fallbackReason: d.verdict });
  });

  it("gpu install refuses a source of another version over an installed matching one, keeping it", async () => {
    const pkg = await ortCopy();
    const good = await fakeProviders(join(root, "keep-good"), "1.29.0");
    const bad = await fakeProviders(join(root, "keep-bad"), "1.30.0");
    expect((await runMegahub(["gpu", "install", "--from", good], { MEGAHUB_ONNXRUNTIME_NODE: pkg })).code).toBe(0);
    const r = await runMegahub(["gpu", "install", "--from", bad], { MEGAHUB_ONNXRUNTIME_NODE: pkg });
    expect(r.stderr).toMatch(/is ORT 1\.30\.0 but the core is 1\.29\.0/);
    expect(sha(join(binDirOf(pkg), CUDA))).toBe(sha(join(good, CUDA)));
  });
});
