import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { pruneCheckpoint } from "../src/ops/prune/run.js";
import { verifyModel } from "../src/verify/verify-model.js";
import { fixture, ROOT } from "./helpers/fixtures.js";
import { HAS_TORCH, runPython } from "./helpers/torch.js";
import { ckpt, torchReference, workDir } from "./prune-helpers.js";

const work = workDir("megahub-prune-verify-");
afterAll(() => work.cleanup());

/** Fixtures that ship reference inputs (fixtures/reference/<name>.safetensors). */
const NAMES = ["fp32-tp1", "fp16-tp2"].filter((n) => existsSync(fixture("reference", `${n}.safetensors`)) && existsSync(ckpt(n)));

/**
 * Recomputes the reference batch's logits with scripts/openba_reference.py (a PyTorch forward written from the
 * documented maths) on torch-pruned weights, into a reference file `verify` reads.
 */
function prunedReference(weights: string, inputs: string, heads: number, kvChannels: number, out: string): void {
  const code = `
import sys
sys.path.insert(0, ${JSON.stringify(join(ROOT, "scripts"))})
import fixturelib as F, openba_reference as R
hf = F.read_safetensors(sys.argv[1])
ref = F.read_safetensors(sys.argv[2])
ref["logits"] = R.logits(hf, ref["input_ids"], ref["attention_mask"], ref["decoder_input_ids"], int(sys.argv[3]), int(sys.argv[4]))
F.write_safetensors(sys.argv[5], ref)`;
  runPython(code, [weights, inputs, String(heads), String(kvChannels), out]);
}

describe.skipIf(!HAS_TORCH || NAMES.length === 0)("a pruned model runs in ONNX Runtime and matches a torch forward of torch-pruned weights", () => {
  it.each(NAMES)("%s", async (name) => {
    const out = work.next();
    const res = await pruneCheckpoint({ input: ckpt(name), out, hidden: 40, heads: 6, ffn: 70, dropEncoder: [1], decoderLayers: 2, seed: 42 });
    const weights = join(work.dir, `${name}-torch-pruned.safetensors`);
    torchReference({ megatron: ckpt(name) }, res.masks, { hf: weights }, work.dir);
    const reference = join(work.dir, `${name}-pruned-reference.safetensors`);
    prunedReference(weights, fixture("reference", `${name}.safetensors`), res.dims.heads, res.dims.kvChannels, reference);
    const r = await verifyModel(out, { reference, device: "cpu", record: false });
    console.log(`${name} pruned to hidden 40, 6 heads, FFN 70, 1/2 layers: max|Δ| ${r.metrics.maxAbs.toExponential(2)}, top-1 ${r.metrics.top1Agreement}`);
    expect(r.failures).toEqual([]);
    expect(r.passed).toBe(true);
    expect(r.metrics.maxAbs).toBeLessThanOrEqual(1e-4);
  });
});

