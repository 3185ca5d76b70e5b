import { MegahubError } from "../errors.js";

/**
 * The only file that imports onnxruntime-node, and only when a session is opened: `megahub --help`, convert and the
 * Hub commands never load its 60 MB native library.
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
  /** Why CUDA was not used when device was "auto" and CPU ran instead. */
  readonly fallbackReason?: string;
  run(feeds: Readonly<Record<string, Feed>>): Promise<Record<string, FloatOutput>>;
  release(): Promise<void>;
}

/** Model bytes plus the external data files they name, for loading without a model file on disk. */
export interface InMemoryModel {
  bytes: Uint8Array;
  externalData: { path: string; data: Uint8Array }[];
}

export const CUDA_INSTALL_HINT =
  "onnxruntime-node ships without its CUDA provider libraries. Where a network allows, fetch them with " +
  "`ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js` (CUDA 12 and cuDNN 9 " +
  "must be installed on the machine), or use --device cpu";

type Ort = typeof import("onnxruntime-node");
let ortPromise: Promise<Ort> | undefined;

async function loadOrt(): Promise<Ort> {
  ortPromise ??= import("onnxruntime-node").then((m) => {
    const ort = ((m as { default?: Ort }).default ?? m) as Ort;
    // Without this the native logger prints "Failed to load library …providers_shared.so" on every CUDA probe;
    // we report the fallback ourselves.
    ort.env.logLevel = "fatal";
    return ort;
  });
  return ortPromise;
}

/**
 * Opens a session on the requested device. "cuda" fails with a DEVICE error naming the cause and how to install
 * the CUDA libraries; "auto" catches the same failure (onnxruntime-node rejects at session creation when the
 * provider library cannot be loaded — there is no silent fallback), retries on CPU and records why.
 */
export async function openSession(
  model: string | InMemoryModel,
  device: Device,
  optimization: Optimization = "basic",
): Promise<OrtRunner> {
  const ort = await loadOrt();
  const create = (providers: Provider[]) => {
    const options = {
      executionProviders: providers,
      graphOptimizationLevel: optimization,
      ...(typeof model === "string" ? {} : { externalData: model.externalData }),
    };
    return typeof model === "string"
      ? ort.InferenceSession.create(model, options)
      : ort.InferenceSession.create(model.bytes, options);
  };
  if (device === "cpu") {
    return wrap(ort, await create(["cpu"]), "cpu");
  }
  try {
    return wrap(ort, await create(["cuda"]), "cuda");
  } catch (e) {
    const reason = firstLine(e);
    if (device === "cuda") {
      throw new MegahubError("DEVICE", `CUDA execution provider unavailable (${reason}). ${CUDA_INSTALL_HINT}`);
    }
    return wrap(ort, await create(["cpu"]), "cpu", reason);
  }
}

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return (msg.split("\n")[0] ?? msg).trim();
}

function wrap(
  ort: Ort,
  session: Awaited<ReturnType<Ort["InferenceSession"]["create"]>>,
  provider: Provider,
  fallbackReason?: string,
): OrtRunner {
  return {
    provider,
    ...(fallbackReason !== undefined ? { fallbackReason } : {}),
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
    release: () => session.release(),
  };
}
