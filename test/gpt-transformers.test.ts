/**
 * The referee is transformers itself: megahub's HF output of genuine-layout Megatron-Core checkpoints loads in
 * transformers' own classes (no trust_remote_code, no missing or unexpected keys) and gives the logits of an
 * independent plain-torch forward of the Megatron weights (fixtures/gpt/reference, scripts/fixtures/gpt.py).
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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

const MAKE = `
import sys, torch, transformers
torch.manual_seed(0)
kind, out = sys.argv[1], sys.argv[2]
common = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
cfg = {'llama': lambda: transformers.LlamaConfig(**common, rope_scaling={'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0, 'original_max_position_embeddings': 8192}),
       'qwen2': lambda: transformers.Qwen2Config(**common, tie_word_embeddings=True),
       'qwen3': lambda: transformers.Qwen3Config(**common, head_dim=16)}[kind]()
m = transformers.AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16)
with torch.no_grad():
    for p in m.parameters():
        p.copy_(torch.randn_like(p) * 0.1)
m.save_pretrained(out)
`;

const COMPARE = `
import sys, torch
from safetensors.torch import load_file
a, b = load_file(sys.argv[1] + '/model.safetensors'), load_file(sys.argv[2] + '/model.safetensors')
a.pop('lm_head.weight', None) if 'lm_head.weight' not in b else None
assert sorted(a) == sorted(b), sorted(set(a) ^ set(b))
bad = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
assert not bad, bad[:4]
import transformers
ca, cb = (transformers.AutoConfig.from_pretrained(d) for d in sys.argv[1:3])
for k in ('rope_parameters', 'rms_norm_eps', 'max_position_embeddings', 'num_key_value_heads', 'tie_word_embeddings'):
    assert getattr(ca, k, None) == getattr(cb, k, None), (k, getattr(ca, k, None), getattr(cb, k, None))
print('ok', len(a))
`;

describe.skipIf(!HAS_REF)("models transformers saved go to Megatron and back unchanged", () => {
  it.each(["llama", "qwen2", "qwen3"])("%s: HF → Megatron TP 2 × PP 2 → HF, every tensor equal", async (kind) => {
    const hf = join(work, `made-${kind}`);
    runRefPython(MAKE, [kind, hf]);
    const { toMegatronAny } = await import("../src/ops/dispatch.js");
    const mg = join(work, `made-${kind}-mg`);
    await toMegatronAny({ input: hf, out: mg, tp: 2, pp: 2 });
    const back = join(work, `made-${kind}-back`);
    await convertAny({ input: mg, out: back });
    expect(runRefPython(COMPARE, [hf, back]).trim()).toMatch(/^ok \d+$/);
  });

  it("refuses a llama3 RoPE Megatron-Core's args cannot express instead of changing it", async () => {
    const hf = join(work, "made-llama");
    const odd = join(work, "made-llama-odd-rope");
    cpSync(hf, odd, { recursive: true });
    const config = JSON.parse(readFileSync(join(odd, "config.json"), "utf8")) as Record<string, Record<string, unknown>>;
    const rope = (config.rope_parameters ?? config.rope_scaling) as Record<string, unknown>;
    rope.original_max_position_embeddings = 32;
    writeFileSync(join(odd, "config.json"), JSON.stringify(config));
    const { toMegatronAny } = await import("../src/ops/dispatch.js");
    await expect(toMegatronAny({ input: odd, out: join(work, "odd-mg"), tp: 1, pp: 1 })).rejects.toThrow(/original_max_position_embeddings 32: Megatron-Core's args fix them at 1, 4 and 8192/);
  });
});
