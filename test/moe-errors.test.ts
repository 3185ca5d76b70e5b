/** Bad Megatron-Core MoE input: one clear error naming the file, the rank and what was expected; nothing written. */
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { convertAny, reshardAny, toMegatronAny } from "../src/ops/dispatch.js";
import { megahub } from "./helpers/cli.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { HAS_TORCH, runPython } from "./helpers/torch.js";
import { editRank, refused, scratch } from "./helpers/bad-input.js";

const { out, copyOf } = scratch("megahub-moe-bad-", "moe");



describe.skipIf(!hasFixture("moe", "mixtral-ep2"))("bad Megatron-Core MoE checkpoints", () => {
  it.skipIf(!HAS_TORCH)("an expert missing on one EP rank names the rank, the local and the global expert", async () => {
    const src = copyOf("mixtral-ep2");
    editRank(src, "mp_rank_00_001", "del m['decoder.layers.1.mlp.experts.local_experts.1.linear_fc2.weight']");
    const dir = out();
    await refused(convertAny({ input: src, out: dir }), /mp_rank_00_001.*EP rank 1 lacks local expert 1 of its 2 in stage-local layer 1 \(global experts 3\)/);
    expect(existsSync(dir)).toBe(false);
  });

  it.skipIf(!HAS_TORCH)("a grouped-GEMM expert missing is caught the same way", async () => {
    const src = copyOf("mixtral-te-grouped-ep2");
    editRank(src, "mp_rank_00_000", "del m['decoder.layers.0.mlp.experts.linear_fc1.weight0']");
    await refused(convertAny({ input: src, out: out() }), /EP rank 0 lacks local expert 0 of its 2 in stage-local layer 0 \(global experts 0\)/);
  });

  it.skipIf(!HAS_TORCH)("dense weights that differ between EP files are refused: shapes, names, sampled bytes", async () => {
    const src = copyOf("mixtral-ep2");
    editRank(src, "mp_rank_00_001", "k = 'decoder.layers.0.self_attention.linear_proj.weight'\nm[k] = m[k][:, :-1].clone()");
    await refused(convertAny({ input: src, out: out() }), /EP rank 1 holds BF16\[32, 31\], EP rank 0 BF16\[32, 32\]: the dense weights of EP files must agree/);
    const gone = copyOf("mixtral-ep2");
    editRank(gone, "mp_rank_00_001", "del m['decoder.final_layernorm.weight']");
    await refused(convertAny({ input: gone, out: out() }), /EP rank 1's copy of the dense weights differs from EP rank 0's: lacks decoder\.final_layernorm\.weight/);
    const changed = copyOf("mixtral-ep2");
    editRank(changed, "mp_rank_00_001", "k = 'decoder.layers.1.self_attention.linear_qkv.weight'\nm[k] = m[k].clone(); m[k][-1, -1] += 1");
    const dir = out();
    await refused(reshardAny({ input: changed, out: dir, tp: 1 }), /mp_rank_00_001.*decoder\.layers\.1\.self_attention\.linear_qkv\.weight.*EP rank 1's copy of this dense weight differs from EP rank 0's at byte 4094/);
    expect(existsSync(dir)).toBe(false);
  });

  it.skipIf(!HAS_TORCH)("a local expert index beyond E/EP is refused", async () => {
    const src = copyOf("mixtral-ep2");
    editRank(src, "mp_rank_00_000", "k = 'decoder.layers.0.mlp.experts.local_experts.1.linear_fc1.weight'\nm['decoder.layers.0.mlp.experts.local_experts.2.linear_fc1.weight'] = m[k].clone()");
    await refused(convertAny({ input: src, out: out() }), /local expert 2 on EP rank 0, but 4 experts over EP 2 give 2 per rank/);
  });

  it.skipIf(!HAS_TORCH)("an unknown expert tensor on EP rank 1 alone is listed, not dropped", async () => {
    const src = copyOf("mixtral-ep2");
    editRank(src, "mp_rank_00_001", "m['decoder.layers.0.mlp.experts.local_experts.0.linear_fc1.bias'] = torch.zeros(32)");
    await refused(convertAny({ input: src, out: out() }), /1 tensor names are not part of Megatron-Core GPT.*decoder\.layers\.N\.mlp\.experts\.local_experts\.0\.linear_fc1\.bias/);
  });

  it.skipIf(!HAS_TORCH)("expert TP other than TP is refused, not misread", async () => {
    const src = copyOf("qwen2moe-tp2-ep2");
    for (const r of ["mp_rank_00_000", "mp_rank_01_000", "mp_rank_00_001", "mp_rank_01_001"]) editRank(src, r, "a.expert_tensor_parallel_size = 1");
    await refused(convertAny({ input: src, out: out() }), /expert_tensor_parallel_size 1 differs from TP 2/);
  });

  it.skipIf(!HAS_TORCH)("expert-bias routing (DeepSeek-V3 style) survives a reshard and is refused by the HF classes", async () => {
    const src = copyOf("mixtral-ep2");
    const edit = "for l in (0, 1): m['decoder.layers.%d.mlp.router.expert_bias' % l] = torch.arange(4, dtype=torch.float32) / 7 + l\na.moe_router_enable_expert_bias = True\na.moe_router_score_function = 'sigmoid'";
    for (const r of ["mp_rank_00_000", "mp_rank_00_001"]) editRank(src, r, edit);
    await refused(convertAny({ input: src, out: out() }), /cannot be written as MixtralForCausalLM: the sigmoid router score function.*; expert-bias routing \(router\.expert_bias\)/);
    const one = out();
    await reshardAny({ input: src, out: one, tp: 1, ep: 1 });
    const check = runPython(
      `import sys, glob, torch
sys.path.insert(0, 'scripts'); import fixturelib; fixturelib.install_megatron_stub()
sd = torch.load(glob.glob(sys.argv[1] + '/iter_*/mp_rank_00/model_optim_rng.pt')[0], map_location='cpu', weights_only=False)
b = [sd['model']['decoder.layers.%d.mlp.router.expert_bias' % l] for l in (0, 1)]
assert all(t.dtype == torch.float32 and torch.equal(t, torch.arange(4, dtype=torch.float32) / 7 + l) for l, t in enumerate(b)), b
a = sd['args']
assert a.moe_router_enable_expert_bias is True and a.moe_router_score_function == 'sigmoid' and a.expert_model_parallel_size == 1
print('ok')`,
      [one],
    );
    expect(check.trim()).toBe("ok");
    expect(megahub(["inspect", one]).stdout).toMatch(/routing {7}sigmoid scores, top-2 with expert bias/);
  });

  it("an EP that does not divide the experts, or EP on a dense model, is refused", async () => {
    const dir = out();
    await refused(reshardAny({ input: fixture("moe", "mixtral-ep1"), out: dir, tp: 1, ep: 3 }), /EP 3 does not divide the 4 experts/);
    expect(existsSync(dir)).toBe(false);
    await refused(reshardAny({ input: fixture("gpt", "llama-tp1"), out: out(), tp: 1, ep: 2 }), /expert parallelism needs a mixture-of-experts model/);
  });

  it("a class that cannot hold the model names every reason", async () => {
    await refused(convertAny({ input: fixture("moe", "qwen2moe-ep1"), out: out(), hfArch: "mixtral" }), /cannot be written as MixtralForCausalLM: Mixtral has no attention biases; Mixtral has no shared experts; Mixtral renormalises the top-k probabilities.*; Mixtral has no dense layers/);
    await refused(convertAny({ input: fixture("moe", "mixtral-ep1"), out: out(), hfArch: "llama" }), /cannot be written as LlamaForCausalLM: mixture-of-experts layers/);
    await refused(convertAny({ input: fixture("gpt", "llama-tp1"), out: out(), hfArch: "mixtral" }), /cannot be written as MixtralForCausalLM: a dense model/);
  });

  it("--experts grouped without the TE spec, and --ep on a dense HF model, are refused", async () => {
    const hf = out();
    await convertAny({ input: fixture("moe", "mixtral-ep1"), out: hf });
    await refused(toMegatronAny({ input: hf, out: out(), tp: 1, experts: "grouped" }), /--experts grouped is Transformer Engine's TEGroupedMLP: it needs --spec te/);
    const dense = out();
    await convertAny({ input: fixture("gpt", "llama-tp1"), out: dense });
    await refused(toMegatronAny({ input: dense, out: out(), tp: 1, ep: 2 }), /--experts and --ep apply to mixture-of-experts models/);
  });

  it("CLI: inspect shows experts, top-k, routing, EP and active vs total parameters; a bad --ep is one line, exit 2", () => {
    const r = megahub(["inspect", fixture("moe", "qwen2moe-tp2-ep2"), "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const j = r.json<{ tp: number; ep: number; moe: { experts: number; topk: number; ep: number; expertsPerRank: number; moeLayers: number; denseLayers: number; sharedExpertFfn: number; totalParameters: number; activeParameters: number } }>();
    expect([j.tp, j.ep, j.moe.experts, j.moe.topk, j.moe.ep, j.moe.expertsPerRank, j.moe.moeLayers, j.moe.denseLayers, j.moe.sharedExpertFfn]).toEqual([2, 2, 4, 2, 2, 2, 2, 1, 24]);
    // 2 MoE layers × 2 unused experts × 3 · 16 · 32 parameters each
    expect(j.moe.totalParameters - j.moe.activeParameters).toBe(2 * 2 * 3 * 16 * 32);
    const text = megahub(["inspect", fixture("moe", "mixtral-te-grouped-ep2")]);
    expect(text.stdout).toMatch(/experts {7}4 × FFN 16 \(grouped\), top-2, in 2 of 2 layers; EP 2, 2 experts per rank/);
    expect(text.stdout).toMatch(/routing {7}top-2 logits, softmax over them/);
    const dir = out();
    const bad = megahub(["reshard", fixture("moe", "mixtral-ep2"), "--out", dir, "--tp", "1", "--ep", "3"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split("\n")).toHaveLength(1);
    expect(bad.stderr).toMatch(/EP 3 does not divide the 4 experts/);
    expect(existsSync(dir)).toBe(false);
  });
});
