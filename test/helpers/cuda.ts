/**
 * What the CUDA-provider tests need, none of it a GPU:
 * - a private copy of onnxruntime-node (ortCopy) whose core folder a test may fill with provider files, selected
 *   through MEGAHUB_ONNXRUNTIME_NODE — the shared install is never touched;
 * - HAS_GCC: gcc + nm, to build small ELF libraries with chosen NEEDED lists and version strings;
 * - HAS_STANDINS: ORT 1.29.0's real CUDA provider plus stand-in CUDA 13 libraries (scripts/make_cuda_standins.sh,
 *   which .ci/run calls; CI sets MEGAHUB_REQUIRE_CUDA_STANDINS=1 so their absence fails instead of skipping);
 * - runMegahub: the built CLI in a child process, because LD_LIBRARY_PATH only counts when a process starts.
 */
import { execFile, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, cp, mkdir, mkdtemp, symlink, writeFile } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createRequire } from "node:module";

export const STANDINS_CACHE =
  process.env.MEGAHUB_CUDA_STANDINS ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "megahub", "cuda-standins");
export const STANDIN_PROVIDER_DIR = join(STANDINS_CACHE, "provider");
export const STANDIN_LIB_DIR = join(STANDINS_CACHE, "standins");

const has = (cmd: string) => {
  try {
    execFileSync(cmd, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
};

export const HAS_GCC: boolean = process.platform === "linux" && process.arch === "x64" && has("gcc") && has("nm");
export const HAS_STANDINS: boolean =
  process.platform === "linux" &&
  process.arch === "x64" &&
  existsSync(join(STANDIN_PROVIDER_DIR, "libonnxruntime_providers_cuda.so")) &&
  existsSync(join(STANDIN_LIB_DIR, ".done"));
if (!HAS_STANDINS && process.env.MEGAHUB_REQUIRE_CUDA_STANDINS === "1") {
  throw new Error(`MEGAHUB_REQUIRE_CUDA_STANDINS=1 but ${STANDINS_CACHE} is incomplete: run scripts/make_cuda_standins.sh`);
}
if (!HAS_GCC && process.env.MEGAHUB_REQUIRE_CUDA_STANDINS === "1") {
  throw new Error("MEGAHUB_REQUIRE_CUDA_STANDINS=1 but gcc or nm is missing: apt-get install gcc libc6-dev binutils");
}
if (!HAS_STANDINS) {
  process.stderr.write(`note: no CUDA stand-ins at ${STANDINS_CACHE} — CUDA provider loading tests skip (scripts/make_cuda_standins.sh)\n`);
}

const realOrt = dirname(createRequire(import.meta.url).resolve("onnxruntime-node/package.json"));

/**
 * A copy of onnxruntime-node in a temp folder: its JS and binding copied (Node resolves a symlinked binding to its
 * real folder, and the binding finds the core through $ORIGIN), the 45 MB core symlinked (ORT looks for providers
 * beside the path it was loaded by, the symlink's folder). Returns the package folder.
 */
export async function ortCopy(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "megahub-ortcopy-"));
  const pkg = join(root, "node_modules", "onnxruntime-node");
  const bin = join("bin", "napi-v6", process.platform, process.arch);
  await mkdir(join(pkg, bin), { recursive: true });
  await cp(join(realOrt, "dist"), join(pkg, "dist"), { recursive: true });
  await copyFile(join(realOrt, "package.json"), join(pkg, "package.json"));
  await copyFile(join(realOrt, bin, "onnxruntime_binding.node"), join(pkg, bin, "onnxruntime_binding.node"));
  await symlink(join(realOrt, bin, "libonnxruntime.so.1"), join(pkg, bin, "libonnxruntime.so.1"));
  await symlink(join(dirname(realOrt), "onnxruntime-common"), join(root, "node_modules", "onnxruntime-common"));
  return pkg;
}

export const binDirOf = (pkg: string): string => join(pkg, "bin", "napi-v6", process.platform, process.arch);

/**
 * Builds a shared library with gcc: `needed` become DT_NEEDED (each must exist in `libDirs`, given as -L), `runpath`
 * DT_RUNPATH, `strings` land in .rodata as NUL-terminated literals (e.g. an ORT version string).
 */
export async function buildLib(
  out: string,
  options: { soname?: string; needed?: { name: string; dir: string }[]; runpath?: string; strings?: string[] } = {},
): Promise<string> {
  await mkdir(dirname(out), { recursive: true });
  const src = `${out}.c`;
  const lits = (options.strings ?? []).map((s, i) => `const char megahub_lit_${i}[] = ${JSON.stringify(s)};`).join("\n");
  await writeFile(src, `${lits}\nint megahub_test_fn(void) { return 7; }\n`);
  const args = ["-shared", "-fPIC", "-o", out, src, "-Wl,--no-as-needed"];
  if (options.soname) args.push(`-Wl,-soname,${options.soname}`);
  if (options.runpath) args.push(`-Wl,-rpath,${options.runpath}`, "-Wl,--enable-new-dtags");
  for (const n of options.needed ?? []) args.push(join(n.dir, n.name));
  await new Promise<void>((res, rej) => execFile("gcc", args, (e, _o, stderr) => (e ? rej(new Error(stderr || e.message)) : res())));
  return out;
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** bin/megahub.js (the built dist/) in a child process with `env` added to this one's. */
export function runMegahub(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  return new Promise((res) => {
    execFile(
      process.execPath,
      ["bin/megahub.js", ...args],
      { env: { ...process.env, ...env }, maxBuffer: 64 << 20 },
      (e, stdout, stderr) => res({ code: e ? ((e as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}
