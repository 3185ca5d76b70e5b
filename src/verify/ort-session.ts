import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MegahubError } from "../errors.js";
import { cudaVerdict, diagnoseCuda } from "./cuda-doctor.js";
import { parseOrtError } from "./ort-errors.js";
import { locateOrt, requireOrt, type Ort, type OrtInstall } from "./ort-locate.js";
import { readPlacement, type Placement } from "./placement.js";

/**
 * The only file that opens ORT sessions, and ORT is only loaded when one is opened: `megahub --help`, convert and
 * the Hub commands never load its native library. Which onnxruntime-node is used: ort-locate.ts.
 */

/** Which execution provider to ask for. "auto" tries CUDA and falls back to CPU, saying so. */
export type Device = "auto" | "cuda" | "cpu";
export type Provider = "cuda" | "cpu";

export function isDevice(v: string): v is Device {
  return v === "auto" || v === "cuda" || v === "cpu";
}

/**
 * ORT graph optimisation level. "basic" (constant folding — the weight casts — and redundant-node removal) is the
 * default: on the bench model (OpenBA-v2 widths, 2+2 layers, fp16, 2 busy CPU cores, warm page cache) it opened in
 * 2.8 s for a 0.41 s forward, "all" (adds MLAS prepacking and layout transforms) in 6.2 s for 0.51 s, and
 * "disabled" in 0.2 s for 1.05 s (the casts re-run every pass). Verification runs one pass; nothing here gains
 * from "all".
 */
export type Optimization = "disabled" | "basic" | "extended" | "all";

/** A plain tensor crossing the runner boundary (ORT's Tensor class stays inside this file). */
export type Feed =
  | { type: "int64"; data: BigInt64Array; dims: readonly number[] }
  | { type: "float32"; data: Float32Array; dims: readonly number[] };

export interface FloatOutput {
  data: Float32Array;
  dims: number[];
}

/** An open inference session on one provider. */
export interface OrtRunner {
  readonly provider: Provider;
  /** Why CUDA was not used when device was "auto" and CPU ran instead: the doctor's verdict. */
  readonly fallbackReason?: string;
  /** Whether CUDA's fp32 matmuls may use TF32 in this session (false on CPU). */
  readonly tf32: boolean;
  run(feeds: Readonly<Record<string, Feed>>): Promise<Record<string, FloatOutput>>;
  /** With `profile`: stops profiling and says which provider ran each node so far (undefined without). */
  endProfiling(): Promise<Placement | undefined>;
  release(): Promise<void>;
}

/** Model bytes plus the external data files they name, for loading without a model file on disk. */
export interface InMemoryModel {
  bytes: Uint8Array;
  externalData: { path: string; data: Uint8Array }[];
}

/** Per-session choices beyond the device and the optimisation level. */
export interface SessionOptions {
  /** Record which provider ran each node (ORT profiling); read it with `runner.endProfiling()`. */
  profile?: boolean;
  /**
   * Let CUDA's fp32 matmuls use TF32 (10-bit mantissa). Off by default: ORT's CUDA EP enables TF32 and the Node
   * binding cannot turn it off, so megahub sets NVIDIA_TF32_OVERRIDE=0 before CUDA loads. The choice is made once per
   * process (CUDA reads the variable when it starts); asking for the other setting later is an error.
   */
  tf32?: boolean;
  /** @default 0 */
  deviceId?: number;
}

let ortCache: { dir: string; ort: Ort } | undefined;
let tf32Fixed: boolean | undefined;

function loadOrt(install: OrtInstall): Ort {
  if (ortCache?.dir !== install.packageDir) {
    const ort = requireOrt(install);
    // Without this the native logger prints "Failed to load library …" on every CUDA attempt; the diagnosis
    // (cuda-doctor.ts) reports the cause itself.
    ort.env.logLevel = "fatal";
    ortCache = { dir: install.packageDir, ort };
  }
  return ortCache.ort;
}

/**
 * Sets NVIDIA_TF32_OVERRIDE for the CUDA libraries before a CUDA session. Once one has opened, CUDA has read it, so
 * a later session asking for the other setting is refused rather than silently given the first one.
 */
function fixTf32(allow: boolean): void {
  if (tf32Fixed !== undefined && tf32Fixed !== allow) {
    throw new MegahubError(
      "USAGE",
      `TF32 was already ${tf32Fixed ? "allowed" : "turned off"} for this process by an earlier CUDA session (CUDA reads ` +
        "NVIDIA_TF32_OVERRIDE once); run the other setting in a new process",
    );
  }
  if (allow) delete process.env.NVIDIA_TF32_OVERRIDE;
  else process.env.NVIDIA_TF32_OVERRIDE = "0";
}

/**
 * Opens a session on the requested device. CUDA is only tried when the provider files of the core's exact version
 * sit beside the core (a mismatched provider crashes ORT). "cuda" fails with a DEVICE error carrying the doctor's
 * verdict (cause and fix, ORT's own words included); "auto" falls back to CPU and records the cause.
 */
export async function openSession(
  model: string | InMemoryModel,
  device: Device,
  optimization: Optimization = "basic",
  options: SessionOptions = {},
): Promise<OrtRunner> {
  const install = locateOrt();
  const tf32 = options.tf32 ?? false;
  if (device !== "cpu") fixTf32(tf32);
  const ort = loadOrt(install);
  const profileDir = options.profile ? await mkdtemp(join(tmpdir(), "megahub-ort-profile-")) : undefined;
  const create = (providers: ("cpu" | { name: "cuda"; deviceId: number })[]) => {
    const sessionOptions = {
      executionProviders: providers,
      graphOptimizationLevel: optimization,
      ...(profileDir !== undefined ? { enableProfiling: true, profileFilePrefix: join(profileDir, "profile") } : {}),
      ...(typeof model === "string" ? {} : { externalData: model.externalData }),
    };
    return typeof model === "string"
      ? ort.InferenceSession.create(model, sessionOptions)
      : ort.InferenceSession.create(model.bytes, sessionOptions);
  };
  try {
    if (device === "cpu") return wrap(ort, await create(["cpu"]), { provider: "cpu", tf32: false, profileDir });
    const pre = await diagnoseCuda({ staticOnly: true });
    let reason: string;
    if (pre.usable) {
      try {
        const session = await create([{ name: "cuda", deviceId: options.deviceId ?? 0 }]);
        tf32Fixed = tf32;
        return wrap(ort, session, { provider: "cuda", tf32, profileDir });
      } catch (e) {
        const failure = parseOrtError(e instanceof Error ? e.message : String(e));
        const d = await diagnoseCuda({ probe: false, failure, ...(options.deviceId !== undefined ? { deviceId: options.deviceId } : {}) });
        // The doctor's probe runs in a fresh process; should it succeed where this process failed, say both.
        reason = d.usable
          ? `CUDA execution provider unavailable in this process: ${failure.text} (a fresh process opened a CUDA session: run megahub doctor)`
          : cudaVerdict(d);
      }
    } else {
      reason = cudaVerdict(pre);
    }
    if (device === "cuda") throw new MegahubError("DEVICE", reason);
    return wrap(ort, await create(["cpu"]), { provider: "cpu", tf32: false, profileDir, fallbackReason: reason });
  } catch (e) {
    if (profileDir !== undefined) await rm(profileDir, { recursive: true, force: true });
    throw e;
  }
}

function wrap(
  ort: Ort,
  session: Awaited<ReturnType<Ort["InferenceSession"]["create"]>>,
  how: { provider: Provider; tf32: boolean; profileDir: string | undefined; fallbackReason?: string },
): OrtRunner {
  const { profileDir } = how;
  let ended = false;
  const cleanup = async () => {
    if (profileDir !== undefined) await rm(profileDir, { recursive: true, force: true });
  };
  return {
    provider: how.provider,
    tf32: how.tf32,
    ...(how.fallbackReason !== undefined ? { fallbackReason: how.fallbackReason } : {}),
    async run(feeds) {
      const inputs: Record<string, InstanceType<Ort["Tensor"]>> = {};
      for (const [name, f] of Object.entries(feeds)) {
        inputs[name] = f.type === "int64" ? new ort.Tensor("int64", f.data, f.dims) : new ort.Tensor("float32", f.data, f.dims);
      }
      const out = await session.run(inputs);
      const result: Record<string, FloatOutput> = {};
      for (const [name, t] of Object.entries(out)) {
        if (t.type !== "float32") {
          throw new MegahubError("VERIFY", `output "${name}" is ${t.type}, expected float32`);
        }
        result[name] = { data: t.data as Float32Array, dims: [...t.dims] };
      }
      return result;
    },
    async endProfiling() {
      if (profileDir === undefined || ended) return undefined;
      ended = true;
      session.endProfiling();
      return readPlacement(profileDir);
    },
    async release() {
      try {
        await session.release();
      } finally {
        await cleanup();
      }
    },
  };
}
