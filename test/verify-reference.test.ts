import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, describe, expect, it } from "vitest";
import { compareLogits } from "../src/verify/metrics.js";
import { exportOnnx } from "../src/verify/export-onnx.js";
import { readReference } from "../src/verify/reference.js";
import { TOLERANCES } from "../src/verify/tolerances.js";
import { verifyModel } from "../src/verify/verify-model.js";
import { cleanupHfDirs, fixtureHfDir, REFERENCE_NAMES, referencePath } from "./verify-helpers.js";

afterAll(cleanupHfDirs);

/**
 * The fixture references are computed by scripts/openba_reference.py (PyTorch, written from the documented maths,
 * not from the TypeScript graph) in fp32 from the checkpoint's own weights, upcast. The ONNX graph does the same
 * (exact upcast, fp32 compute), so every dtype must meet the fp32 gate here, not only its own looser one.
 */
describe.each(REFERENCE_NAMES)("ONNX logits vs the PyTorch reference: %s", (name) => {
  it("match within max |Δ| ≤ 1e-4 with 100 % top-1, and pass the dtype's gates", async () => {
    const dir = await fixtureHfDir(name);
    const r = await verifyModel(dir, { reference: referencePath(name), device: "cpu", record: false });
    const m = r.metrics;
    console.log(
      `${name}: max|Δ| ${m.maxAbs.toExponential(2)} mean ${m.meanAbs.toExponential(2)} p99 ${m.p99Abs.toExponential(2)} ` +
        `cos ${m.minCosine.toFixed(8)} NMSE ${m.nmse.toExponential(2)} KL ${m.meanKl.toExponential(2)} top1 ${m.top1Agreement} ` +
        `forward ${r.timings.forwardMs.toFixed(1)} ms`,
    );
    expect(r.failures).toEqual([]);
    expect(r.passed).toBe(true);
    expect(r.provider).toBe("cpu");
    expect(m.positions).toBe(3 * 8);
    expect(m.maxAbs).toBeLessThanOrEqual(1e-4);
    expect(m.top1Agreement).toBe(1);
    expect(m.rows.map((row) => row.top1Agreement)).toEqual([1, 1, 1]);
    expect(m.minCosine).toBeGreaterThanOrEqual(TOLERANCES.F32.exact.minCosine);
    expect(m.nmse).toBeLessThanOrEqual(TOLERANCES.F32.exact.maxNmse);
  });
});

describe("export-onnx", () => {
  it("writes a model onnxruntime loads on its own and whose logits match the reference", async () => {
    const name = "bf16-tp1";
    const dir = await fixtureHfDir(name);
    const out = join(await mkdtemp(join(tmpdir(), "megahub-export-")), "onnx");
    try {
      const res = await exportOnnx(dir, out);
      expect(res.files).toEqual(["model.onnx", "encoder_model.onnx", "decoder_model.onnx", "model.onnx.data"]);
      const ref = await readReference(referencePath(name), true);
      // Loaded by path by plain onnxruntime: external data resolved beside the model, nothing from megahub involved.
      const session = await ort.InferenceSession.create(join(out, "model.onnx"));
      const feeds = {
        input_ids: new ort.Tensor("int64", ref.inputIds, [ref.batch, ref.encoderLength]),
        attention_mask: new ort.Tensor("int64", ref.attentionMask, [ref.batch, ref.encoderLength]),
        decoder_input_ids: new ort.Tensor("int64", ref.decoderInputIds, [ref.batch, ref.decoderLength]),
      };
      const logits = (await session.run(feeds)).logits;
      expect(logits?.dims).toEqual([ref.batch, ref.decoderLength, ref.vocab]);
      const m = compareLogits(logits?.data as Float32Array, ref.logits, ref.batch, ref.decoderLength, ref.vocab);
      expect(m.maxAbs).toBeLessThanOrEqual(1e-4);
      expect(m.top1Agreement).toBe(1);
      await session.release();
    } finally {
      await rm(join(out, ".."), { recursive: true, force: true });
    }
  });
});
