/**
 * Megatron-Core GPT checkpoints (fixtures/gpt, written by scripts/fixtures/gpt.py mirroring Megatron-Core's save) →
 * HF Llama / Qwen2 / Qwen3 bit for bit, round trips back to Megatron at other layouts, and the written rank files
 * against the Megatron-layout fixtures of the same layout as torch loads them.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { convertAny, reshardAny, toMegatronAny } from "../src/ops/dispatch.js";
import { expectHf, type ExpectedHf } from "./helpers/expect-hf.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { HAS_TORCH, runPython } from "./helpers/torch.js";

interface GptCase {
  model: string;
  architecture: string;
  tp: number;
  pp: number;
  vpp: number | null;
  dtype: string;
  spec: "local" | "te";
  true_vocab: number;
}

const TABLE = hasFixture("gpt", "cases.json")
  ? (JSON.parse(readFileSync(fixture("gpt", "cases.json"), "utf8")) as { cases: Record<string, GptCase>; models: Record<string, { tokenizer: string | null }> })
  : { cases: {}, models: {} };
const CASES: Record<string, GptCase> = TABLE.cases;
/** The HF tokenizer a case's model ships with (its size is the true vocabulary when args lack vocab_size). */
const tokenizerOf = (c: GptCase) => {
  const t = TABLE.models[c.model]?.tokenizer;
  return t ? { tokenizer: fixture("gpt", t) } : {};
};
const expectedOf = (name: string) => JSON.parse(readFileSync(fixture("gpt", name, "expected-hf.json"), "utf8")) as ExpectedHf;

const work = mkdtempSync(join(tmpdir(), "megahub-gpt-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const out = () => join(work, `out${n++}`);


const CONFIG_KEYS = ["architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps", "rope_theta", "rope_scaling", "tie_word_embeddings", "attention_bias", "mlp_bias"];

describe.skipIf(Object.keys(CASES).length === 0)("Megatron-Core GPT → HF", () => {
  it.each(Object.keys(CASES))("%s converts bit-exactly with the config transformers reads", async (name) => {
    const dir = out();
    const res = await convertAny({ input: fixture("gpt", name), out: dir, ...tokenizerOf(CASES[name] as GptCase) });
    const expected = expectedOf(name);
    await expectHf(dir, expected);
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    for (const k of CONFIG_KEYS) if (k in expected.config) expect(config[k], k).toEqual(expected.config[k]);
    expect(res.architecture).toBe("gpt");
  });

  const llama = Object.entries(CASES).find(([, c]) => c.model === "llama" && c.tp === 1 && c.pp === 1 && c.spec === "local")?.[0];
  const layouts = [
    { tp: 2, pp: 2, vpp: 1 },
    { tp: 4, pp: 1, vpp: 1 },
    { tp: 1, pp: 2, vpp: 2 },
  ];
  it.skipIf(!llama).each(layouts)("HF → Megatron TP $tp PP $pp VPP $vpp → HF is bit-exact", async (layout) => {
    const hf = out();
    await convertAny({ input: fixture("gpt", llama as string), out: hf });
    const mg = out();
    await toMegatronAny({ input: hf, out: mg, ...layout });
    const back = out();
    await convertAny({ input: mg, out: back });
    await expectHf(back, expectedOf(llama as string));
  });

  it.skipIf(!llama)("reshard TP1 → TP2 → PP2 → TP1 is bit-exact", async () => {
    const a = out();
    await reshardAny({ input: fixture("gpt", llama as string), out: a, tp: 2 });
    const b = out();
    await reshardAny({ input: a, out: b, tp: 1, pp: 2 });
    const c = out();
    await reshardAny({ input: b, out: c, tp: 1 });
    const hf = out();
    await convertAny({ input: c, out: hf });
    await expectHf(hf, expectedOf(llama as string));
  });
});

/**
 * Written rank files, as torch loads them, hold exactly what the Megatron-layout fixture of the same layout holds:
 * the same keys per model chunk (weights and `_extra_state`), tensors equal, args naming the layout.
 */
describe.skipIf(!HAS_TORCH || Object.keys(CASES).length === 0)("written Megatron files match Megatron's own layout", () => {
  const targets = Object.entries(CASES).filter(([, c]) => c.model === "llama" && c.spec === "local" && !name(c).includes("distopt"));
  function name(c: GptCase) {
    return Object.keys(CASES).find((k) => CASES[k] === c) ?? "";
  }
  const source = Object.entries(CASES).find(([, c]) => c.model === "llama" && c.tp === 1 && c.pp === 1 && c.spec === "local")?.[0];
  const te = Object.keys(CASES).find((k) => CASES[k]?.spec === "te");
  const jobs = [...targets.map(([k]) => ({ target: k, from: source as string })), ...(te ? [{ target: te, from: te }] : [])];
  it.skipIf(!source).each(jobs)("reshard $from into the layout of $target", async ({ target, from }) => {
    const c = CASES[target] as GptCase;
    const dir = out();
    const via = out();
    await reshardAny({ input: fixture("gpt", from), out: via, tp: 1 });
    await reshardAny({ input: via, out: dir, tp: c.tp, pp: c.pp, vpp: c.vpp ?? 1 });
    const report = runPython(
      `import os, glob, sys, torch
sys.path.insert(0, 'scripts'); import fixturelib; fixturelib.install_megatron_stub()
def load(root):
    it = open(os.path.join(root, 'latest_checkpointed_iteration.txt')).read().strip()
    d = os.path.join(root, 'iter_%07d' % int(it))
    return {os.path.basename(os.path.dirname(f)): torch.load(f, map_location='cpu', weights_only=False) for f in sorted(glob.glob(d + '/mp_rank_*/model_optim_rng.pt'))}
mine, theirs = load(sys.argv[1]), load(sys.argv[2])
assert sorted(mine) == sorted(theirs), (sorted(mine), sorted(theirs))
for rank in theirs:
    a, b = mine[rank], theirs[rank]
    chunks = [k for k in b if k.startswith('model')]
    assert sorted(k for k in a if k.startswith('model')) == sorted(chunks), rank
    for ch in chunks:
        ka = {k for k in a[ch]}; kb = {k for k in b[ch]}
        assert ka == kb, (rank, ch, sorted(ka ^ kb)[:6])
        for k, v in b[ch].items():
            if not torch.is_tensor(v) or k.endswith('._extra_state'):
                continue
            x = a[ch][k]
            assert x.dtype == v.dtype and x.shape == v.shape, (rank, ch, k, x.shape, v.shape)
            if k in ('embedding.word_embeddings.weight', 'output_layer.weight'):
                # Padding rows were random in training and are re-made by repetition on a re-pad: compare real rows.
                n = v.shape[0]; real = max(0, min(n, int(sys.argv[3]) - int(rank[8:10]) * n)); x, v = x[:real], v[:real]
            assert torch.equal(x, v), (rank, ch, k)
    for f in ('tensor_model_parallel_size', 'pipeline_model_parallel_size', 'padded_vocab_size', 'num_query_groups', 'kv_channels'):
        assert getattr(a['args'], f) == getattr(b['args'], f), (f, getattr(a['args'], f), getattr(b['args'], f))
    assert a['checkpoint_version'] == 3.0
print('ok', len(theirs))
`,
      [dir, fixture("gpt", target), String(c.true_vocab)],
    );
    expect(report.trim()).toMatch(/^ok \d+$/);
  });
});

describe.skipIf(Object.keys(CASES).length === 0)("bad GPT input: one clear line, nothing written", () => {
  const src = Object.keys(CASES).find((k) => CASES[k]?.tp === 2 && CASES[k]?.pp === 1 && CASES[k]?.model === "llama");
  it.skipIf(!src)("a TP that does not fit the query groups or heads is refused with the numbers", async () => {
    const dir = out();
    await expect(reshardAny({ input: fixture("gpt", src as string), out: dir, tp: 3 })).rejects.toThrow(/TP 3 does not divide the 4 attention heads/);
    expect(existsSync(dir)).toBe(false);
  });
  it.skipIf(!src)("layers that PP × VPP do not divide are refused", async () => {
    await expect(reshardAny({ input: fixture("gpt", src as string), out: out(), tp: 1, pp: 3 })).rejects.toThrow(/PP 3 × VPP 1 does not divide the 4 layers/);
  });
});
