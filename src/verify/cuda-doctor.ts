import { dirname } from "node:path";
import { cudaSearchDirs, findOffPath, lddTree, loaderEnv, resolveLibrary, type LddEntry, type LoaderEnv } from "./ld-resolve.js";
import { CUDA_ERRORS, type OrtFailure } from "./ort-errors.js";
import { locateOrt, ORT_VERSION, PROVIDER_FILES, providerState, type OrtInstall, type ProviderState } from "./ort-locate.js";
import { probeCuda, type ProbeResult } from "./ort-probe.js";

/**
 * Why ORT's CUDA execution provider can or cannot run here, and the exact fix — one diagnosis shared by `megahub
 * doctor` and by `--device cuda|auto`, so a failed verify says what the doctor says. Checks run cheapest first and
 * stop at the first that fails: platform, provider files, provider version against the core, the loader's view of
 * every library the provider needs (ldd-style, without loading anything), then a real CUDA session in a child.
 */

/** Libraries the ORT 1.29 CUDA provider opens with dlopen only when an op needs them (not in its NEEDED list). */
export const CUDA_LAZY_LIBRARIES: readonly { name: string; purpose: string }[] = [
  { name: "libcudnn.so.9", purpose: "cuDNN 9: convolutions and some RNN ops; megahub's transformer graphs do not call it" },
  { name: "libcufft.so.12", purpose: "cuFFT (CUDA 13 ships cuFFT 12): FFT ops only" },
];

/** NEEDED entries that are glibc/libstdc++ and not CUDA's business (reported only if missing). */
const SYSTEM = /^(libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|ld-linux[\w-]*)\.so/;

export interface LibraryReport extends LddEntry {
  /** "needed": in the NEEDED tree; "lazy": dlopen'ed when used. */
  role: "needed" | "lazy";
  /** Not on the loader's path but present here (a wheel or toolkit folder). */
  offPath?: string;
  purpose?: string;
}

export type CudaStage = "platform" | "provider-files" | "provider-version" | "libraries" | "session" | "ok";

export interface CudaDiagnosis {
  usable: boolean;
  /** The check that failed ("ok" when usable). */
  stage: CudaStage;
  /** One sentence: what is wrong (undefined when usable). */
  cause?: string;
  /** What to run or change. */
  fix?: string;
  ort: OrtInstall & { coreVersion?: string; pinned: string };
  provider?: ProviderState;
  libraries: LibraryReport[];
  probe?: ProbeResult;
  /** NVIDIA_TF32_OVERRIDE as this process sees it. */
  tf32Override?: string;
}

export interface DiagnoseOptions {
  /** Open a CUDA session in a child process as the last check. @default true */
  probe?: boolean;
  /** A failure already met in this process (openSession); the probe then only runs to learn ORT's words. */
  failure?: OrtFailure;
  /** Stop after the checks that need no loading (platform, files, versions): openSession's pre-flight. */
  staticOnly?: boolean;
  /** Extra folders to look in for libraries off the loader's path. */
  search?: readonly string[];
  env?: NodeJS.ProcessEnv;
  deviceId?: number;
}

export const GPU_INSTALL_FIX =
  "run `megahub gpu install` (offline: `megahub gpu install --from <folder or .tgz with libonnxruntime_providers_cuda.so " +
  `and libonnxruntime_providers_shared.so of ORT ${ORT_VERSION}>\`)`;

const CUDA13_INSTALL =
  "install CUDA 13's runtime libraries — `pip install nvidia-cuda-runtime nvidia-cublas nvidia-curand` (the CUDA 13 " +
  "wheels; add their nvidia/cu13/lib folder to LD_LIBRARY_PATH) or NVIDIA's cuda-cudart-13-0 libcublas-13-0 " +
  "libcurand-13-0 packages";

export async function diagnoseCuda(options: DiagnoseOptions = {}): Promise<CudaDiagnosis> {
  const env = options.env ?? process.env;
  const install = locateOrt(env);
  const ort: CudaDiagnosis["ort"] = { ...install, pinned: ORT_VERSION };
  const d: CudaDiagnosis = { usable: false, stage: "platform", ort, libraries: [] };
  if (env.NVIDIA_TF32_OVERRIDE !== undefined) d.tf32Override = env.NVIDIA_TF32_OVERRIDE;
  const fail = (stage: CudaStage, cause: string, fix: string) => Object.assign(d, { usable: false, stage, cause, fix });
  if (process.platform !== "linux" || process.arch !== "x64") {
    return fail("platform", `megahub installs ORT's CUDA provider for linux x64 only; this is ${process.platform} ${process.arch}`, "use --device cpu");
  }
  const state = await providerState(install);
  d.provider = state;
  if (state.coreVersion !== undefined) ort.coreVersion = state.coreVersion;
  const missing = [state.shared, state.cuda].filter((f) => !f.present).map((f) => f.path.split("/").pop());
  if (missing.length > 0) {
    return fail("provider-files", `ORT's CUDA execution provider is not installed: ${missing.join(" and ")} missing from ${install.binDir}`, GPU_INSTALL_FIX);
  }
  const core = state.coreVersion ?? install.version;
  if (state.cuda.version !== core) {
    const prov = state.cuda.version ?? "of an unknown version (no version string)";
    const fix = core === ORT_VERSION ? `${GPU_INSTALL_FIX} to replace it` : `npm install onnxruntime-node@${ORT_VERSION} (megahub is pinned to it), then ${GPU_INSTALL_FIX}`;
    return fail("provider-version", `the CUDA provider is ORT ${prov} but the core is ${core}; ORT crashes rather than fails on a mismatched provider, so CUDA is not tried`, fix);
  }
  if (options.staticOnly) return Object.assign(d, { usable: true, stage: "ok" as const });
  const le = await loaderEnv(env);
  const search = await cudaSearchDirs(env, options.search ?? []);
  const tree = await lddTree(state.cuda.path, le);
  for (const e of tree) if (!SYSTEM.test(e.name) || e.path === undefined) d.libraries.push({ ...e, role: "needed" });
  for (const lazy of CUDA_LAZY_LIBRARIES) {
    const hit = await lddLike(lazy.name, le);
    d.libraries.push({ name: lazy.name, neededBy: PROVIDER_FILES.cuda, role: "lazy", purpose: lazy.purpose, ...hit });
  }
  for (const lib of d.libraries) {
    if (lib.path !== undefined) continue;
    const off = await findOffPath(lib.name, search, le.machine);
    if (off !== undefined) lib.offPath = off;
  }
  const absent = d.libraries.filter((l) => l.role === "needed" && l.path === undefined);
  let libraryCause: { cause: string; fix: string } | undefined;
  if (absent.length > 0) libraryCause = libraryFix(absent);
  if ((!libraryCause || options.failure?.kind === "cuda") && options.failure && options.failure.kind !== "load") {
    return fail("session", sessionCause(options.failure), sessionFix(options.failure));
  }
  // The probe tells ORT's own words (and, on a machine with a GPU, whether a session really opens).
  const wantProbe = options.probe ?? true;
  if (wantProbe || (options.failure?.kind === "load" && options.failure.library === undefined)) {
    // As verify runs by default: TF32 off (and so the CUDA libraries see what a verify would show them).
    const probeEnv = { ...env, NVIDIA_TF32_OVERRIDE: "0" };
    d.probe = await probeCuda(install, { env: probeEnv, ...(options.deviceId !== undefined ? { deviceId: options.deviceId } : {}) });
  }
  const failure = d.probe && !d.probe.ok ? d.probe.failure : options.failure;
  // ORT's word beats our reading of the loader: a provider that reached CUDA calls, or a probe that opened a
  // session, had every library it needed, whatever the static search made of them.
  if (failure?.kind === "cuda" || d.probe?.ok) libraryCause = undefined;
  if (libraryCause) {
    const said = failure?.kind === "load" && failure.library !== undefined ? ` (ORT: ${failure.text})` : "";
    return fail("libraries", `${libraryCause.cause}${said}`, libraryCause.fix);
  }
  if (d.probe && !d.probe.ok) {
    const cause = d.probe.failure ? sessionCause(d.probe.failure) : (d.probe.crashed ?? "the CUDA session failed");
    return fail("session", d.probe.crashed && d.probe.failure ? `${d.probe.crashed}: ${cause}` : cause, d.probe.failure ? sessionFix(d.probe.failure) : "run `megahub doctor` on this machine and report its output");
  }
  if (!d.probe && failure) return fail("session", sessionCause(failure), sessionFix(failure));
  return Object.assign(d, { usable: true, stage: "ok" as const });
}

async function lddLike(name: string, le: LoaderEnv): Promise<Partial<LddEntry>> {
  // A dlopen from the provider searches like a NEEDED entry of the provider, which has no RUNPATH.
  const hit = await resolveLibrary(name, "/", { machine: le.machine, type: 3, needed: [], runpath: [], rpath: [] }, le);
  return hit ? { path: hit.path, via: hit.via } : {};
}

function libraryFix(absent: readonly LibraryReport[]): { cause: string; fix: string } {
  const names = absent.map((l) => `${l.name} (needed by ${l.neededBy})`).join(", ");
  const cause = `${names} not found on the loader's path`;
  const driver = absent.find((l) => l.name === "libcuda.so.1" && l.offPath === undefined);
  if (driver) return { cause, fix: "this machine has no NVIDIA driver (libcuda.so.1): CUDA cannot run here; use --device cpu" };
  const off = absent.filter((l) => l.offPath !== undefined);
  const dirs = [...new Set(off.map((l) => dirname(l.offPath as string)))];
  const export_ = dirs.length > 0 ? `export LD_LIBRARY_PATH=${dirs.join(":")}\${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}` : "";
  if (off.length === absent.length) return { cause, fix: `${export_} (found there, off the loader's path)` };
  const rest = absent.filter((l) => l.offPath === undefined).map((l) => l.name);
  return { cause, fix: `${CUDA13_INSTALL} for ${rest.join(", ")}${export_ ? `; and ${export_}` : ""}` };
}

function sessionCause(f: OrtFailure): string {
  if (f.kind === "cuda") return `the CUDA provider loaded but could not start: ${f.text}`;
  return f.kind === "load" ? `ORT could not load the CUDA provider: ${f.text}` : `ORT's CUDA session failed: ${f.text}`;
}

function sessionFix(f: OrtFailure): string {
  const hint = f.kind === "cuda" && f.library === "CUDA" ? CUDA_ERRORS[f.code]?.hint : undefined;
  if (hint !== undefined) return `${hint}; or use --device cpu`;
  if (f.kind === "cuda") return `${f.library} could not start on this GPU (see the failure above); or use --device cpu`;
  if (f.kind === "load") return `check the library it names (\`megahub doctor\` lists where each one was found); or ${GPU_INSTALL_FIX}`;
  return "run `megahub doctor` for the full picture, or use --device cpu";
}

/** The doctor's verdict as one line, as `--device cuda` reports it. */
export function cudaVerdict(d: CudaDiagnosis): string {
  return d.usable ? "CUDA execution provider usable" : `CUDA execution provider unavailable: ${d.cause}. Fix: ${d.fix}`;
}
