#!/usr/bin/python3
"""The torch approach to a Megatron-Core MoE (TP 1 x EP N, legacy) -> HF Qwen2-MoE, as the usual conversion scripts
do it: torch.load every EP rank whole, take the dense weights from rank 0, renumber local experts to global ones
(e = ep * E_local + j), split fused QKV and [gate; up], and torch.save the HF state dict.

  /usr/bin/python3 scripts/bench_torch_moe_convert.py <iter_dir> <out_dir>
"""
import os, re, sys
import torch

sys.path.insert(0, os.path.dirname(__file__))
from fixturelib import install_megatron_stub  # noqa: E402

install_megatron_stub()
src, out = sys.argv[1], sys.argv[2]
ranks = sorted(d for d in os.listdir(src) if d.startswith("mp_rank_"))
sds = [torch.load(os.path.join(src, r, "model_optim_rng.pt"), map_location="cpu") for r in ranks]
args = sds[0]["args"]
NH, NG, D = args.num_attention_heads, args.num_query_groups, args.kv_channels
q = NH // NG
per = args.num_experts // len(sds)
merged = {}
for ep, sd in enumerate(sds):
    for k, v in sd["model"].items():
        if not torch.is_tensor(v):
            continue
        m = re.match(r"(decoder\.layers\.\d+\.mlp\.experts\.local_experts\.)(\d+)\.(.+)$", k)
        if m:
            merged[f"{m.group(1)}{ep * per + int(m.group(2))}.{m.group(3)}"] = v
        elif ep == 0:
            merged[k] = v
V = args.vocab_size
hf = {"model.embed_tokens.weight": merged["embedding.word_embeddings.weight"][:V], "model.norm.weight": merged["decoder.final_layernorm.weight"],
      "lm_head.weight": merged["output_layer.weight"][:V]}


def split_fc1(prefix, w):
    g, u = w.chunk(2)
    hf[prefix + "gate_proj.weight"], hf[prefix + "up_proj.weight"] = g, u


for i in range(args.num_layers):
    k, h = f"decoder.layers.{i}.", f"model.layers.{i}."
    for part, name in (("weight", "weight"), ("bias", "bias")):
        w = merged[k + f"self_attention.linear_qkv.{part}"].view(NG, (q + 2) * D, -1)
        hf[h + f"self_attn.q_proj.{name}"] = w[:, : q * D].reshape(NH * D, -1).squeeze(-1)
        hf[h + f"self_attn.k_proj.{name}"] = w[:, q * D : (q + 1) * D].reshape(NG * D, -1).squeeze(-1)
        hf[h + f"self_attn.v_proj.{name}"] = w[:, (q + 1) * D :].reshape(NG * D, -1).squeeze(-1)
    hf[h + "self_attn.o_proj.weight"] = merged[k + "self_attention.linear_proj.weight"]
    hf[h + "input_layernorm.weight"] = merged[k + "input_layernorm.weight"]
    hf[h + "post_attention_layernorm.weight"] = merged[k + "pre_mlp_layernorm.weight"]
    hf[h + "mlp.gate.weight"] = merged[k + "mlp.router.weight"]
    for e in range(args.num_experts):
        split_fc1(h + f"mlp.experts.{e}.", merged[k + f"mlp.experts.local_experts.{e}.linear_fc1.weight"])
        hf[h + f"mlp.experts.{e}.down_proj.weight"] = merged[k + f"mlp.experts.local_experts.{e}.linear_fc2.weight"]
    split_fc1(h + "mlp.shared_expert.", merged[k + "mlp.shared_experts.linear_fc1.weight"])
    hf[h + "mlp.shared_expert.down_proj.weight"] = merged[k + "mlp.shared_experts.linear_fc2.weight"]
    hf[h + "mlp.shared_expert_gate.weight"] = merged[k + "mlp.shared_experts.gate_weight"]
os.makedirs(out, exist_ok=True)
torch.save({k: v.contiguous() for k, v in hf.items()}, os.path.join(out, "pytorch_model.bin"))
