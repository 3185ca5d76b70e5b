#!/usr/bin/python3
"""The torch approach to Megatron-Core GPT -> HF Llama, as the usual conversion scripts do it: torch.load every
(TP, PP) rank whole, renumber stage-local layers, merge TP (per-rank [gate_r; up_r] un-interleaved, dim 1 for
row-parallel), split the fused QKV per query group, and torch.save the HF state dict.

  /usr/bin/python3 scripts/bench_torch_llama_convert.py <iter_dir> <out_dir>
"""
import os, re, sys
import torch

sys.path.insert(0, os.path.dirname(__file__))
from fixturelib import install_megatron_stub  # noqa: E402

install_megatron_stub()
src, out = sys.argv[1], sys.argv[2]
ranks = sorted(d for d in os.listdir(src) if d.startswith("mp_rank_"))
sds = {tuple(int(x) for x in re.findall(r"\d+", r)): torch.load(os.path.join(src, r, "model_optim_rng.pt"), map_location="cpu") for r in ranks}
args = next(iter(sds.values()))["args"]
TP, PP = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
NH, NG, D, F = args.num_attention_heads, args.num_query_groups, args.kv_channels, args.ffn_hidden_size
q = NH // NG
per = args.num_layers // PP
merged = {}
for p in range(PP):
    parts = [sds[(t, p) if PP > 1 else (t,)]["model"] for t in range(TP)]
    for k, v in parts[0].items():
        if not torch.is_tensor(v):
            continue
        m = re.match(r"decoder\.layers\.(\d+)\.(.+)$", k)
        name = f"decoder.layers.{int(m.group(1)) + p * per}.{m.group(2)}" if m else k
        if "norm" in k:
            merged[name] = v
        elif k.endswith(("linear_proj.weight", "linear_fc2.weight")):
            merged[name] = torch.cat([x[k] for x in parts], 1)
        elif k.endswith("linear_fc1.weight"):
            halves = [x[k].chunk(2) for x in parts]
            merged[name] = torch.cat([h[0] for h in halves] + [h[1] for h in halves])
        else:
            merged[name] = torch.cat([x[k] for x in parts])
V = args.vocab_size
hf = {"model.embed_tokens.weight": merged["embedding.word_embeddings.weight"][:V], "model.norm.weight": merged["decoder.final_layernorm.weight"],
      "lm_head.weight": merged["output_layer.weight"][:V]}
for i in range(args.num_layers):
    k, h = f"decoder.layers.{i}.", f"model.layers.{i}."
    w = merged[k + "self_attention.linear_qkv.weight"].view(NG, (q + 2) * D, -1)
    hf[h + "self_attn.q_proj.weight"] = w[:, : q * D].reshape(NH * D, -1)
    hf[h + "self_attn.k_proj.weight"] = w[:, q * D : (q + 1) * D].reshape(NG * D, -1)
    hf[h + "self_attn.v_proj.weight"] = w[:, (q + 1) * D :].reshape(NG * D, -1)
    hf[h + "self_attn.o_proj.weight"] = merged[k + "self_attention.linear_proj.weight"]
    hf[h + "input_layernorm.weight"] = merged[k + "input_layernorm.weight"]
    hf[h + "post_attention_layernorm.weight"] = merged[k + "pre_mlp_layernorm.weight"]
    hf[h + "mlp.gate_proj.weight"] = merged[k + "mlp.linear_fc1.weight"][:F]
    hf[h + "mlp.up_proj.weight"] = merged[k + "mlp.linear_fc1.weight"][F:]
    hf[h + "mlp.down_proj.weight"] = merged[k + "mlp.linear_fc2.weight"]
os.makedirs(out, exist_ok=True)
torch.save({k: v.contiguous() for k, v in hf.items()}, os.path.join(out, "pytorch_model.bin"))
