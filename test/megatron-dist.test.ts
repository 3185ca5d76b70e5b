/**
 * Megatron-Core torch_dist checkpoints at the checkpoint level: fixtures/dcp (written by torch 2.13's own DCP writer)
 * convert to HF bit-exactly against torch's own load followed by a plain-torch split; inspect reports them; legacy ↔
 * torch_dist round trips of every GPT fixture family come back to torch's expected HF tensors.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { convertAny, reshardAny, toMegatronAny } from "../src/ops/dispatch.js";
import { inspectPath } from "../src/ops/inspect.js";
import { openDcp } from "../src/formats/torch-dcp/read.js";
import { DCP_FIXTURES, PY_DCP_PRELUDE } from "./helpers/dcp.js";
import { expectHf, type ExpectedHf } from "./helpers/expect-hf.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { HAS_TORCH, runPython } from "./helpers/torch.js";
import { HAS_REF, runRefPython } from "./helpers/refpy.js";

const NO_REF = HAS_REF ? "" : " — skipped: no reference venv (scripts/make_ref_venv.sh)";
const work = mkdtempSync(join(tmpdir(), "megahub-dist-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const out = () => join(work, `out${n++}`);



/**
 * torch's view of a fixture as HF tensors: dcp_to_torch_save + torch.load, then the split done in plain torch
 * (per query group q/k/v rows, fc1 = [gate; up], padding rows dropped), with the dims from common.pt's args.
 */
function torchHf(dir: string): ExpectedHf {
  const code = `${PY_DCP_PRELUDE}
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
d, pt = sys.argv[1], sys.argv[2]
dcp_to_torch_save(d, pt)
sd = torch.load(pt, weights_only=False)
a = torch.load(os.path.join(d, 'common.pt'), weights_only=False)['args']
L, V, F, H = a.num_layers, a.vocab_size, a.ffn_hidden_size, a.hidden_size
G, kv, hpg = a.num_query_groups, a.kv_channels, a.num_attention_heads // a.num_query_groups
def layer(l, *names):
    for p in names:
        if 'decoder.layers.' + p in sd: return sd['decoder.layers.' + p][l]
        if f'decoder.layers.{l}.{p}' in sd: return sd[f'decoder.layers.{l}.{p}']
    raise KeyError(names)
hf = {'model.embed_tokens.weight': sd['embedding.word_embeddings.weight'][:V], 'model.norm.weight': sd['decoder.final_layernorm.weight']}
if 'output_layer.weight' in sd: hf['lm_head.weight'] = sd['output_layer.weight'][:V]
for l in range(L):
    h = f'model.layers.{l}.'
    hf[h + 'input_layernorm.weight'] = layer(l, 'self_attention.linear_qkv.layer_norm_weight', 'input_layernorm.weight')
    hf[h + 'post_attention_layernorm.weight'] = layer(l, 'mlp.linear_fc1.layer_norm_weight', 'pre_mlp_layernorm.weight')
    qkv = layer(l, 'self_attention.linear_qkv.weight').reshape(G, hpg + 2, kv, H)
    hf[h + 'self_attn.q_proj.weight'] = qkv[:, :hpg].reshape(-1, H)
    hf[h + 'self_attn.k_proj.weight'] = qkv[:, hpg].reshape(-1, H)
    hf[h + 'self_attn.v_proj.weight'] = qkv[:, hpg + 1].reshape(-1, H)
    hf[h + 'self_attn.o_proj.weight'] = layer(l, 'self_attention.linear_proj.weight')
    fc1 = layer(l, 'mlp.linear_fc1.weight')
    hf[h + 'mlp.gate_proj.weight'], hf[h + 'mlp.up_proj.weight'] = fc1[:F], fc1[F:]
    hf[h + 'mlp.down_proj.weight'] = layer(l, 'mlp.linear_fc2.weight')
print(json.dumps({'tensors': [{'name': k, 'dtype': DT[t.dtype], 'shape': list(t.shape), 'sha256': sha(t)} for k, t in hf.items()]}))
`;
  return JSON.parse(runRefPython(code, [dir, join(mkdtempSync(join(tmpdir(), "megahub-dist-pt-")), "whole.pt")])) as ExpectedHf;
}

describe("torch_dist fixtures (torch 2.13's DCP writer) → HF", () => {
  it.skipIf(!HAS_REF).each(DCP_FIXTURES)(`%s converts bit-exactly vs torch's own load + split${NO_REF}`, async (name) => {
    const dir = out();
    const res = await convertAny({ input: fixture("dcp", name), out: dir });
    expect(res.architecture).toBe("gpt");
    await expectHf(dir, torchHf(fixture("dcp", name, "iter_0000010")));
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    expect(config.tie_word_embeddings).toBe(name === "gpt-tp2-perlayer");
    expect(config.vocab_size).toBe(50);
  });

  it("the iteration directory, the root and a file inside the iteration all name the same checkpoint", async () => {
    const dirs = [fixture("dcp", "gpt-tp2-pp2"), fixture("dcp", "gpt-tp2-pp2", "iter_0000010"), fixture("dcp", "gpt-tp2-pp2", "iter_0000010", "metadata.json")];
    const reports = await Promise.all(dirs.map((d) => inspectPath(d)));
    for (const r of reports) expect([r.format, r.iteration, r.parameters?.total]).toEqual(["torch_dist", 10, reports[0]?.parameters?.total]);
    const viaOption = await inspectPath(fixture("dcp", "gpt-tp2-pp2"), { iteration: 10 });
    expect(viaOption.format).toBe("torch_dist");
  });
});

describe("inspect torch_dist", () => {
  // Dims of scripts/make_dcp_fixtures.py: H 16, 4 heads of 4 in 2 groups, FFN 24, padded vocab 64.
  const perLayer = 16 + (4 + 2 * 2) * 4 * 16 + 16 * 16 + 16 + 2 * 24 * 16 + 16 * 24;
  const table = [
    { name: "gpt-tp2-pp2", tp: 2, pp: 2, layers: 4, dtype: "BF16", keys: /layers stacked/, optimizer: /fully_reshardable/, spec: "te", head: 16 + 64 * 16, form: "old", tensors: 9 },
    { name: "gpt-tp2-perlayer", tp: 2, pp: 1, layers: 3, dtype: "F16", keys: /per-layer keys/, optimizer: /dp_reshardable: 2 flat fp32 buckets/, spec: "local", head: 16, form: "new", tensors: 3 * 6 + 2 },
  ];
  it.each(table)("$name: format, iteration, saved layout, dims, counts, optimizer layout", async (c) => {
    const r = await inspectPath(fixture("dcp", c.name));
    expect([r.format, r.iteration, r.tp, r.pp, r.dtypes, r.architecture, r.spec]).toEqual(["torch_dist", 10, c.tp, c.pp, [c.dtype], "gpt", c.spec]);
    expect(r.dims).toEqual({ hidden: 16, vocab: 64, ffn: 24, heads: 4, kvHeads: 2, headDim: 4, layers: c.layers });
    expect(r.parameters).toEqual({ embedding: 64 * 16, layers: c.layers * perLayer, head: c.head, total: 64 * 16 + c.layers * perLayer + c.head });
    expect(r.optimizer).toMatch(c.optimizer);
    expect(r.tensors.length).toBe(c.tensors);
    expect(r.notes.join("\n")).toMatch(c.keys);
    expect(r.notes.join("\n")).toMatch(new RegExp(`metadata.json \\(${c.form} form\\)`));
    expect(r.notes.join("\n")).toMatch(/vocabulary: 50 tokens/);
    expect(r.tensors.every((t) => !t.name.startsWith("optimizer.") && !t.name.includes("_extra_state"))).toBe(true);
  });
});

const KEYS = `
import sys, torch
sys.path.insert(0, "scripts")
from fixturelib import install_megatron_stub
install_megatron_stub()
print(" ".join(sorted(torch.load(sys.argv[1], map_location="cpu", weights_only=False)["model"])))
`;
const CASES = ["llama-tp2-pp2", "llama-tp2-te", "llama-pp2-vpp2", "llama-tp1-distopt", "qwen2-pp2", "qwen3-tp2"].filter((c) => hasFixture("gpt", c, "expected-hf.json"));
const expectedOf = (name: string) => JSON.parse(readFileSync(fixture("gpt", name, "expected-hf.json"), "utf8")) as ExpectedHf;

describe.skipIf(CASES.length === 0)("legacy ↔ torch_dist round trips", () => {
  it.each(CASES)("%s → torch_dist TP2 PP2 → legacy TP1 → HF equals torch's expected tensors", async (name) => {
    const dist = out();
    const res = await reshardAny({ input: fixture("gpt", name), out: dist, tp: 2, pp: 2, format: "torch_dist" });
    expect(res.architecture).toBe("gpt");
    expect(existsSync(join(dist, "iter_0000100", "metadata.json"))).toBe(true);
    expect(readFileSync(join(dist, "latest_checkpointed_iteration.txt"), "utf8")).toBe("100");
    const files = (await openDcp(join(dist, "iter_0000100")).then(async (d) => [[...d.files.keys()], await d.close()] as const))[0];
    expect([...files].sort()).toEqual(["__0_0.distcp", "__1_0.distcp", "__2_0.distcp", "__3_0.distcp"]);
    const legacy = out();
    await reshardAny({ input: dist, out: legacy, tp: 1 });
    expect(existsSync(join(legacy, "iter_0000100", "mp_rank_00", "model_optim_rng.pt"))).toBe(true);
    const hf = out();
    await convertAny({ input: legacy, out: hf });
    await expectHf(hf, expectedOf(name));
    if (!HAS_TORCH) return;
    // The state dict keys (output_layer._extra_state, which torch_dist omits, included) equal a legacy → legacy reshard's.
    const direct = out();
    await reshardAny({ input: fixture("gpt", name), out: direct, tp: 1 });
    const keys = (dir: string) => runPython(KEYS, [join(dir, "iter_0000100", "mp_rank_00", "model_optim_rng.pt")]).trim();
    expect(keys(legacy)).toContain("output_layer._extra_state");
    expect(keys(legacy)).toBe(keys(direct));
  });

  it.each(CASES.slice(0, 2))("%s → torch_dist TP2 → torch_dist TP1 PP2 → HF (dist to dist) is bit-exact", async (name) => {
    const a = out();
    await reshardAny({ input: fixture("gpt", name), out: a, tp: 2, format: "torch_dist" });
    const b = out();
    await reshardAny({ input: a, out: b, tp: 1, pp: 2, format: "torch_dist" });
    const hf = out();
    await convertAny({ input: b, out: hf });
    await expectHf(hf, expectedOf(name));
  });

  it.skipIf(!CASES.includes("qwen2-pp2"))("HF → to-megatron --format torch_dist TP2 PP2 → HF is bit-exact (tied, QKV bias)", async () => {
    const hf = out();
    await convertAny({ input: fixture("gpt", "qwen2-pp2"), out: hf });
    const dist = out();
    const res = await toMegatronAny({ input: hf, out: dist, tp: 2, pp: 2, format: "torch_dist" });
    expect(res.architecture).toBe("gpt");
    const report = await inspectPath(dist);
    expect([report.format, report.tp, report.pp, report.features?.untied, report.features?.qkvBias]).toEqual(["torch_dist", 2, 2, false, true]);
    const back = out();
    await convertAny({ input: dist, out: back });
    await expectHf(back, expectedOf("qwen2-pp2"));
  });
});
