/**
 * The referee is transformers itself: megahub's HF output of genuine-layout Megatron-Core checkpoints loads in
 * transformers' own classes (no trust_remote_code, no missing or unexpected keys) and gives the logits of an
 * independent plain-torch forward of the Megatron weights (fixtures/gpt/reference, scripts/fixtures/gpt.py).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { convertAny } from "../src/ops/dispatch.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { HAS_REF, runRefPython } from "./helpers/refpy.js";

interface Table {
  cases: Record<string, { model: string; tp: number; pp: number; vpp: number | null }>;
  models: Record<string, { architecture: string; tokenizer: string | null; reference: string }>;
}
const TABLE: Table | undefined = hasFixture("gpt", "cases.json") ? (JSON.parse(readFileSync(fixture("gpt", "cases.json"), "utf8")) as Table) : undefined;

/** Per model, the case with the most parallelism (so TP merge, PP renumbering and VPP are all on the path). */
const PICKS = TABLE
  ? Object.keys(TABLE.models).map((model) => {
      const cases = Object.entries(TABLE.cases).filter(([, c]) => c.model === model);
      cases.sort(([, a], [, b]) => b.tp * b.pp * (b.vpp ?? 1) - a.tp * a.pp * (a.vpp ?? 1));
      return { model, name: cases[0]?.[0] as string };
    })
  : [];

const work = mkdtempSync(join(tmpdir(), "megahub-gpt-tf-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const CHECK = `
import sys, json, torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
d, ref, want = sys.argv[1], sys.argv[2], sys.argv[3]
model, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, output_loading_info=True)
r = load_file(ref)
with torch.no_grad():
    logits = model(input_ids=r['input_ids']).logits
diff = (logits - r['logits']).abs().max().item()
top1 = (logits.argmax(-1) == r['logits'].argmax(-1)).float().mean().item()
print(json.dumps({'cls': type(model).__name__, 'want': want, 'missing': sorted(info['missing_keys']), 'unexpected': sorted(info['unexpected_keys']), 'diff': diff, 'top1': top1}))
`;

describe.skipIf(!HAS_REF || PICKS.length === 0)("transformers loads megahub's GPT output with Megatron's logits", () => {
  it.each(PICKS)("$model ($name)", async ({ model, name }) => {
    const dir = join(work, name);
    const tok = TABLE?.models[model]?.tokenizer;
    await convertAny({ input: fixture("gpt", name), out: dir, ...(tok ? { tokenizer: fixture("gpt", tok) } : {}) });
    const ref = fixture("gpt", TABLE?.models[model]?.reference as string);
    const r = JSON.parse(runRefPython(CHECK, [dir, ref, TABLE?.models[model]?.architecture as string]).trim().split("\n").pop() as string) as {
      cls: string;
      want: string;
      missing: string[];
      unexpected: string[];
      diff: number;
      top1: number;
    };
    expect(r.cls).toBe(r.want);
    expect([r.missing, r.unexpected]).toEqual([[], []]);
    expect(r.diff).toBeLessThanOrEqual(1e-4);
    expect(r.top1).toBe(1);
  });
});
