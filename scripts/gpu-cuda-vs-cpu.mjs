#!/usr/bin/env node
// gpu-cuda-vs-cpu.mjs — one forward pass of an HF model dir on CUDA and on CPU, on a reference file's inputs, and
// the CUDA-vs-CPU logit metrics (the same as verify's), plus where each node ran. For the GPU device check: verify
// compares against a reference; this isolates what the execution provider alone changes.
//   node scripts/gpu-cuda-vs-cpu.mjs <hf-dir> <inputs.safetensors> [--tf32]      prints one JSON line
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const load = (p) => import(join(ROOT, "dist", p));
const { openModelGraph } = await load("verify/load-graph.js");
const { readModelDir } = await load("verify/model-dir.js");
const { readReference, forwardFeeds } = await load("verify/reference.js");
const { compareLogits } = await load("verify/metrics.js");
const [dir, inputsPath] = process.argv.slice(2);
const tf32 = process.argv.includes("--tf32");
const model = await readModelDir(dir);
const x = await readReference(inputsPath, false);
const run = async (device) => {
  const t0 = performance.now();
  const r = await openModelGraph(model, { part: "seq2seq", device, session: { profile: true, tf32 } });
  const t1 = performance.now();
  try {
    const out = await r.run(forwardFeeds(x));
    const t2 = performance.now();
    return { provider: r.provider, logits: out.logits.data, placement: await r.endProfiling(), sessionMs: t1 - t0, forwardMs: t2 - t1 };
  } finally {
    await r.release();
  }
};
const cuda = await run("cuda");
const cpu = await run("cpu");
const m = compareLogits(cuda.logits, cpu.logits, x.batch, x.decoderLength, model.dims.vocab);
console.log(JSON.stringify({
  model: dir, dtype: model.weightDtype, tf32,
  maxAbs: m.maxAbs, meanAbs: m.meanAbs, p99Abs: m.p99Abs, nmse: m.nmse, minCosine: m.minCosine, top1: m.top1Agreement,
  cuda: { placement: cuda.placement, sessionMs: cuda.sessionMs, forwardMs: cuda.forwardMs },
  cpu: { sessionMs: cpu.sessionMs, forwardMs: cpu.forwardMs },
}));
