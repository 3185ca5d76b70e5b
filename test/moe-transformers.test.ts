/**
 * The referee is transformers itself: megahub's HF output of genuine-layout Megatron-Core MoE checkpoints loads in
 * MixtralForCausalLM / Qwen2MoeForCausalLM / Qwen3MoeForCausalLM (no trust_remote_code, no missing or unexpected
 * keys) and gives the logits of an independent plain-torch forward of the Megatron weights with Megatron-Core's
 * routing (fixtures/moe/reference, scripts/fixtures/moe_spec.py): fp32 ≤ 1e-4, top-1 equal everywhere.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { convertAny } from "../src/ops/dispatch.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { HAS_REF, runRefPython } from "./helpers/refpy.js";

interface Table {
  cases: Record<string, { model: string; tp: number; pp: number; ep: number }>;
  models: Record<string, { architecture: string; reference: string }>;
}
const TABLE: Table | undefined = hasFixture("moe", "cases.json") ? (JSON.parse(readFileSync(fixture("moe", "cases.json"), "utf8")) as Table) : undefined;

/** Per model, every case: EP merging, expert TP, PP renumbering and both expert layouts all reach transformers. */
const PICKS = TABLE ? Object.entries(TABLE.cases).map(([name, c]) => ({ model: c.model, name })) : [];

const work = mkdtempSync(join(tmpdir(), "megahub-moe-tf-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const CHECK = `
import sys, json, torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
out = []
for d, ref in zip(sys.argv[1::2], sys.argv[2::2]):
    model, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, output_loading_info=True)
    r = load_file(ref)
    with torch.no_grad():
        logits = model(input_ids=r['input_ids']).logits
    out.append({'cls': type(model).__name__, 'missing': sorted(info['missing_keys']), 'unexpected': sorted(info['unexpected_keys']),
                'mismatched': [str(x) for x in info.get('mismatched_keys', [])], 'diff': (logits - r['logits']).abs().max().item(),
                'top1': (logits.argmax(-1) == r['logits'].argmax(-1)).float().mean().item()})
print(json.dumps(out))
`;

interface Verdict {
  cls: string;
  missing: string[];
  unexpected: string[];
  mismatched: string[];
  diff: number;
  top1: number;
}

describe.skipIf(!HAS_REF || PICKS.length === 0)("transformers loads megahub's MoE output with Megatron's logits", () => {
  it("every case, one transformers process", async () => {
    const argv: string[] = [];
    for (const { model, name } of PICKS) {
      const dir = join(work, name);
      await convertAny({ input: fixture("moe", name), out: dir });
      argv.push(dir, fixture("moe", TABLE?.models[model]?.reference as string));
    }
    // the control: the same weights with the other routing rule (norm_topk_prob flipped) must NOT match
    const qwen = PICKS.findIndex((p) => p.model === "qwen2moe");
    const flipped = join(work, "flipped-routing");
    cpSync(argv[2 * qwen] as string, flipped, { recursive: true });
    const config = JSON.parse(readFileSync(join(flipped, "config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(join(flipped, "config.json"), JSON.stringify({ ...config, norm_topk_prob: config.norm_topk_prob !== true }));
    argv.push(flipped, argv[2 * qwen + 1] as string);
    const verdicts = JSON.parse(runRefPython(CHECK, argv).trim().split("\n").pop() as string) as Verdict[];
    const control = verdicts.pop() as Verdict;
    expect(control.diff).toBeGreaterThan(1e-2);
    verdicts.forEach((v, i) => {
      const { model, name } = PICKS[i] as { model: string; name: string };
      expect(v.cls, name).toBe(TABLE?.models[model]?.architecture);
      expect([v.missing, v.unexpected, v.mismatched], name).toEqual([[], [], []]);
      expect(v.diff, name).toBeLessThanOrEqual(1e-4);
      expect(v.top1, name).toBe(1);
    });
    console.log(`MoE logits vs the Megatron forward: ${verdicts.map((v, i) => `${PICKS[i]?.name} ${v.diff.toExponential(2)}`).join(", ")}; routing flipped: ${control.diff.toExponential(2)}`);
  }, 300_000);
});
