#!/usr/bin/python3
"""The torch reference approach to Megatron -> HF conversion, as OpenBA's converter does it: torch.load every TP
shard whole, concatenate (dim 1 for row-parallel, dim 0 otherwise), fuse fc_in = [w1; w3], torch.save the state dict.

  /usr/bin/python3 scripts/bench_torch_convert.py <iter_dir> <out_dir>
"""
import os, re, sys
import torch

sys.path.insert(0, os.path.dirname(__file__))
from fixturelib import install_megatron_stub  # noqa: E402

install_megatron_stub()

src, out = sys.argv[1], sys.argv[2]
ranks = sorted(d for d in os.listdir(src) if d.startswith("mp_rank_"))
sds = [torch.load(os.path.join(src, r, "model_optim_rng.pt"), map_location="cpu")["model"] for r in ranks]
ROW = ("self_attention.dense.weight", "inter_attention.dense.weight", "mlp.w2.weight")
TP = ("query_key_value", "query.", "key_value", "mlp.w1", "mlp.w3") + ROW
NAMES = {"self_attention.query_key_value": "self_attn.qkv", "self_attention.dense": "self_attn.o",
         "post_attention_layernorm": "post_attn_layernorm", "inter_attention.query": "inter_attn.q",
         "inter_attention.key_value": "inter_attn.kv", "inter_attention.dense": "inter_attn.o",
         "post_inter_attention_layernorm": "post_inter_attn_layernorm", "input_layernorm": "input_layernorm",
         "mlp.w2": "mlp.fc_out"}
hf = {}
emb = torch.cat([sd["language_model"]["embedding"]["word_embeddings"]["weight"] for sd in sds])
hf["shared_embedding.weight"] = emb
hf["lm_head.weight"] = emb
hf["lm_head.bias"] = torch.cat([sd["lm_head"]["bias"] for sd in sds])
for stack in ("encoder", "decoder"):
    parts = [sd["language_model"][stack] for sd in sds]
    w1, w3 = {}, {}
    for k in parts[0]:
        m = re.match(r"layers\.(\d+)\.(.+)\.(weight|bias)$", k)
        if not m:
            if k.startswith("final_layernorm"):
                hf[f"{stack}.{k}"] = parts[0][k]
            continue
        i, op, kind = m.groups()
        if any(t in k for t in TP):
            v = torch.cat([p[k] for p in parts], dim=1 if k.endswith(ROW) else 0)
        else:
            v = parts[0][k]
        if op == "mlp.w1":
            w1[i] = v
        elif op == "mlp.w3":
            w3[i] = v
        else:
            hf[f"{stack}.block.{i}.{NAMES[op]}.{kind}"] = v
    for i in w1:
        hf[f"{stack}.block.{i}.mlp.fc_in.weight"] = torch.cat([w1[i], w3[i]])
os.makedirs(out, exist_ok=True)
torch.save(hf, os.path.join(out, "pytorch_model.bin"))
