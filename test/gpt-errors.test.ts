/** Bad Megatron-Core GPT input: one clear error naming the file, the tensor and what was expected; nothing written. */
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { convertAny } from "../src/ops/dispatch.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { megahub } from "./helpers/cli.js";
import { HAS_TORCH } from "./helpers/torch.js";
import { editRank, refused, scratch } from "./helpers/bad-input.js";

const { out, copyOf } = scratch("megahub-gpt-bad-", "gpt");



describe.skipIf(!hasFixture("gpt", "llama-tp2-pp2"))("bad Megatron-Core GPT checkpoints", () => {
  it("a missing pipeline stage is named", async () => {
    const src = copyOf("llama-tp2-pp2");
    rmSync(join(src, "iter_0000100", "mp_rank_01_001"), { recursive: true });
    const dir = out();
    await refused(convertAny({ input: src, out: dir }), /missing mp_rank_01_001/);
    expect(existsSync(dir)).toBe(false);
  });

  it.skipIf(!HAS_TORCH)("unknown tensor names are all listed, with the rank file", async () => {
    const src = copyOf("llama-tp1");
    editRank(src, "mp_rank_00", "m['decoder.layers.0.self_attention.foo.weight'] = torch.zeros(2)\nm['decoder.layers.1.mlp.experts.weight1'] = torch.zeros(2)");
    await refused(convertAny({ input: src, out: out() }), /2 tensor names are not part of Megatron-Core GPT \(mixture-of-experts parts not mapped: the legacy GroupedMLP's weight1\/weight2, expert biases\): decoder\.layers\.N\.self_attention\.foo\.weight, decoder\.layers\.N\.mlp\.experts\.weight1/);
  });

  it.skipIf(!HAS_TORCH)("a rank whose shard does not line up names the file and the tensor", async () => {
    const src = copyOf("llama-tp2");
    editRank(src, "mp_rank_01", "k = 'decoder.layers.2.self_attention.linear_proj.weight'\nm[k] = m[k][:-1].clone()");
    await refused(convertAny({ input: src, out: out() }), /mp_rank_01\/model_optim_rng\.pt.*decoder\.layers\.2\.self_attention\.linear_proj\.weight.*does not line up/);
  });

  it.skipIf(!HAS_TORCH)("a layer whose shape differs from the dims is reported with the expected shape", async () => {
    const src = copyOf("llama-tp1");
    editRank(src, "mp_rank_00", "k = 'decoder.layers.3.mlp.linear_fc2.weight'\nm[k] = m[k][:, :-2].clone()");
    await refused(convertAny({ input: src, out: out() }), /decoder\.layers\.3\.mlp\.linear_fc2\.weight is \[32, 62\], expected \[32, 64\]/);
  });

  it("a tokenizer bigger than the embedding is refused", async () => {
    await refused(convertAny({ input: fixture("gpt", "llama-tp1"), out: out(), tokenizer: fixture("gpt", "tokenizer") }), /tokenizer has 1001 ids but the embedding only 256 rows/);
  });

  it("--hf-arch names every reason a class cannot hold the model", async () => {
    await refused(convertAny({ input: fixture("gpt", "qwen3-tp1"), out: out(), hfArch: "llama" }), /cannot be written as LlamaForCausalLM: LlamaForCausalLM has no q\/k norms/);
    await refused(convertAny({ input: fixture("gpt", "llama-tp1"), out: out(), hfArch: "qwen2" }), /Qwen2 has biases on q\/k\/v only/);
  });

  it("CLI: one line on stderr, exit 2 (a --tp the model cannot take), nothing written", () => {
    const dir = out();
    const r = megahub(["reshard", fixture("gpt", "llama-tp2"), "--out", dir, "--tp", "3"]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/TP 3 does not divide the 4 attention heads/);
    expect(existsSync(dir)).toBe(false);
  });

  it("CLI: inspect shows the layout, dims and spec of a TE-spec VPP checkpoint", () => {
    const r = megahub(["inspect", fixture("gpt", "llama-pp2-vpp2"), "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const j = r.json<{ architecture: string; tp: number; pp: number; vpp: number; dims: { layers: number; kvHeads: number } }>();
    expect([j.architecture, j.tp, j.pp, j.vpp, j.dims.layers, j.dims.kvHeads]).toEqual(["gpt", 1, 2, 2, 4, 2]);
    const te = megahub(["inspect", fixture("gpt", "llama-tp2-te")]);
    expect(te.stdout).toMatch(/Transformer Engine spec names/);
    const opt = megahub(["inspect", fixture("gpt", "llama-tp1-distopt")]);
    expect(opt.stdout).toMatch(/distributed optimizer/);
  });
});
