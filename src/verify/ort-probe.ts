import { spawn } from "node:child_process";
import { DTYPES } from "../tensors/dtypes.js";
import { GraphBuilder } from "../formats/onnx/graph-builder.js";
import { encodeModel } from "../formats/onnx/proto.js";
import type { OrtInstall } from "./ort-locate.js";
import { parseOrtError, type OrtFailure } from "./ort-errors.js";
import { placementFromProfile, type Placement } from "./placement.js";

/**
 * Opens a CUDA session on a two-node model in a child process. Why a child: a provider library that does not match
 * the core can crash the process instead of failing, and the real reason a library did not load only reaches the
 * native logger's stderr, which a process cannot read of itself.
 */
export interface ProbeResult {
  ok: boolean;
  failure?: OrtFailure;
  /** Where the nodes ran when the session opened. */
  placement?: Placement;
  /** Set when the child died (signal, timeout) instead of answering. */
  crashed?: string;
  ms: number;
}

const SCRIPT = `
const fs = require("node:fs"), os = require("node:os"), path = require("node:path");
const [pkg, model64, deviceId] = process.argv.slice(1);
const ort = require(pkg);
ort.env.logLevel = "error"; // keeps "Failed to load library X with error: Y" on stderr
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "megahub-probe-"));
const say = (o) => process.stdout.write("\\nMEGAHUB_PROBE " + JSON.stringify(o) + "\\n");
(async () => {
  try {
    const s = await ort.InferenceSession.create(Buffer.from(model64, "base64"), {
      executionProviders: [{ name: "cuda", deviceId: Number(deviceId) }],
      enableProfiling: true, profileFilePrefix: path.join(dir, "p"),
    });
    await s.run({ x: new ort.Tensor("float32", Float32Array.from([1, 2, 3, 4]), [2, 2]) });
    s.endProfiling();
    await s.release();
    const f = fs.readdirSync(dir).find((n) => n.endsWith(".json"));
    say({ ok: true, profile: f ? JSON.parse(fs.readFileSync(path.join(dir, f), "utf8")) : [] });
  } catch (e) {
    say({ ok: false, message: String((e && e.message) || e) });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
})();
`;

/** A MatMul and a Relu, fp32, fixed shapes: every CUDA build has kernels for both. */
function probeModel(): Uint8Array {
  const g = new GraphBuilder("megahub_cuda_probe");
  const x = g.input("x", DTYPES.F32.onnx, [2, 2]);
  const w = g.constF32([1, 0, 0, 1], [2, 2]);
  g.output(g.op("Relu", [g.op("MatMul", [x, w])]), "y", DTYPES.F32.onnx, [2, 2]);
  return encodeModel({ irVersion: 8, opsets: [{ domain: "", version: 17 }], producerName: "megahub", producerVersion: "probe", graph: g.build() });
}

export async function probeCuda(
  install: OrtInstall,
  options: { deviceId?: number; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<ProbeResult> {
  const t0 = performance.now();
  const model = Buffer.from(probeModel()).toString("base64");
  const child = spawn(process.execPath, ["-e", SCRIPT, install.packageDir, model, String(options.deviceId ?? 0)], {
    env: options.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  // Bounded: a crashing native library can print a lot.
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    if (stderr.length < 1 << 20) stderr += d;
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) => child.on("close", (c, s) => res([c, s])));
  clearTimeout(timer);
  const ms = performance.now() - t0;
  const line = stdout.split("\n").find((l) => l.startsWith("MEGAHUB_PROBE "));
  if (!line) {
    const how = signal !== null ? `signal ${signal}` : `exit code ${code}`;
    const failure = parseOrtError("", stderr);
    return { ok: false, crashed: `the probe process died (${how}) while opening a CUDA session`, ...(failure.kind !== "other" ? { failure } : {}), ms };
  }
  const answer = JSON.parse(line.slice("MEGAHUB_PROBE ".length)) as { ok: boolean; message?: string; profile?: unknown };
  if (!answer.ok) return { ok: false, failure: parseOrtError(answer.message ?? "", stderr), ms };
  return { ok: true, placement: placementFromProfile(answer.profile ?? []), ms };
}
