import { existsSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { MegahubError } from "../errors.js";
import { readOrtVersionString } from "./elf.js";

/**
 * Where the onnxruntime-node in use lives, and the files ORT's CUDA execution provider needs beside its core.
 *
 * ORT loads a provider from the folder of its core library (libonnxruntime.so.1): libonnxruntime_providers_shared.so
 * (the core↔provider bridge) and libonnxruntime_providers_cuda.so. onnxruntime-node's npm tarball ships neither, its
 * install script fetches a CUDA 12 build from a feed, and a provider of another ORT version does not fail cleanly —
 * so megahub pins onnxruntime-node and installs the provider of exactly that version itself (`megahub gpu install`).
 */

/** The onnxruntime-node megahub is pinned to (package.json); CPU and CUDA runs use this one core. */
export const ORT_VERSION = "1.29.0";

/**
 * The npm package that carries ORT 1.29.0's Linux x64 GPU providers as ordinary package content (a republication of
 * NuGet Microsoft.ML.OnnxRuntime.Gpu.Linux 1.29.0). Built against CUDA 13 and cuDNN 9.
 */
export const CUDA_PROVIDER_PACKAGE = {
  name: "com.github.asus4.onnxruntime.linux-x64-gpu",
  version: "0.4.9",
  /** The registry's dist.integrity for that version; a tarball that does not hash to it is refused. */
  integrity: "sha512-FopIhNE/Ng+v2X65wVc9clPCBCvhvA53Hxo2U0Kf5fGdVsC7iCA+mZ0KLWggcQAj7TIZ6pNidR4AC10g74Xo6w==",
  ortVersion: ORT_VERSION,
} as const;

export const PROVIDER_FILES = {
  shared: "libonnxruntime_providers_shared.so",
  cuda: "libonnxruntime_providers_cuda.so",
} as const;

/** Set to an onnxruntime-node package folder to use that one instead of megahub's own (a GPU install elsewhere). */
export const ORT_DIR_ENV = "MEGAHUB_ONNXRUNTIME_NODE";

export interface OrtInstall {
  /** The onnxruntime-node package folder. */
  packageDir: string;
  /** Its package.json version. */
  version: string;
  /** The folder of the core library, where providers must be. */
  binDir: string;
  /** The core library's path (it may not exist on an unsupported platform). */
  core: string;
  /** True when MEGAHUB_ONNXRUNTIME_NODE chose it. */
  fromEnv: boolean;
}

const CORE_NAME: Readonly<Record<string, string>> = { linux: "libonnxruntime.so.1", darwin: "libonnxruntime.1.dylib", win32: "onnxruntime.dll" };

export function locateOrt(env: NodeJS.ProcessEnv = process.env): OrtInstall {
  const fromEnv = env[ORT_DIR_ENV] !== undefined && env[ORT_DIR_ENV] !== "";
  let packageDir: string;
  if (fromEnv) {
    packageDir = resolve(env[ORT_DIR_ENV] as string);
  } else {
    try {
      packageDir = dirname(createRequire(import.meta.url).resolve("onnxruntime-node/package.json"));
    } catch (e) {
      throw new MegahubError("DEVICE", `onnxruntime-node is not installed (${(e as Error).message.split("\n")[0]}); run npm install`);
    }
  }
  const pkgFile = join(packageDir, "package.json");
  let version: string;
  try {
    const pkg = JSON.parse(readFileSync(pkgFile, "utf8")) as { name?: unknown; version?: unknown };
    if (pkg.name !== "onnxruntime-node" || typeof pkg.version !== "string") throw new Error("not the onnxruntime-node package");
    version = pkg.version;
  } catch (e) {
    const why = fromEnv ? ` (from ${ORT_DIR_ENV})` : "";
    throw new MegahubError("DEVICE", `${pkgFile}${why}: not an onnxruntime-node package: ${(e as Error).message}`);
  }
  const binDir = join(packageDir, "bin", "napi-v6", process.platform, process.arch);
  return { packageDir, version, binDir, core: join(binDir, CORE_NAME[process.platform] ?? "libonnxruntime.so.1"), fromEnv };
}

export type Ort = typeof import("onnxruntime-node");

/** Loads the onnxruntime-node module of an install (its native core comes with it). */
export function requireOrt(install: OrtInstall): Ort {
  const m = createRequire(import.meta.url)(install.packageDir) as Ort & { default?: Ort };
  return m.default ?? m;
}

/** Reading a 230 MB provider's .rodata costs ~0.1 s: remember the answer per file state. */
const versionCache = new Map<string, string | undefined>();

/** The ORT version a core or provider library was built as, or undefined when it carries no version string. */
export async function libraryOrtVersion(path: string): Promise<string | undefined> {
  const st = statSync(path);
  const key = `${path}\0${st.size}\0${st.mtimeMs}\0${st.ino}`;
  if (!versionCache.has(key)) versionCache.set(key, await readOrtVersionString(path));
  return versionCache.get(key);
}

export interface ProviderState {
  shared: { path: string; present: boolean };
  cuda: { path: string; present: boolean; version?: string };
  coreVersion?: string;
}

/** Which provider files sit beside the core, and their versions. */
export async function providerState(install: OrtInstall): Promise<ProviderState> {
  const shared = join(install.binDir, PROVIDER_FILES.shared);
  const cuda = join(install.binDir, PROVIDER_FILES.cuda);
  const state: ProviderState = { shared: { path: shared, present: existsSync(shared) }, cuda: { path: cuda, present: existsSync(cuda) } };
  if (existsSync(install.core)) {
    const v = await libraryOrtVersion(install.core).catch(() => undefined);
    if (v !== undefined) state.coreVersion = v;
  }
  if (state.cuda.present) {
    const v = await libraryOrtVersion(cuda).catch(() => undefined);
    if (v !== undefined) state.cuda.version = v;
  }
  return state;
}
