import { openModelGraph } from "./load-graph.js";
import { readModelDir } from "../models/openba/hf-dir.js";
import type { Device, Optimization, Provider } from "./ort-session.js";
import { forwardFeeds, readReference, type ForwardInputs } from "./reference.js";

export interface TimeForwardOptions {
  /** @default "cpu" — benchmarks compare like with like; pass "auto" or "cuda" to time a GPU. */
  device?: Device;
  /** Untimed runs first (ORT allocates and tunes on the first run). @default 1 */
  warmup?: number;
  /** Timed runs. @default 3 */
  iterations?: number;
  /** ORT optimisation level. @default "basic" */
  optimization?: Optimization;
}

export interface ForwardTiming {
  provider: Provider;
  /** Session creation: graph build, weight load, optimisation. */
  sessionMs: number;
  /** Each timed forward pass. */
  runsMs: number[];
  /** Median of runsMs. */
  medianMs: number;
}

/**
 * Times one teacher-forced forward pass of an HF model dir in ONNX Runtime, for `npm run bench`. `inputs` is a
 * reference/inputs safetensors path or ready ForwardInputs, so the torch side can be fed the very same ids.
 *
 * @example
 * const t = await timeForward("bench/hf", "bench/inputs.safetensors");
 * console.log(`${t.provider}: ${t.medianMs.toFixed(1)} ms`);
 */
export async function timeForward(
  dir: string,
  inputs: string | ForwardInputs,
  options: TimeForwardOptions = {},
): Promise<ForwardTiming> {
  const model = await readModelDir(dir);
  const x = typeof inputs === "string" ? await readReference(inputs, false) : inputs;
  const t0 = performance.now();
  const runner = await openModelGraph(model, {
    part: "seq2seq",
    device: options.device ?? "cpu",
    ...(options.optimization ? { optimization: options.optimization } : {}),
  });
  const sessionMs = performance.now() - t0;
  try {
    const feeds = forwardFeeds(x);
    for (let i = 0; i < (options.warmup ?? 1); i++) await runner.run(feeds);
    const runsMs: number[] = [];
    for (let i = 0; i < (options.iterations ?? 3); i++) {
      const t = performance.now();
      await runner.run(feeds);
      runsMs.push(performance.now() - t);
    }
    const sorted = [...runsMs].sort((a, b) => a - b);
    return { provider: runner.provider, sessionMs, runsMs, medianMs: sorted[Math.floor(sorted.length / 2)] ?? 0 };
  } finally {
    await runner.release();
  }
}
