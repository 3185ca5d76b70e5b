#!/usr/bin/python3
"""Builds the many-expert MoE benchmark checkpoint: a Megatron-Core Qwen2-MoE-style GPTModel (local spec,
SequentialMLP experts, gated shared expert) saved in the legacy format at TP 1 x EP 4, with random bf16 weights.

  /usr/bin/python3 scripts/bench_moe_checkpoint.py --out DIR [--layers 2] [--experts 64] [--ep 4]

hidden 2048, 16 heads x 128 (MHA), 64 experts of FFN 1408 (top 8), shared expert FFN 5632 with its gate, vocab 32000,
untied head: Qwen1.5-MoE-A2.7B's widths with Mixtral's vocabulary. As Megatron-Core writes it, each EP rank's file
mp_rank_00_EEE holds ALL the dense weights (embedding, attention, norms, router, shared expert) and its E/EP experts
under local indices 0..E/EP-1. 2 layers at EP 4 is about 4.1 GB on disk (1.9 GB of it the four dense copies). The
weights are random: the bench measures bytes moved, not model quality.
"""
import argparse, collections, os, sys
import torch

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--experts", type=int, default=64)
ap.add_argument("--ep", type=int, default=4)
a = ap.parse_args()

H, NH, D, FE, FS, V, TOPK = 2048, 16, 128, 1408, 5632, 32000, 8
E, EP, L = a.experts, a.ep, a.layers
assert E % EP == 0, "experts must divide by EP"
sys.path.insert(0, os.path.dirname(__file__))
from fixturelib import bench_weights, install_megatron_stub  # noqa: E402

install_megatron_stub()
rnd = bench_weights(torch.bfloat16)


args = argparse.Namespace(num_layers=L, hidden_size=H, ffn_hidden_size=FS, num_attention_heads=NH, num_query_groups=NH,
                          group_query_attention=False, kv_channels=D, swiglu=True, normalization="RMSNorm",
                          position_embedding_type="rope", rotary_base=1000000, untie_embeddings_and_output_weights=True,
                          add_qkv_bias=True, padded_vocab_size=V, vocab_size=V, make_vocab_size_divisible_by=128,
                          tensor_model_parallel_size=1, pipeline_model_parallel_size=1, expert_model_parallel_size=EP,
                          expert_tensor_parallel_size=1, num_experts=E, moe_router_topk=TOPK, moe_ffn_hidden_size=FE,
                          moe_shared_expert_intermediate_size=FS, moe_shared_expert_gate=True, moe_layer_freq=1,
                          moe_router_pre_softmax=True, moe_grouped_gemm=False, layernorm_epsilon=1e-6, bf16=True,
                          params_dtype=torch.bfloat16)
# The dense weights once (every EP file carries the same copy), then each rank's experts.
dense = collections.OrderedDict()
dense["embedding.word_embeddings.weight"] = rnd(V, H)
for i in range(L):
    k = f"decoder.layers.{i}."
    dense[k + "input_layernorm.weight"] = rnd(H)
    dense[k + "self_attention.linear_proj.weight"] = rnd(H, NH * D)
    dense[k + "self_attention.linear_proj._extra_state"] = None
    dense[k + "self_attention.linear_qkv.weight"] = rnd(3 * NH * D, H)
    dense[k + "self_attention.linear_qkv.bias"] = rnd(3 * NH * D)
    dense[k + "self_attention.linear_qkv._extra_state"] = None
    dense[k + "pre_mlp_layernorm.weight"] = rnd(H)
    dense[k + "mlp.router.weight"] = rnd(E, H)
    dense[k + "mlp.shared_experts.linear_fc1.weight"] = rnd(2 * FS, H)
    dense[k + "mlp.shared_experts.linear_fc1._extra_state"] = None
    dense[k + "mlp.shared_experts.linear_fc2.weight"] = rnd(H, FS)
    dense[k + "mlp.shared_experts.linear_fc2._extra_state"] = None
    dense[k + "mlp.shared_experts.gate_weight"] = rnd(1, H)
dense["decoder.final_layernorm.weight"] = rnd(H)
dense["output_layer.weight"] = rnd(V, H)
dense["output_layer._extra_state"] = None

it = os.path.join(a.out, "iter_0000001")
per = E // EP
for ep in range(EP):
    m = collections.OrderedDict()
    for name, t in dense.items():
        m[name] = t
        if name.endswith("mlp.router.weight"):  # experts follow the router in MoELayer's registration order
            k = name[: -len("mlp.router.weight")]
            for j in range(per):
                e = f"{k}mlp.experts.local_experts.{j}."
                m[e + "linear_fc1.weight"] = rnd(2 * FE, H)
                m[e + "linear_fc1._extra_state"] = None
                m[e + "linear_fc2.weight"] = rnd(H, FE)
                m[e + "linear_fc2._extra_state"] = None
    d = os.path.join(it, f"mp_rank_00_{ep:03d}")
    os.makedirs(d, exist_ok=True)
    torch.save({"args": args, "checkpoint_version": 3.0, "iteration": 1, "model": m}, os.path.join(d, "model_optim_rng.pt"))
with open(os.path.join(a.out, "latest_checkpointed_iteration.txt"), "w") as f:
    f.write("1")
