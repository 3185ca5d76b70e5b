#!/usr/bin/python3
"""Builds the synthetic benchmark checkpoint: OpenBA-v2's real widths with random fp16 weights.

  /usr/bin/python3 scripts/bench_checkpoint.py --out DIR [--enc 1 --dec 1] [--tp 2]

hidden 2560, 20 heads x 128, FFN 6912, vocab 250240, fp16, saved as OpenBA's Megatron fork saves (TP shards of
model_optim_rng.pt under iter_0000001/). Default 1 encoder + 1 decoder layer (about 1.6 GB); --enc 8 --dec 24 is the
full 7.6 GB model. The weights are random: the bench measures bytes moved, not model quality.
"""
import argparse, collections, os, sys
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--enc", type=int, default=1)
ap.add_argument("--dec", type=int, default=1)
ap.add_argument("--tp", type=int, default=2)
a = ap.parse_args()

h, n, d, F, V = 2560, 20, 128, 6912, 250240
P = n * d
tp = a.tp

sys.path.insert(0, os.path.dirname(__file__))
from fixturelib import bench_weights, install_megatron_stub  # noqa: E402

ModelType = install_megatron_stub()
rnd = bench_weights(torch.float16)

COL = {"self_attention.query_key_value.weight": 3 * P, "self_attention.query_key_value.bias": 3 * P,
       "inter_attention.query.weight": P, "inter_attention.query.bias": P,
       "inter_attention.key_value.weight": 2 * P, "inter_attention.key_value.bias": 2 * P,
       "mlp.w1.weight": F, "mlp.w3.weight": F}
ROW = {"self_attention.dense.weight", "inter_attention.dense.weight", "mlp.w2.weight"}

def layer_shapes(dec):
    s = collections.OrderedDict()
    s["input_layernorm.weight"] = (h,); s["input_layernorm.bias"] = (h,)
    s["self_attention.query_key_value.weight"] = (3 * P, h); s["self_attention.query_key_value.bias"] = (3 * P,)
    s["self_attention.rotary_embed.inv_freq"] = (d // 2,)
    s["self_attention.dense.weight"] = (h, P); s["self_attention.dense.bias"] = (h,)
    s["post_attention_layernorm.weight"] = (h,); s["post_attention_layernorm.bias"] = (h,)
    if dec:
        s["inter_attention.query.weight"] = (P, h); s["inter_attention.query.bias"] = (P,)
        s["inter_attention.key_value.weight"] = (2 * P, h); s["inter_attention.key_value.bias"] = (2 * P,)
        s["inter_attention.dense.weight"] = (h, P); s["inter_attention.dense.bias"] = (h,)
        s["post_inter_attention_layernorm.weight"] = (h,); s["post_inter_attention_layernorm.bias"] = (h,)
    s["mlp.w1.weight"] = (F, h); s["mlp.w2.weight"] = (h, F); s["mlp.w3.weight"] = (F, h)
    return s

def shard(name, shape, r):
    shape = list(shape)
    if name in COL:
        shape[0] //= tp
    elif name in ROW:
        shape[1] //= tp
    return rnd(*shape)

iter_dir = os.path.join(a.out, "iter_0000001")
for r in range(tp):
    def stack(dec, count):
        o = collections.OrderedDict()
        for i in range(count):
            for k, s in layer_shapes(dec).items():
                o[f"layers.{i}.{k}"] = shard(k, s, r)
        o["final_layernorm.weight"] = rnd(h); o["final_layernorm.bias"] = rnd(h)
        return o
    args = argparse.Namespace(num_layers=a.enc, encoder_num_layers=a.enc, decoder_num_layers=a.dec, hidden_size=h,
                              ffn_hidden_size=F, num_attention_heads=n, kv_channels=d, padded_vocab_size=V,
                              make_vocab_size_divisible_by=128, tensor_model_parallel_size=tp,
                              pipeline_model_parallel_size=1, encoder_seq_length=1040, decoder_seq_length=1040,
                              fp16=True, bf16=False, params_dtype=torch.float16,
                              model_type=ModelType.encoder_and_decoder)
    sd = {"args": args, "checkpoint_version": 3.0, "iteration": 1,
          "model": {"language_model": {"embedding": {"word_embeddings": {"weight": rnd(V // tp, h)}},
                                       "encoder": stack(False, a.enc), "decoder": stack(True, a.dec)},
                    "lm_head": {"bias": rnd(V // tp)}}}
    path = os.path.join(iter_dir, f"mp_rank_{r:02d}")
    os.makedirs(path, exist_ok=True)
    torch.save(sd, os.path.join(path, "model_optim_rng.pt"))
    del sd
with open(os.path.join(a.out, "latest_checkpointed_iteration.txt"), "w") as f:
    f.write("1")
print(f"wrote {a.out}")
