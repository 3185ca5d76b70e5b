import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile, copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readElfInfo, readOrtVersionString } from "../src/verify/elf.js";
import { lddTree, loaderEnv, readLdCache } from "../src/verify/ld-resolve.js";
import { parseOrtError } from "../src/verify/ort-errors.js";
import { locateOrt } from "../src/verify/ort-locate.js";
import { describePlacement, placementFromProfile } from "../src/verify/placement.js";
import { buildLib, HAS_GCC } from "./helpers/cuda.js";

/** readelf -d, the referee for the dynamic section. */
function readelf(file: string): { needed: string[]; soname?: string; runpath: string[] } {
  const out = execFileSync("readelf", ["-d", file], { encoding: "utf8" });
  const pick = (tag: string) => [...out.matchAll(new RegExp(`\\(${tag}\\)\\s+[^[]*\\[([^\\]]*)\\]`, "g"))].map((m) => m[1] as string);
  const soname = pick("SONAME")[0];
  return { needed: pick("NEEDED"), ...(soname !== undefined ? { soname } : {}), runpath: pick("RUNPATH").flatMap((r) => r.split(":")) };
}

describe.skipIf(!HAS_GCC)("ELF dynamic section and the loader's search, against readelf, ldconfig and ldd", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "megahub-elf-"));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("reads NEEDED, SONAME and RUNPATH as readelf does, for libraries built several ways", async () => {
    const dep = await buildLib(join(dir, "deps", "libdep.so.3"), { soname: "libdep.so.3" });
    const cases = [
      { name: "plain.so", opts: {} },
      { name: "named.so", opts: { soname: "libnamed.so.1" } },
      { name: "withdep.so", opts: { soname: "libwithdep.so.2", needed: [{ name: "libdep.so.3", dir: join(dir, "deps") }] } },
      { name: "runpath.so", opts: { runpath: "$ORIGIN/deps:/opt/nowhere", needed: [{ name: "libdep.so.3", dir: join(dir, "deps") }] } },
    ];
    for (const c of cases) {
      const f = await buildLib(join(dir, c.name), c.opts);
      const ours = await readElfInfo(f);
      const ref = readelf(f);
      expect({ needed: ours.needed, soname: ours.soname, runpath: ours.runpath }, c.name).toEqual({ soname: undefined, ...ref });
      expect(ours.machine).toBe(62);
      expect(ours.type).toBe(3);
    }
    expect((await readElfInfo(dep)).soname).toBe("libdep.so.3");
  });

  it("finds the first 1.x.y literal in .rodata, and none where there is none", async () => {
    const cases: [string[], string | undefined][] = [
      [["onnxruntime", "1.29.0", "1.30.0"], "1.29.0"],
      [["v1.29.0", "11.2", "1.29"], undefined],
      [["some text", "1.123.45"], "1.123.45"],
      [[], undefined],
    ];
    for (const [i, [strings, want]] of cases.entries()) {
      const f = await buildLib(join(dir, `ver${i}.so`), { strings });
      expect(await readOrtVersionString(f), strings.join(",")).toBe(want);
    }
    // The real core of the pinned onnxruntime-node says what its package.json says.
    const ort = locateOrt({});
    expect(await readOrtVersionString(ort.core)).toBe(ort.version);
  });

  it("refuses what is not a 64-bit little-endian ELF, naming the file", async () => {
    const cases: [string, Uint8Array][] = [
      ["empty", new Uint8Array(0)],
      ["text", new TextEncoder().encode("#!/bin/sh\necho not a library, but long enough to be read as a header......\n")],
      ["elf32", Uint8Array.from([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1, ...new Array(57).fill(0)])],
      ["truncated", (await import("node:fs")).readFileSync(await buildLib(join(dir, "full.so"))).subarray(0, 200)],
    ];
    for (const [name, bytes] of cases) {
      const f = join(dir, `${name}.bin`);
      await writeFile(f, bytes);
      await expect(readElfInfo(f), name).rejects.toThrow(f);
    }
  });

  it("reads /etc/ld.so.cache as ldconfig -p lists it", async () => {
    const out = execFileSync("/sbin/ldconfig", ["-p"], { encoding: "utf8" });
    const ref = new Map<string, string>();
    for (const m of out.matchAll(/^\s+(\S+) \(libc6,x86-64[^)]*\) => (\S+)$/gm)) if (!ref.has(m[1] as string)) ref.set(m[1] as string, m[2] as string);
    const ours = await readLdCache("/etc/ld.so.cache", 62);
    expect(ref.size).toBeGreaterThan(10);
    expect(Object.fromEntries(ours)).toEqual(Object.fromEntries(ref));
  });

  it("resolves a dependency tree where ldd does: RUNPATH $ORIGIN, LD_LIBRARY_PATH, the cache, and not at all", async () => {
    const a = join(dir, "tree");
    await buildLib(join(a, "origin", "liborigin.so.1"), { soname: "liborigin.so.1" });
    await buildLib(join(a, "env", "libenv.so.1"), { soname: "libenv.so.1" });
    const gone = await buildLib(join(a, "gone", "libgone.so.1"), { soname: "libgone.so.1" });
    const top = await buildLib(join(a, "libtop.so"), {
      runpath: "$ORIGIN/origin",
      needed: [
        { name: "liborigin.so.1", dir: join(a, "origin") },
        { name: "libenv.so.1", dir: join(a, "env") },
        { name: "libgone.so.1", dir: join(a, "gone") },
        { name: "libz.so.1", dir: "/lib/x86_64-linux-gnu" },
      ],
    });
    await rm(gone);
    const env = { LD_LIBRARY_PATH: join(a, "env") };
    const tree = await lddTree(top, await loaderEnv(env));
    const ldd = execFileSync("ldd", [top], { encoding: "utf8", env: { ...process.env, ...env } });
    const lddMap = new Map([...ldd.matchAll(/^\s+(\S+) => (not found|\S+)/gm)].map((m) => [m[1] as string, m[2] === "not found" ? undefined : m[2]]));
    for (const e of tree) {
      if (!lddMap.has(e.name)) continue; // ldd folds the loader itself in differently
      expect(e.path, e.name).toBe(lddMap.get(e.name));
    }
    const by = Object.fromEntries(tree.map((e) => [e.name, e.via]));
    expect(by).toMatchObject({ "liborigin.so.1": "RUNPATH", "libenv.so.1": "LD_LIBRARY_PATH", "libgone.so.1": undefined, "libz.so.1": "ld.so.cache" });
    // A file of another machine is skipped, as the loader skips it.
    await copyFile(join(a, "libtop.so"), join(a, "env", "libz.so.1"));
    const bytes = (await import("node:fs")).readFileSync(join(a, "env", "libz.so.1"));
    bytes.writeUInt16LE(183, 18);
    await writeFile(join(a, "env", "libz.so.1"), bytes);
    const again = await lddTree(top, await loaderEnv(env));
    expect(again.find((e) => e.name === "libz.so.1")?.via).toBe("ld.so.cache");
  });
});

describe("ORT's messages, reduced to their cause", () => {
  const SIG = "std::conditional_t<THRW, void, onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const char*, SUCCTYPE, const char*, const char*, int) [with ERRTYPE = cudaError; bool THRW = true]";
  const cases: { name: string; message: string; stderr?: string; want: Record<string, unknown> }[] = [
    {
      name: "load failure, cause on stderr",
      message: "OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library",
      stderr:
        "\x1b[1;31m2026-12-02 01:03:28.3 [E:onnxruntime:onnxruntime-node, provider_bridge_ort.cc:2146 Create] /onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:1988 onnxruntime::Provider& onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library /x/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory\x1b[m\n",
      want: { kind: "load", library: "/x/libonnxruntime_providers_cuda.so", error: "libcublasLt.so.13: cannot open shared object file: No such file or directory" },
    },
    {
      name: "load failure, no stderr",
      message: "OrtSessionOptionsAppendExecutionProvider_Cuda: Failed to load shared library",
      want: { kind: "load", text: "Failed to load shared library" },
    },
    {
      name: "CUDA failure after two preambles",
      message: `/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:154 ${SIG} /onnxruntime_src/onnxruntime/core/providers/cuda/cuda_call.cc:146 ${SIG} CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version ; GPU=-1 ; hostname=vm ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_execution_provider.cc ; line=345 ; expr=cudaSetDevice(info_.device_id); \n\n`,
      want: { kind: "cuda", library: "CUDA", code: 35, name: "cudaErrorInsufficientDriver", expr: "cudaSetDevice(info_.device_id)", message: "CUDA driver version is insufficient for CUDA runtime version" },
    },
    {
      name: "cuBLAS failure",
      message: "... CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED ; GPU=0 ; hostname=h ; file=x.cc ; line=1 ; expr=cublasCreate(&handle);",
      want: { kind: "cuda", library: "CUBLAS", code: 3, expr: "cublasCreate(&handle)" },
    },
    {
      name: "other ORT error",
      message: "/onnxruntime_src/x.cc:12 void f() [ONNXRuntimeError] : 10 : INVALID_GRAPH : This is an invalid model. Error: two nodes\nmore",
      want: { kind: "other", text: "This is an invalid model. Error: two nodes" },
    },
  ];
  it.each(cases)("$name", ({ message, stderr, want }) => {
    expect(parseOrtError(message, stderr)).toMatchObject(want);
  });
  it("never throws and always says something, whatever it is given", () => {
    const seeds = ["", "\n\n", "CUDA failure", "CUDA failure x: y", "Failed to load library", "[ONNXRuntimeError] : : :", "\x1b[m"];
    let r = 12345;
    for (let i = 0; i < 200; i++) {
      r = (r * 1103515245 + 12345) % 2 ** 31;
      const s = (seeds[r % seeds.length] ?? "") + String.fromCharCode(...Array.from({ length: r % 40 }, (_, j) => 32 + ((r >> j) % 90)));
      const f = parseOrtError(s, i % 2 ? s : "");
      expect(f.text.length).toBeGreaterThan(0);
    }
  });
});

describe("where nodes ran, from an ORT profile", () => {
  it("counts each node once per provider, with op types, and says it in one line", () => {
    const ev = (name: string, provider: string, op: string) => ({ cat: "Node", name, args: { provider, op_name: op } });
    const p = placementFromProfile([
      { cat: "Session", name: "model_loading_array", args: {} },
      ev("mm_kernel_time", "CUDAExecutionProvider", "MatMul"),
      ev("mm_fence_before", "CUDAExecutionProvider", "MatMul"),
      ev("relu_kernel_time", "CUDAExecutionProvider", "Relu"),
      ev("shape_kernel_time", "CPUExecutionProvider", "Shape"),
      ev("mm_kernel_time", "CUDAExecutionProvider", "MatMul"), // a second run
    ]);
    expect(p).toEqual({
      nodes: 3,
      byProvider: [
        { provider: "CUDAExecutionProvider", nodes: 2, ops: { MatMul: 1, Relu: 1 } },
        { provider: "CPUExecutionProvider", nodes: 1, ops: { Shape: 1 } },
      ],
    });
    expect(describePlacement(p, "CUDAExecutionProvider")).toBe("3 nodes: 2 on CUDAExecutionProvider, 1 on CPUExecutionProvider (Shape ×1)");
  });
  it("refuses what is not an event list, and skips events that are not nodes", () => {
    for (const bad of [null, 3, "x", { cat: "Node" }]) expect(() => placementFromProfile(bad)).toThrow(/JSON array/);
    expect(placementFromProfile([null, 1, { cat: "Node" }, { cat: "Node", name: "a", args: { provider: 1 } }])).toEqual({ nodes: 0, byProvider: [] });
  });
});
