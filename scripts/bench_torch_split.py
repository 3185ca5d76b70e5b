#!/usr/bin/python3
"""The torch reference approach to a TP re-split, as OpenBA's checkpoint_split_model.py does it: torch.load every
shard whole, concatenate each TP-split tensor, pad the vocabulary by repeating the last row, torch.chunk into the new
TP size, and torch.save one file per new rank.

  /usr/bin/python3 scripts/bench_torch_split.py <iter_dir> <out_iter_dir> <new_tp>
"""
import os, sys
import torch

sys.path.insert(0, os.path.dirname(__file__))
from fixturelib import install_megatron_stub  # noqa: E402

install_megatron_stub()

src, out, new_tp = sys.argv[1], sys.argv[2], int(sys.argv[3])
ranks = sorted(d for d in os.listdir(src) if d.startswith("mp_rank_"))
sds = [torch.load(os.path.join(src, r, "model_optim_rng.pt"), map_location="cpu") for r in ranks]
args = sds[0]["args"]
ROW = ("self_attention.dense.weight", "inter_attention.dense.weight", "mlp.w2.weight")
COL = ("query_key_value", "inter_attention.query.", "key_value", "mlp.w1", "mlp.w3")

emb = torch.cat([sd["model"]["language_model"]["embedding"]["word_embeddings"]["weight"] for sd in sds])
bias = torch.cat([sd["model"]["lm_head"]["bias"] for sd in sds])
padded = -(-emb.shape[0] // (128 * new_tp)) * (128 * new_tp)
if padded > emb.shape[0]:
    emb = torch.cat([emb, emb[-1:].repeat(padded - emb.shape[0], 1)])
    bias = torch.cat([bias, bias[-1:].repeat(padded - bias.shape[0])])
embs, biases = torch.chunk(emb, new_tp), torch.chunk(bias, new_tp)
stacks = {}
for stack in ("encoder", "decoder"):
    parts = [sd["model"]["language_model"][stack] for sd in sds]
    per_rank = [dict() for _ in range(new_tp)]
    for k in parts[0]:
        if k.endswith(ROW):
            chunks = torch.chunk(torch.cat([p[k] for p in parts], 1), new_tp, 1)
        elif any(c in k for c in COL):
            chunks = torch.chunk(torch.cat([p[k] for p in parts], 0), new_tp, 0)
        else:
            chunks = [parts[0][k]] * new_tp
        for r in range(new_tp):
            per_rank[r][k] = chunks[r].clone()
    stacks[stack] = per_rank
args.tensor_model_parallel_size = new_tp
args.padded_vocab_size = padded
for r in range(new_tp):
    sd = {"model": {"language_model": {"embedding": {"word_embeddings": {"weight": embs[r].clone()}},
                                       "encoder": stacks["encoder"][r], "decoder": stacks["decoder"][r]},
                    "lm_head": {"bias": biases[r].clone()}},
          "args": args, "checkpoint_version": 3.0, "iteration": sds[0]["iteration"]}
    os.makedirs(os.path.join(out, f"mp_rank_{r:02d}"), exist_ok=True)
    torch.save(sd, os.path.join(out, f"mp_rank_{r:02d}", "model_optim_rng.pt"))
