#!/usr/bin/python3
"""Builds the Llama-shaped benchmark checkpoint: a Megatron-Core GPTModel (local spec) saved as Megatron-Core saves
it in the legacy format, with random bf16 weights.

  /usr/bin/python3 scripts/bench_llama_checkpoint.py --out DIR [--layers 4] [--tp 2] [--pp 2]

hidden 2048, 32 heads / 8 query groups x 64, SwiGLU FFN 5632, vocab 128256 (Llama-3's), untied head. Per rank:
its [V/TP] embedding rows on the first stage, its per-group QKV rows, its [gate_r; up_r] fc1, dim-1 slices of
linear_proj / linear_fc2, the final norm and its head rows on the last stage, stage-local layer numbers. 4 layers at
TP 2 x PP 2 is about 1.4 GB. The weights are random: the bench measures bytes moved, not model quality.
"""
import argparse, collections, os, sys
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--layers", type=int, default=4)
ap.add_argument("--tp", type=int, default=2)
ap.add_argument("--pp", type=int, default=2)
a = ap.parse_args()

H, NH, NG, D, F, V = 2048, 32, 8, 64, 5632, 128256
TP, PP, L = a.tp, a.pp, a.layers
sys.path.insert(0, os.path.dirname(__file__))
from fixturelib import bench_weights, install_megatron_stub  # noqa: E402

install_megatron_stub()
rnd = bench_weights(torch.bfloat16)


args = argparse.Namespace(num_layers=L, hidden_size=H, ffn_hidden_size=F, num_attention_heads=NH, num_query_groups=NG,
                          group_query_attention=True, kv_channels=D, swiglu=True, normalization="RMSNorm",
                          position_embedding_type="rope", rotary_base=500000, untie_embeddings_and_output_weights=True,
                          padded_vocab_size=V, vocab_size=V, make_vocab_size_divisible_by=128, tensor_model_parallel_size=TP,
                          pipeline_model_parallel_size=PP, layernorm_epsilon=1e-5, bf16=True, params_dtype=torch.bfloat16)
per = L // PP
it = os.path.join(a.out, "iter_0000001")
for p in range(PP):
    for r in range(TP):
        m = collections.OrderedDict()
        if p == 0:
            m["embedding.word_embeddings.weight"] = rnd(V // TP, H)
        for i in range(per):
            k = f"decoder.layers.{i}."
            m[k + "input_layernorm.weight"] = rnd(H)
            m[k + "self_attention.linear_proj.weight"] = rnd(H, NH * D // TP)
            m[k + "self_attention.linear_proj._extra_state"] = None
            m[k + "self_attention.linear_qkv.weight"] = rnd((NH + 2 * NG) * D // TP, H)
            m[k + "self_attention.linear_qkv._extra_state"] = None
            m[k + "pre_mlp_layernorm.weight"] = rnd(H)
            m[k + "mlp.linear_fc1.weight"] = rnd(2 * F // TP, H)
            m[k + "mlp.linear_fc1._extra_state"] = None
            m[k + "mlp.linear_fc2.weight"] = rnd(H, F // TP)
            m[k + "mlp.linear_fc2._extra_state"] = None
        if p == PP - 1:
            m["decoder.final_layernorm.weight"] = rnd(H)
            m["output_layer.weight"] = rnd(V // TP, H)
            m["output_layer._extra_state"] = None
        d = os.path.join(it, f"mp_rank_{r:02d}" + (f"_{p:03d}" if PP > 1 else ""))
        os.makedirs(d, exist_ok=True)
        torch.save({"args": args, "checkpoint_version": 3.0, "iteration": 1, "model": m}, os.path.join(d, "model_optim_rng.pt"))
with open(os.path.join(a.out, "latest_checkpointed_iteration.txt"), "w") as f:
    f.write("1")
