#!/usr/bin/python3
"""make_fixtures.py - build every test fixture of megahub (tiny OpenBA Megatron checkpoints, expected HF tensors,
reference logits, hostile and legacy pickles, tokenizer) deterministically.

Run:   /usr/bin/python3 scripts/make_fixtures.py [--out fixtures] [--all-expected]
       (Debian's interpreter: it has torch 1.13, numpy, sentencepiece; `spm_train`/`spm_encode` must be on PATH.)
       Reads fixtures/corpus/{train,heldout}.txt (made once by scripts/make_corpus.sh and committed), trains the
       tokenizer with scripts/make_tokenizer.sh into OUT/tokenizer, then writes everything else under OUT and
       OUT/MANIFEST.json.  scripts/check_fixtures.py reruns this into a temp dir and compares.

Why:   megahub converts OpenBA Megatron checkpoints to HF layout without Python.  Its tests need checkpoints
       written EXACTLY the way OpenBA's Megatron fork writes them (torch.save zip, nn.Module state_dicts with
       `_metadata`, argparse.Namespace args with a torch dtype and a megatron enum, cuda:N storage locations,
       optimizer/scheduler/RNG state with numpy globals), at several TP sizes and dtypes, plus ground truth computed
       here in torch independently of the TypeScript code.  Layout facts: docs/openba-format.md §1, §2.3, §2.4, §5, §8.

Model dims (main lineage): h=64, n=12 heads, d=8 (P=n*d=96 != h), SwiGLU F=132, 2 encoder + 3 decoder layers,
true vocab = sp_size + 103 = 1103, padded to a multiple of 128*TP (1152 / 1280 / 1152 / 1536 for TP 1/2/3/4).
One set of global fp32 weights (torch.Generator seeded) is cast to each dtype and split per §1.4.

Outputs (under OUT):
  tokenizer/      spiece.model/.vocab (spm_train), heldout.ids.txt (spm_encode ids of corpus/heldout.txt),
                  openba-special-ids.json (pad/eos/unk, <extra_id_k> = sp+99-k, <R><S><X> = sp+100..102)
  megatron/<dtype>-tp<N>/  fp16 & bf16 at TP 1-4, fp32 at TP 1: latest_checkpointed_iteration.txt ("2000", no
                  newline), iter_0002000/mp_rank_0R/model_optim_rng.pt, expected-hf.json (dims + name/dtype/shape/
                  sha256 of every HF tensor, in HF order)
  megatron/shared-views-tp1/   fp16 TP1 with tensors as strided/offset views into shared storages
  megatron/pruned-uneven-tp2/  prune_model output: uneven per-rank heads/FFN, hidden 48, decoder layer 1 dropped,
                  stale args, iteration 1, rank{0,1}.pt mask files next to the tracker
  megatron/release-tp1/        tracker "release", a different small shape; the only committed expected-hf.safetensors
  megatron/pp2/                PP=2 (mp_rank_00_000, mp_rank_00_001): must be refused
  reference/      <name>.safetensors (input_ids, attention_mask, decoder_input_ids, logits) and greedy-<name>.json
                  for fp32-tp1, fp16-tp2, bf16-tp1 (scripts/openba_reference.py)
  hostile/        torch zips whose pickle REDUCEs os/posix.system or builtins/__builtin__.eval (never run here)
  legacy/         legacy-stream.pt (pre-1.6 stream), legacy-tar.pt (pre-0.4 tar), expected.safetensors
  MANIFEST.json   path, size, sha256 of every file above (and corpus/)
"""
import argparse
import io
import json
import math
import os
import pickle
import pickletools
import random
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections import OrderedDict

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fixturelib as F  # noqa: E402
import openba_reference as REF  # noqa: E402
sys.path.insert(0, os.path.join(HERE, "fixtures"))
import gpt as GPT  # noqa: E402  (Megatron-Core GPT fixtures, fixtures/gpt/)
import moe as MOE  # noqa: E402  (Megatron-Core mixture-of-experts fixtures, fixtures/moe/)

ModelType = F.install_megatron_stub()

SEED = 1234
ITERATION = 2000
MAIN = dict(h=64, n=12, d=8, f=132, enc=2, dec=3)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
SPECIAL_COUNT = 103  # 100 sentinels + <R> <S> <X>

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


# ================================================================================================================
# small utilities
# ================================================================================================================
def padded_vocab(true_v, tp, divisible_by=128):
    m = divisible_by * tp
    return ((true_v + m - 1) // m) * m


def inv_freq(d):
    # RotaryEmbedding.__init__ (rotary_embedding_torch.py): fp32, then .half()/.bfloat16() by Float16Module
    return 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))


def write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


# Fake "cuda:N" storage locations.  Megatron saves GPU tensors, so the persistent ids in data.pkl name 'cuda:0'..;
# we tag chosen storages (by data_ptr) through torch's own location-tagger registry.  Loading needs
# map_location='cpu', exactly as for real checkpoints on a CPU machine.
_CUDA_TAGS = {}


def _fake_cuda_tagger(storage):
    try:
        return _CUDA_TAGS.get(storage.data_ptr())
    except Exception:
        return None


torch.serialization.register_package(1, _fake_cuda_tagger, lambda storage, location: None)


def tag_cuda(obj, device):
    """Tag every tensor storage in a nested structure as living on cuda:<device>."""
    if torch.is_tensor(obj):
        _CUDA_TAGS[obj.storage().data_ptr()] = f"cuda:{device}"
    elif isinstance(obj, dict):
        for v in obj.values():
            tag_cuda(v, device)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            tag_cuda(v, device)


def torch_save(obj, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(obj, path)
    _CUDA_TAGS.clear()


# ================================================================================================================
# global weights (Megatron names, global shapes), in module-registration order
# ================================================================================================================
def layer_names(stack, i):
    p = f"layers.{i}."
    names = [p + "input_layernorm.weight", p + "input_layernorm.bias",
             p + "self_attention.query_key_value.weight", p + "self_attention.query_key_value.bias",
             p + "self_attention.rotary_embed.inv_freq",
             p + "self_attention.dense.weight", p + "self_attention.dense.bias",
             p + "post_attention_layernorm.weight", p + "post_attention_layernorm.bias"]
    if stack == "decoder":
        names += [p + "inter_attention.query.weight", p + "inter_attention.query.bias",
                  p + "inter_attention.key_value.weight", p + "inter_attention.key_value.bias",
                  p + "inter_attention.dense.weight", p + "inter_attention.dense.bias",
                  p + "post_inter_attention_layernorm.weight", p + "post_inter_attention_layernorm.bias"]
    names += [p + "mlp.w1.weight", p + "mlp.w2.weight", p + "mlp.w3.weight"]
    return names


MATRIX_STD = 0.1    # ~0.8/sqrt(h) for h=64 (0.02 is Megatron's init for h in the thousands; with 0.02 at h=64 the
EMBED_STD = 0.05    # blocks barely touch the residual stream and greedy decoding just repeats the start token)


def make_global_weights(seed, h, n, d, f, enc, dec, vocab_rows):
    """fp32 weights: matrices N(0, 0.1) (output projections 0.1/sqrt(2L) like Megatron's scaled init),
    embedding N(0, 0.05), LayerNorm weight 1 + N(0, 0.05), every bias N(0, 0.02) (non-zero), embedding and
    lm_head.bias over vocab_rows rows (padding rows random, as after real training)."""
    g = torch.Generator().manual_seed(seed)

    def rn(*shape, std):
        return torch.randn(*shape, generator=g, dtype=torch.float32) * std

    P = n * d
    ms = MATRIX_STD
    out_std = ms / math.sqrt(2 * (enc + dec))
    W = OrderedDict()
    W["embedding.word_embeddings.weight"] = rn(vocab_rows, h, std=EMBED_STD)
    for stack, L in (("encoder", enc), ("decoder", dec)):
        for i in range(L):
            for name in layer_names(stack, i):
                key = f"{stack}.{name}"
                if name.endswith("layernorm.weight"):
                    W[key] = 1.0 + rn(h, std=0.05)
                elif name.endswith("layernorm.bias"):
                    W[key] = rn(h, std=0.02)
                elif name.endswith("inv_freq"):
                    W[key] = inv_freq(d)
                elif name.endswith("query_key_value.weight"):
                    W[key] = rn(3 * P, h, std=ms)
                elif name.endswith("query_key_value.bias"):
                    W[key] = rn(3 * P, std=0.02)
                elif name.endswith("query.weight"):
                    W[key] = rn(P, h, std=ms)
                elif name.endswith("query.bias"):
                    W[key] = rn(P, std=0.02)
                elif name.endswith("key_value.weight"):
                    W[key] = rn(2 * P, h, std=ms)
                elif name.endswith("key_value.bias"):
                    W[key] = rn(2 * P, std=0.02)
                elif name.endswith("dense.weight"):
                    W[key] = rn(h, P, std=out_std)
                elif name.endswith("dense.bias"):
                    W[key] = rn(h, std=0.02)
                elif name.endswith(("w1.weight", "w3.weight")):
                    W[key] = rn(f, h, std=ms)
                elif name.endswith("w2.weight"):
                    W[key] = rn(h, f, std=out_std)
                else:
                    raise AssertionError(name)
        W[f"{stack}.final_layernorm.weight"] = 1.0 + rn(h, std=0.05)
        W[f"{stack}.final_layernorm.bias"] = rn(h, std=0.02)
    W["lm_head.bias"] = rn(vocab_rows, std=0.02)
    return W


# §1.4 TP kinds
COLUMN = ("self_attention.query_key_value.weight", "self_attention.query_key_value.bias",
          "inter_attention.query.weight", "inter_attention.query.bias",
          "inter_attention.key_value.weight", "inter_attention.key_value.bias",
          "mlp.w1.weight", "mlp.w3.weight")
ROW = ("self_attention.dense.weight", "inter_attention.dense.weight", "mlp.w2.weight")


def split_dim(name):
    if name.endswith(COLUMN) or name in ("embedding.word_embeddings.weight", "lm_head.bias"):
        return 0
    if name.endswith(ROW):
        return 1
    return None  # replicated


def shard_weights(W, dtype, tp, padded_v):
    """Global fp32 weights -> list (per TP rank) of OrderedDict name -> tensor (own storage, contiguous)."""
    ranks = [OrderedDict() for _ in range(tp)]
    for name, t in W.items():
        if name in ("embedding.word_embeddings.weight", "lm_head.bias"):
            t = t[:padded_v]
        t = t.to(dtype)
        dim = split_dim(name)
        for r in range(tp):
            if dim is None:
                ranks[r][name] = t.clone()
            else:
                assert t.shape[dim] % tp == 0, (name, t.shape, tp)
                ranks[r][name] = t.chunk(tp, dim)[r].clone(memory_format=torch.contiguous_format)
    return ranks


# ================================================================================================================
# nn.Module skeletons mirroring OpenBA's Megatron modules, so that state_dict() gives the real key order and the
# real `_metadata` attribute (an OrderedDict of {'version': 1} per module path) on every OrderedDict.
# ================================================================================================================
class Module(torch.nn.Module):
    pass


def _p(t):
    return torch.nn.Parameter(t, requires_grad=t.is_floating_point())


def linear(w, b=None):
    m = Module()
    m.weight = _p(w)
    if b is not None:
        m.bias = _p(b)
    else:
        m.register_parameter("bias", None)  # ColumnParallelLinear(bias=False)
    return m


def layernorm(w, b):
    m = Module()
    m.weight = _p(w)
    m.bias = _p(b)
    return m


def core_attention():
    m = Module()
    m.scale_mask_softmax = Module()  # FusedScaleMaskSoftmax: no parameters
    m.attention_dropout = torch.nn.Dropout(0.1)
    return m


def build_stack(flat, stack):
    """flat: OrderedDict 'layers.{i}.…' / 'final_layernorm.*' -> tensor.  Returns a ParallelTransformer-like module."""
    g = lambda k: flat[k]  # noqa: E731
    n_layers = len({k.split(".")[1] for k in flat if k.startswith("layers.")})
    layers = torch.nn.ModuleList()
    for i in range(n_layers):
        p = f"layers.{i}."
        L = Module()
        L.input_layernorm = layernorm(g(p + "input_layernorm.weight"), g(p + "input_layernorm.bias"))
        sa = Module()
        sa.query_key_value = linear(g(p + "self_attention.query_key_value.weight"),
                                    g(p + "self_attention.query_key_value.bias"))
        rot = Module()
        rot.register_buffer("inv_freq", g(p + "self_attention.rotary_embed.inv_freq"))
        sa.rotary_embed = rot
        sa.core_attention = core_attention()
        sa.dense = linear(g(p + "self_attention.dense.weight"), g(p + "self_attention.dense.bias"))
        L.self_attention = sa
        L.post_attention_layernorm = layernorm(g(p + "post_attention_layernorm.weight"),
                                               g(p + "post_attention_layernorm.bias"))
        if stack == "decoder":
            ia = Module()
            ia.query = linear(g(p + "inter_attention.query.weight"), g(p + "inter_attention.query.bias"))
            ia.key_value = linear(g(p + "inter_attention.key_value.weight"), g(p + "inter_attention.key_value.bias"))
            ia.core_attention = core_attention()
            ia.dense = linear(g(p + "inter_attention.dense.weight"), g(p + "inter_attention.dense.bias"))
            L.inter_attention = ia
            L.post_inter_attention_layernorm = layernorm(g(p + "post_inter_attention_layernorm.weight"),
                                                         g(p + "post_inter_attention_layernorm.bias"))
        mlp = Module()
        mlp.w1 = linear(g(p + "mlp.w1.weight"))
        mlp.w2 = linear(g(p + "mlp.w2.weight"))
        mlp.w3 = linear(g(p + "mlp.w3.weight"))
        L.mlp = mlp
        layers.append(L)
    m = Module()
    m.layers = layers
    m.final_layernorm = layernorm(g("final_layernorm.weight"), g("final_layernorm.bias"))
    return m


def model_state_dict(rank_w, parts=("embedding", "encoder", "decoder", "lm_head")):
    """rank_w: OrderedDict with 'embedding.…', 'encoder.…', 'decoder.…', 'lm_head.bias'.
    Returns T5Model.state_dict_for_save_checkpoint(): plain dicts above the module state_dicts (§1.3)."""
    lm = {}
    if "embedding" in parts:
        emb = Module()
        emb.weight = _p(rank_w["embedding.word_embeddings.weight"])
        lm["embedding"] = {"word_embeddings": emb.state_dict()}
    for stack in ("encoder", "decoder"):
        if stack in parts:
            flat = OrderedDict((k[len(stack) + 1:], v) for k, v in rank_w.items() if k.startswith(stack + "."))
            m = build_stack(flat, stack)
            sd = m.state_dict()
            assert list(sd.keys()) == list(flat.keys()), (stack, list(sd.keys())[:5], list(flat.keys())[:5])
            lm[stack] = sd
    model = {"language_model": lm}
    if "lm_head" in parts:
        head = Module()
        head.bias = _p(rank_w["lm_head.bias"])
        model["lm_head"] = head.state_dict()
    return model


# ================================================================================================================
# args, optimizer, scheduler, RNG
# ================================================================================================================
def make_args(**over):
    with open(os.path.join(HERE, "openba_megatron_args.json"), encoding="utf-8") as f:
        tmpl = json.load(f, object_pairs_hook=OrderedDict)
    ns = argparse.Namespace()
    for k, v in tmpl.items():
        setattr(ns, k, v)
    late = OrderedDict()
    for k, v in over.items():
        if hasattr(ns, k):
            setattr(ns, k, v)
        else:
            late[k] = v
    dt = torch.float16 if ns.fp16 else torch.bfloat16 if ns.bf16 else torch.float32
    ns.params_dtype = dt
    # set later during Megatron start-up, in this order: tokenizer, pretrain(), training loop
    ns.padded_vocab_size = late.pop("padded_vocab_size")
    ns.model_type = ModelType.encoder_and_decoder
    it = late.pop("iteration", None)
    if it is not None:
        ns.iteration = it
        ns.curr_iteration = it
    for k, v in late.items():
        setattr(ns, k, v)
    return ns


def main_args(tp, dtype_name, padded_v, iteration, rank, **extra):
    a = dict(MAIN)
    over = dict(num_layers=a["enc"], encoder_num_layers=a["enc"], decoder_num_layers=a["dec"],
                hidden_size=a["h"], ffn_hidden_size=a["f"], num_attention_heads=a["n"], kv_channels=a["d"],
                tensor_model_parallel_size=tp, pipeline_model_parallel_size=1, world_size=tp, rank=rank,
                data_parallel_size=1, fp16=dtype_name == "fp16", bf16=dtype_name == "bf16",
                encoder_seq_length=64, decoder_seq_length=32, seq_length=64, max_position_embeddings=64,
                make_vocab_size_divisible_by=128, consumed_train_samples=iteration * 16,
                padded_vocab_size=padded_v, iteration=iteration, seed=SEED)
    over.update(extra)
    return make_args(**over)


def optimizer_state(args, iteration, device):
    """DistributedOptimizer.state_dict(): param groups without 'params' (apex FusedAdam + Megatron multipliers)
    and the grad scaler for fp16 (its scale is a 0-dim fp32 CUDA tensor)."""
    groups = []
    for wd_mult in (1.0, 0.0):
        groups.append({"lr": 1e-4 * 0.5 * (1 + math.cos(math.pi * min(iteration, 2000) / 2000)) + 1e-5,
                       "bias_correction": True, "betas": (0.9, 0.95), "eps": 1e-08,
                       "weight_decay": 0.1 * wd_mult, "amsgrad": False, "step": iteration,
                       "wd_mult": wd_mult, "lr_mult": 1.0})
    st = {"optimizer": {"param_groups": groups}}
    if args.fp16:
        scale = torch.tensor(4096.0, dtype=torch.float32)
        tag_cuda(scale, device)
        st["grad_scaler"] = {"scale": scale, "growth_tracker": 17, "hysteresis_tracker": 2}
    return st


def scheduler_state(iteration, gbs=16):
    return {"max_lr": 1e-4, "lr_warmup_steps": 100 * gbs, "num_steps": iteration * gbs,
            "lr_decay_style": "cosine", "lr_decay_steps": 2000 * gbs, "min_lr": 1e-5,
            "start_wd": 0.1, "end_wd": 0.1, "wd_incr_style": "constant", "wd_incr_steps": 2000 * gbs}


def rng_state(seed, tp_rank, iteration):
    """checkpointing.get_rng_state(): a list with one dict.  numpy's state pickles numpy globals
    (numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype) - inert data a reader must tolerate."""
    py = random.Random(seed)
    for _ in range(iteration % 97):
        py.random()
    npr = np.random.RandomState(seed)
    npr.random_sample(iteration % 89)
    tg = torch.Generator().manual_seed(seed)
    torch.rand(iteration % 83, generator=tg)

    def cuda_state(s):  # CUDA generator state: seed and philox offset, 2 x int64 -> 16 uint8
        return torch.tensor(list(struct.pack("<qq", s, 4 * iteration)), dtype=torch.uint8)

    return [{"random_rng_state": py.getstate(),
             "np_rng_state": npr.get_state(),
             "torch_rng_state": tg.get_state(),
             "cuda_rng_state": cuda_state(seed),
             "rng_tracker_states": {"model-parallel-rng": cuda_state(seed + 2718 + tp_rank)}}]


def full_checkpoint(args, iteration, model, tp_rank, with_optim=True, with_rng=True):
    """save_checkpoint()'s dict, in its key order."""
    tag_cuda(model, tp_rank)
    sd = {"args": args, "checkpoint_version": 3.0, "iteration": iteration, "model": model}
    if with_optim:
        sd["optimizer"] = optimizer_state(args, iteration, tp_rank)
        sd["opt_param_scheduler"] = scheduler_state(iteration)
    if with_rng:
        sd["rng_state"] = rng_state(args.seed, tp_rank, iteration)
    return sd


# ================================================================================================================
# expected HF tensors: computed from the SAVED shards (torch.load), per the HF converter (§3), dtype kept
# ================================================================================================================
HF_MAP = [("input_layernorm", "input_layernorm"), ("self_attention.query_key_value", "self_attn.qkv"),
          ("self_attention.dense", "self_attn.o"), ("post_attention_layernorm", "post_attn_layernorm"),
          ("inter_attention.query", "inter_attn.q"), ("inter_attention.key_value", "inter_attn.kv"),
          ("inter_attention.dense", "inter_attn.o"),
          ("post_inter_attention_layernorm", "post_inter_attn_layernorm")]


def load_ranks(rank_files):
    return [F.torch_load(p)["model"] for p in rank_files]


def merge_to_hf(models):
    """models: list over TP ranks of the loaded `model` sub-dicts.  Returns OrderedDict of HF tensors (§2.3).
    Layer counts come from the keys, shard sizes from the tensors (uneven pruned shards work)."""
    cat = lambda ts, dim: torch.cat([t.contiguous() for t in ts], dim)  # noqa: E731
    hf = OrderedDict()
    emb = cat([m["language_model"]["embedding"]["word_embeddings"]["weight"] for m in models], 0)
    hf["shared_embedding.weight"] = emb
    for stack in ("encoder", "decoder"):
        flats = [m["language_model"][stack] for m in models]
        n = len({k.split(".")[1] for k in flats[0] if k.startswith("layers.")})
        for i in range(n):
            p = f"layers.{i}."
            q = f"{stack}.block.{i}."
            for mg, h in HF_MAP:
                if p + mg + ".weight" not in flats[0]:
                    continue
                for kind in ("weight", "bias"):
                    key = p + mg + "." + kind
                    if key.endswith(COLUMN):
                        t = cat([fl[key] for fl in flats], 0)
                    elif key.endswith(ROW):
                        t = cat([fl[key] for fl in flats], 1)
                    else:
                        t = flats[0][key].contiguous().clone()
                    hf[q + h + "." + kind] = t
            w1 = cat([fl[p + "mlp.w1.weight"] for fl in flats], 0)
            w3 = cat([fl[p + "mlp.w3.weight"] for fl in flats], 0)
            hf[q + "mlp.fc_in.weight"] = torch.cat([w1, w3], 0)
            hf[q + "mlp.fc_out.weight"] = cat([fl[p + "mlp.w2.weight"] for fl in flats], 1)
        hf[f"{stack}.final_layernorm.weight"] = flats[0]["final_layernorm.weight"].contiguous().clone()
        hf[f"{stack}.final_layernorm.bias"] = flats[0]["final_layernorm.bias"].contiguous().clone()
    hf["lm_head.weight"] = emb.clone()
    hf["lm_head.bias"] = cat([m["lm_head"]["bias"] for m in models], 0)
    return hf


def hf_from_global(W, dtype, padded_v):
    """The same HF tensors computed directly from the global weights (cross-check of merge_to_hf)."""
    hf = OrderedDict()
    hf["shared_embedding.weight"] = W["embedding.word_embeddings.weight"][:padded_v].to(dtype)
    for stack in ("encoder", "decoder"):
        n = len({k.split(".")[2] for k in W if k.startswith(stack + ".layers.")})
        for i in range(n):
            p, q = f"{stack}.layers.{i}.", f"{stack}.block.{i}."
            for mg, h in HF_MAP:
                if p + mg + ".weight" in W:
                    hf[q + h + ".weight"] = W[p + mg + ".weight"].to(dtype)
                    hf[q + h + ".bias"] = W[p + mg + ".bias"].to(dtype)
            hf[q + "mlp.fc_in.weight"] = torch.cat([W[p + "mlp.w1.weight"], W[p + "mlp.w3.weight"]], 0).to(dtype)
            hf[q + "mlp.fc_out.weight"] = W[p + "mlp.w2.weight"].to(dtype)
        hf[f"{stack}.final_layernorm.weight"] = W[f"{stack}.final_layernorm.weight"].to(dtype)
        hf[f"{stack}.final_layernorm.bias"] = W[f"{stack}.final_layernorm.bias"].to(dtype)
    hf["lm_head.weight"] = hf["shared_embedding.weight"].clone()
    hf["lm_head.bias"] = W["lm_head.bias"][:padded_v].to(dtype)
    return hf


def assert_same(a, b, what):
    assert list(a.keys()) == list(b.keys()), (what, [k for k in a if k not in b], [k for k in b if k not in a])
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]), (what, k)


def write_expected(root, hf, dims, full):
    tensors = [{"name": k, "dtype": F.ST_DTYPE[v.dtype], "shape": list(v.shape), "sha256": F.tensor_sha256(v)}
               for k, v in hf.items()]
    st = None
    if full:
        st = "expected-hf.safetensors"
        F.write_safetensors(os.path.join(root, st), hf, {"format": "pt"})
    write_json(os.path.join(root, "expected-hf.json"), {"dims": dims, "safetensors": st, "tensors": tensors})


# ================================================================================================================
# checkpoint writers
# ================================================================================================================
def write_tracker(root, value):
    write_text(os.path.join(root, "latest_checkpointed_iteration.txt"), str(value))  # no newline, like Megatron


def iter_dir(iteration):
    return "iter_{:07d}".format(iteration)


def write_main_checkpoint(out, name, W, dtype_name, tp, true_v, full_expected, shared_views=False):
    dtype = DTYPES[dtype_name]
    pv = padded_vocab(true_v, tp)
    root = os.path.join(out, "megatron", name)
    shards = shard_weights(W, dtype, tp, pv)
    files = []
    for r in range(tp):
        rank_w = make_shared_views(shards[r]) if shared_views else shards[r]
        model = model_state_dict(rank_w)
        if shared_views:
            alias_inv_freq(model)
        args = main_args(tp, dtype_name, pv, ITERATION, r)
        path = os.path.join(root, iter_dir(ITERATION), f"mp_rank_{r:02d}", "model_optim_rng.pt")
        torch_save(full_checkpoint(args, ITERATION, model, r), path)
        files.append(path)
    write_tracker(root, ITERATION)
    hf = merge_to_hf(load_ranks(files))
    assert_same(hf, hf_from_global(W, dtype, pv), name)
    dims = dict(hidden=MAIN["h"], heads=MAIN["n"], kv_channels=MAIN["d"], ffn=MAIN["f"],
                encoder_layers=MAIN["enc"], decoder_layers=MAIN["dec"], padded_vocab=pv, true_vocab=true_v,
                tp=tp, pp=1, iteration=ITERATION, release=False, dtype=str(dtype).replace("torch.", ""),
                args_stale=False, shared_views=shared_views)
    write_expected(root, hf, dims, full_expected)
    return hf, dims


def make_shared_views(w):
    """The `shared-views` variant: same values, but tensors are views into a few big storages.
    * encoder.* and decoder.*: each stack is ONE flat storage; every tensor is a view at some storage_offset.
      - self/inter `dense.weight` [h, P] are stored TRANSPOSED: a [P, h] block viewed with .t(), i.e. stride (1, h),
        so the tensor is non-contiguous;
      - `mlp.w2.weight` [h, F] is a column slice of an [h, F+5] block (row stride F+5); the 5 gap elements per row
        are NaN so a reader that ignores strides produces NaNs;
    * embedding weight and lm_head.bias share one storage (bias at offset V*h).
    (alias_inv_freq then makes every inv_freq of a stack the very same tensor object.)"""
    out = OrderedDict()
    dt = next(iter(w.values())).dtype
    for stack in ("encoder", "decoder"):
        items = [(k, v) for k, v in w.items() if k.startswith(stack + ".")]
        sizes = []
        for k, v in items:
            if k.endswith("mlp.w2.weight"):
                sizes.append(v.shape[0] * (v.shape[1] + 5))
            else:
                sizes.append(v.numel())
        buf = torch.full((sum(sizes) + 3,), float("nan"), dtype=dt)
        off = 3  # the first tensor already starts at a non-zero offset (3 unused NaN elements before it)
        for (k, v), n in zip(items, sizes):
            region = buf.narrow(0, off, n)
            if k.endswith("dense.weight"):
                blk = region.view(v.shape[1], v.shape[0])
                blk.copy_(v.t())
                t = blk.t()
                assert not t.is_contiguous()
            elif k.endswith("mlp.w2.weight"):
                blk = region.view(v.shape[0], v.shape[1] + 5)
                blk[:, :v.shape[1]].copy_(v)
                t = blk[:, :v.shape[1]]
            else:
                t = region.view(v.shape)
                t.copy_(v)
            assert torch.equal(t, v) and t.storage_offset() == off
            out[k] = t
            off += n
    emb, bias = w["embedding.word_embeddings.weight"], w["lm_head.bias"]
    eb = torch.empty(emb.numel() + bias.numel(), dtype=dt)
    out["embedding.word_embeddings.weight"] = eb[:emb.numel()].view(emb.shape)
    out["embedding.word_embeddings.weight"].copy_(emb)
    out["lm_head.bias"] = eb[emb.numel():]
    out["lm_head.bias"].copy_(bias)
    # restore the original key order
    return OrderedDict((k, out[k]) for k in w)


def alias_inv_freq(model):
    for stack in ("encoder", "decoder"):
        sd = model["language_model"][stack]
        keys = [k for k in sd if k.endswith("rotary_embed.inv_freq")]
        for k in keys[1:]:
            sd[k] = sd[keys[0]]  # same object: the pickle memoizes it (BINGET of the whole tensor)


# ---------------------------------------------------------------------------------------------------------------
# pruned lineage (§5): uneven TP shards, hidden pruned, one decoder layer dropped, STALE args
# ---------------------------------------------------------------------------------------------------------------
PRUNE = dict(hidden_remain=48, heads_remain=8, ffn_remain=80, drop_encoder=[], drop_decoder=[1])
PRUNE_SEED = 1252  # --seed of the prune run; chosen so every kept layer splits its 8 heads unevenly (5/3, 3/5, 6/2, 5/3)


def random_mask(rng, size, keep):
    idx = torch.tensor(rng.sample(range(size), keep), dtype=torch.long)  # utils.get_random_mask
    m = torch.zeros(size, dtype=torch.bool)
    m[idx] = True
    return m


def write_pruned(out, W, true_v, full_expected):
    name, tp, dtype = "pruned-uneven-tp2", 2, torch.float16
    h, n, d, f, E, D = (MAIN[k] for k in ("h", "n", "d", "f", "enc", "dec"))
    pv = padded_vocab(true_v, tp)
    root = os.path.join(out, "megatron", name)
    # masks drawn like T5Model.init_prune_zs: Python random seeded with --seed, hidden mask first, then per layer
    # (encoder 0..E-1 then decoder) a head mask and an intermediate mask; global masks, sliced per TP rank.
    rng = random.Random(PRUNE_SEED)
    hidden_mask = random_mask(rng, h, PRUNE["hidden_remain"])
    hidden_index = torch.where(hidden_mask)[0]
    head_masks, inter_masks = [], []
    for _ in range(E + D):
        head_masks.append(random_mask(rng, n, PRUNE["heads_remain"]))
        inter_masks.append(random_mask(rng, f, PRUNE["ffn_remain"]))
    shards = shard_weights(W, dtype, tp, pv)
    per_rank_counts = []
    files = []
    for r in range(tp):
        sw = shards[r]
        hm = [m.chunk(tp)[r] for m in head_masks]
        im = [m.chunk(tp)[r] for m in inter_masks]
        kept = [("encoder", i, i) for i in range(E) if i not in PRUNE["drop_encoder"]] + \
               [("decoder", i, E + i) for i in range(D) if i not in PRUNE["drop_decoder"]]
        per_rank_counts.append({  # per KEPT layer (after renumbering), this rank's shard
            "heads": {st: [int(hm[g].sum()) for s_, _, g in kept if s_ == st] for st in ("encoder", "decoder")},
            "ffn": {st: [int(im[g].sum()) for s_, _, g in kept if s_ == st] for st in ("encoder", "decoder")}})
        pr = OrderedDict()
        for k, t in sw.items():
            stack = k.split(".")[0]
            if k == "embedding.word_embeddings.weight":
                pr[k] = t[:, hidden_index].clone()
                continue
            if k == "lm_head.bias":
                pr[k] = t.clone()
                continue
            if k.startswith(stack + ".final_layernorm"):
                pr[k] = t[hidden_index].clone()
                continue
            li = int(k.split(".")[2])
            gl = li if stack == "encoder" else E + li
            heads = torch.where(hm[gl])[0]
            inter = torch.where(im[gl])[0]
            rows = lambda per: (heads[:, None] * per + torch.arange(per)[None]).reshape(-1)  # noqa: E731
            if k.endswith("layernorm.weight") or k.endswith("layernorm.bias") or k.endswith("dense.bias"):
                t = t[hidden_index]
            elif k.endswith("inv_freq"):
                t = t
            elif k.endswith("query_key_value.weight"):
                t = t[rows(3 * d)][:, hidden_index]
            elif k.endswith("query_key_value.bias"):
                t = t[rows(3 * d)]
            elif k.endswith("inter_attention.query.weight"):
                t = t[rows(d)][:, hidden_index]
            elif k.endswith("inter_attention.query.bias"):
                t = t[rows(d)]
            elif k.endswith("key_value.weight"):
                t = t[rows(2 * d)][:, hidden_index]
            elif k.endswith("key_value.bias"):
                t = t[rows(2 * d)]
            elif k.endswith("dense.weight"):
                t = t[hidden_index][:, rows(d)]
            elif k.endswith(("w1.weight", "w3.weight")):
                t = t[inter][:, hidden_index]
            elif k.endswith("w2.weight"):
                t = t[hidden_index][:, inter]
            else:
                raise AssertionError(k)
            pr[k] = t.clone(memory_format=torch.contiguous_format)
        # drop layers and renumber (0-based, counted before dropping)
        final = OrderedDict()
        for k, t in pr.items():
            mt = re.match(r"(encoder|decoder)\.layers\.(\d+)\.(.*)", k)
            if not mt:
                final[k] = t
                continue
            stack, li, rest = mt.group(1), int(mt.group(2)), mt.group(3)
            drop = PRUNE["drop_encoder"] if stack == "encoder" else PRUNE["drop_decoder"]
            if li in drop:
                continue
            final[f"{stack}.layers.{li - sum(1 for x in drop if x < li)}.{rest}"] = t
        # the stale args of the ORIGINAL model, plus the prune fields
        args = main_args(tp, "fp16", pv, 1, r, is_prune=True, finetune=True, seed=PRUNE_SEED,
                         hidden_size_remain=PRUNE["hidden_remain"],
                         ffn_hidden_size_remain=PRUNE["ffn_remain"],
                         num_attention_heads_remain=PRUNE["heads_remain"],
                         drop_encoder_layers=None, drop_decoder_layers=",".join(map(str, PRUNE["drop_decoder"])),
                         load="/data/megatron_ckpt/openba-tiny/tp2", save="/data/megatron_ckpt/openba-tiny/pruned")
        model = model_state_dict(final)
        path = os.path.join(root, iter_dir(1), f"mp_rank_{r:02d}", "model_optim_rng.pt")
        torch_save(full_checkpoint(args, 1, model, r), path)
        files.append(path)
        # init_prune_zs also saves the rank's masks as <save>/rank{r}.pt (next to the tracker file)
        torch_save({"hidden_mask": hidden_mask, "hidden_index": hidden_index, "head_masks": hm,
                    "intermediate_masks": im, "head_indexes": [torch.where(m)[0] for m in hm],
                    "intermediate_indexes": [torch.where(m)[0] for m in im]}, os.path.join(root, f"rank{r}.pt"))
    write_tracker(root, 1)
    hf = merge_to_hf(load_ranks(files))
    # cross-check against pruning the GLOBAL weights with the global masks
    hg = hf_from_global(W, dtype, pv)
    chk = OrderedDict()
    kept_layers = {"encoder": [i for i in range(E) if i not in PRUNE["drop_encoder"]],
                   "decoder": [i for i in range(D) if i not in PRUNE["drop_decoder"]]}
    for k, t in hg.items():
        mt = re.match(r"(encoder|decoder)\.block\.(\d+)\.(.*)", k)
        if not mt:
            chk[k] = t[:, hidden_index] if k.endswith("embedding.weight") or k == "lm_head.weight" else (
                t if k == "lm_head.bias" else t[hidden_index])
            continue
        stack, li, rest = mt.group(1), int(mt.group(2)), mt.group(3)
        if li not in kept_layers[stack]:
            continue
        gl = li if stack == "encoder" else E + li
        heads = torch.where(head_masks[gl])[0]
        inter = torch.where(inter_masks[gl])[0]
        rows = lambda per: (heads[:, None] * per + torch.arange(per)[None]).reshape(-1)  # noqa: E731
        if "layernorm" in rest or rest.endswith("o.bias"):
            t = t[hidden_index]
        elif rest == "self_attn.qkv.weight":
            t = t[rows(3 * d)][:, hidden_index]
        elif rest == "self_attn.qkv.bias":
            t = t[rows(3 * d)]
        elif rest == "inter_attn.q.weight":
            t = t[rows(d)][:, hidden_index]
        elif rest == "inter_attn.q.bias":
            t = t[rows(d)]
        elif rest == "inter_attn.kv.weight":
            t = t[rows(2 * d)][:, hidden_index]
        elif rest == "inter_attn.kv.bias":
            t = t[rows(2 * d)]
        elif rest.endswith("o.weight"):
            t = t[hidden_index][:, rows(d)]
        elif rest == "mlp.fc_in.weight":
            t = torch.cat([t[:f][inter], t[f:][inter]], 0)[:, hidden_index]
        elif rest == "mlp.fc_out.weight":
            t = t[hidden_index][:, inter]
        else:
            raise AssertionError(rest)
        chk[f"{stack}.block.{kept_layers[stack].index(li)}.{rest}"] = t
    assert_same(hf, OrderedDict((k, chk[k].contiguous()) for k in hf), name)
    assert set(hf) == set(chk)
    dims = dict(hidden=PRUNE["hidden_remain"], heads=PRUNE["heads_remain"], kv_channels=d,
                ffn=PRUNE["ffn_remain"], encoder_layers=len(kept_layers["encoder"]),
                decoder_layers=len(kept_layers["decoder"]), padded_vocab=pv, true_vocab=true_v, tp=tp, pp=1,
                iteration=1, release=False, dtype="float16", args_stale=True, shared_views=False,
                per_rank=per_rank_counts,
                stale_args=dict(hidden_size=h, num_attention_heads=n, ffn_hidden_size=f, encoder_num_layers=E,
                                decoder_num_layers=D),
                prune=dict(hidden_index=hidden_index.tolist(), drop_decoder_layers=PRUNE["drop_decoder"]))
    write_expected(root, hf, dims, full_expected)
    return per_rank_counts


# ---------------------------------------------------------------------------------------------------------------
# release (a different, smaller shape) and pp2 (must be refused)
# ---------------------------------------------------------------------------------------------------------------
RELEASE = dict(h=32, n=4, d=16, f=88, enc=1, dec=2)   # P = 64 != h
PP2 = dict(h=16, n=2, d=8, f=32, enc=1, dec=1)


def small_args(cfg, tp, pp, pv, iteration, rank, **extra):
    over = dict(num_layers=cfg["enc"], encoder_num_layers=cfg["enc"], decoder_num_layers=cfg["dec"],
                hidden_size=cfg["h"], ffn_hidden_size=cfg["f"], num_attention_heads=cfg["n"],
                kv_channels=cfg["d"], tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                transformer_pipeline_model_parallel_size=pp, world_size=tp * pp, rank=rank, data_parallel_size=1,
                fp16=True, bf16=False, padded_vocab_size=pv, iteration=iteration, seed=SEED)
    over.update(extra)
    return make_args(**over)


def write_release(out, true_v):
    name = "release-tp1"
    c = RELEASE
    pv = padded_vocab(true_v, 1)
    W = make_global_weights(SEED + 7, c["h"], c["n"], c["d"], c["f"], c["enc"], c["dec"], pv)
    root = os.path.join(out, "megatron", name)
    shard = shard_weights(W, torch.float16, 1, pv)[0]
    model = model_state_dict(shard)
    args = small_args(c, 1, 1, pv, 0, 0, finetune=True)
    path = os.path.join(root, "release", "mp_rank_00", "model_optim_rng.pt")
    # a release checkpoint (as written by conversion tools): args, version, iteration, model - no optimizer / RNG
    torch_save(full_checkpoint(args, 0, model, 0, with_optim=False, with_rng=False), path)
    write_tracker(root, "release")
    hf = merge_to_hf(load_ranks([path]))
    assert_same(hf, hf_from_global(W, torch.float16, pv), name)
    dims = dict(hidden=c["h"], heads=c["n"], kv_channels=c["d"], ffn=c["f"], encoder_layers=c["enc"],
                decoder_layers=c["dec"], padded_vocab=pv, true_vocab=true_v, tp=1, pp=1, iteration=0,
                release=True, dtype="float16", args_stale=False, shared_views=False)
    write_expected(root, hf, dims, True)


def write_pp2(out, true_v):
    name = "pp2"
    c = PP2
    pv = padded_vocab(true_v, 1)
    W = make_global_weights(SEED + 11, c["h"], c["n"], c["d"], c["f"], c["enc"], c["dec"], pv)
    root = os.path.join(out, "megatron", name)
    shard = shard_weights(W, torch.float16, 1, pv)[0]
    # T5 split at pipeline_model_parallel_split_rank=1: stage 0 = embedding + encoder; stage 1 = embedding +
    # decoder + lm_head, plus word_embeddings_for_head (the tied copy held by the last stage).
    stages = [model_state_dict(shard, parts=("embedding", "encoder")),
              model_state_dict(shard, parts=("embedding", "decoder", "lm_head"))]
    head = Module()
    head.weight = _p(shard["embedding.word_embeddings.weight"].clone())
    stages[1]["word_embeddings_for_head"] = head.state_dict()
    for pp_rank, model in enumerate(stages):
        args = small_args(c, 1, 2, pv, ITERATION, pp_rank, pipeline_model_parallel_split_rank=1)
        path = os.path.join(root, iter_dir(ITERATION), f"mp_rank_00_{pp_rank:03d}", "model_optim_rng.pt")
        torch_save(full_checkpoint(args, ITERATION, model, pp_rank), path)
    write_tracker(root, ITERATION)
    write_json(os.path.join(root, "expected-hf.json"),
               {"dims": dict(tp=1, pp=2, iteration=ITERATION, dtype="float16"), "expect_error": "pipeline parallel",
                "safetensors": None, "tensors": []})


# ================================================================================================================
# tokenizer
# ================================================================================================================
def make_tokenizer(out, corpus):
    tok = os.path.join(out, "tokenizer")
    subprocess.run(["sh", os.path.join(HERE, "make_tokenizer.sh"), os.path.join(corpus, "train.txt"), tok],
                   check=True)
    ids = subprocess.run(["spm_encode", "--model", os.path.join(tok, "spiece.model"), "--output_format=id",
                          "--input", os.path.join(corpus, "heldout.txt")], check=True, capture_output=True).stdout
    with open(os.path.join(tok, "heldout.ids.txt"), "wb") as f:
        f.write(ids)
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(tok, "spiece.model"))
    n = sp.get_piece_size()
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    special = OrderedDict([("<pad>", 0), ("</s>", 1), ("<unk>", 2)])
    for k in range(100):
        special[f"<extra_id_{k}>"] = n + 99 - k
    special.update([("<R>", n + 100), ("<S>", n + 101), ("<X>", n + 102)])
    write_json(os.path.join(tok, "openba-special-ids.json"),
               {"sp_size": n, "true_vocab": n + SPECIAL_COUNT, "pad_id": 0, "eos_id": 1, "unk_id": 2,
                "bos_id": None, "decoder_start_id": 0, "special": special})
    return sp, special


SPECIAL_RE = re.compile(r"(<extra_id_\d+>|<R>|<S>|<X>|</s>|<pad>|<unk>)")


def openba_encode(sp, special, text, add_eos=True):
    """OpenBATokenizer-like: split on special tokens, strip the text around them (the slow tokenizer's default),
    sentencepiece-encode the pieces, map the specials to their ids, append </s>."""
    ids = []
    for part in SPECIAL_RE.split(text):
        if part in special:
            ids.append(special[part])
        elif part.strip():
            ids.extend(sp.encode(part.strip()))
    if add_eos:
        ids.append(1)
    return ids


# ================================================================================================================
# reference logits and greedy decoding
# ================================================================================================================
REF_T = 8                 # decoder length
REF_PREFIX = (20, 13, 7)  # encoder prefix lengths -> three different encoder lengths


def reference_batch(sp, special, corpus):
    """Three held-out lines (English, Chinese, English) in the UL2 S-denoising form:
    encoder = <S> prefix <extra_id_0> </s> (right-padded with 0, mask 0), decoder = <pad>=0 <extra_id_0> suffix."""
    with open(os.path.join(corpus, "heldout.txt"), encoding="utf-8") as f:
        lines = [l.strip() for l in f if l.strip()]
    cjk = lambda s: len(re.findall(r"[\u4e00-\u9fff]", s)) / max(1, len(s))  # noqa: E731
    picks = []
    english = lambda s: cjk(s) == 0 and len(re.findall(r"[A-Za-z]{2,}", s)) >= 12  # noqa: E731
    want = [english, lambda s: cjk(s) > 0.3 and len(s) >= 30, english]
    used = set()
    for pred, plen in zip(want, REF_PREFIX):
        for i, l in enumerate(lines):
            if i in used or not pred(l):
                continue
            toks = sp.encode(l)
            if len(toks) >= plen + REF_T:
                picks.append((l, toks, plen))
                used.add(i)
                break
    assert len(picks) == 3
    s0, s1 = special["<S>"], special["<extra_id_0>"]
    enc = [[s0] + toks[:plen] + [s1, 1] for _, toks, plen in picks]
    dec = [([0, s1] + toks[plen:])[:REF_T] for _, toks, plen in picks]
    S = max(len(e) for e in enc)
    input_ids = torch.zeros(3, S, dtype=torch.long)
    mask = torch.zeros(3, S, dtype=torch.long)
    for b, e in enumerate(enc):
        input_ids[b, :len(e)] = torch.tensor(e)
        mask[b, :len(e)] = 1
    return input_ids, mask, torch.tensor(dec, dtype=torch.long), [p[0] for p in picks]


GREEDY_PROMPT = "<S> The license <extra_id_0>"
GREEDY_STEPS = 12


def write_reference(out, name, hf, dims, batch, sp, special):
    input_ids, mask, dec, texts = batch
    lg = REF.logits(hf, input_ids, mask, dec, dims["heads"], dims["kv_channels"])
    assert lg.shape == (3, REF_T, dims["padded_vocab"]) and lg.dtype == torch.float32
    # the padded encoder positions must not influence anything: recompute each row alone, unpadded
    for b in range(3):
        n = int(mask[b].sum())
        one = REF.logits(hf, input_ids[b:b + 1, :n], mask[b:b + 1, :n], dec[b:b + 1], dims["heads"],
                         dims["kv_channels"])
        assert float((one[0] - lg[b]).abs().max()) < 1e-5
    meta = {"format": "pt", "checkpoint": name, "heads": str(dims["heads"]), "kv_channels": str(dims["kv_channels"]),
            "texts": json.dumps(texts, ensure_ascii=False)}
    F.write_safetensors(os.path.join(out, "reference", name + ".safetensors"),
                        {"input_ids": input_ids, "attention_mask": mask, "decoder_input_ids": dec, "logits": lg},
                        meta)
    ids = openba_encode(sp, special, GREEDY_PROMPT)
    gen, margin = REF.greedy(hf, ids, dims["heads"], dims["kv_channels"], GREEDY_STEPS)
    gen_tv, margin_tv = REF.greedy(hf, ids, dims["heads"], dims["kv_channels"], GREEDY_STEPS,
                                   vocab_limit=dims["true_vocab"])
    assert min(margin, margin_tv) > 1e-3, f"greedy top-2 margin too small for a stable fixture: {margin}"
    write_json(os.path.join(out, "reference", f"greedy-{name}.json"),
               {"checkpoint": name, "prompt": GREEDY_PROMPT, "input_ids": ids, "decoder_start_id": 0,
                "steps": GREEDY_STEPS, "generated_ids": gen, "min_top2_margin": round(margin, 6),
                "generated_ids_true_vocab": gen_tv, "min_top2_margin_true_vocab": round(margin_tv, 6),
                "true_vocab": dims["true_vocab"], "padded_vocab": dims["padded_vocab"],
                "note": "fp32 weights and compute, no KV cache, decoder starts with 0, stops after </s>=1; "
                        "generated_ids = argmax over ALL padded-vocab logits (as HF generate does; random padding "
                        "rows can win), generated_ids_true_vocab = argmax over ids < true_vocab only"})
    return float(lg.abs().max()), margin


# ================================================================================================================
# hostile pickles
# ================================================================================================================
PWN_CMD = "echo pwned > /tmp/megahub-pwned"


class _Reduce:
    """An object whose pickle is REDUCE(func, args) - what a malicious checkpoint contains."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _spelling_pickle_module(obj, spelling):
    """A pickle_module for torch.save whose Pickler writes the global `obj` as GLOBAL '<spelling>' (e.g. 'os system'
    or 'builtins eval', the spellings of published exploits; CPython itself writes 'posix system' and, at protocol
    2, '__builtin__ eval')."""
    mod, name = spelling.split(" ")

    class Pickler(pickle._Pickler):
        def save_global(self, o, name_=None):
            if o is obj:
                self.write(pickle.GLOBAL + f"{mod}\n{name}\n".encode())
                self.memoize(o)
                return
            return super().save_global(o, name_)

    return type("SpellingPickle", (), {"Pickler": Pickler, "Unpickler": pickle.Unpickler,
                                       "load": staticmethod(pickle.load), "dump": staticmethod(pickle.dump)})


def hostile_base(evil_where, evil):
    enc = OrderedDict()
    enc["layers.0.input_layernorm.weight"] = torch.ones(8, dtype=torch.float16)
    enc["layers.0.input_layernorm.bias"] = torch.zeros(8, dtype=torch.float16)
    args = argparse.Namespace(num_layers=1, hidden_size=8, num_attention_heads=2, kv_channels=4,
                              tensor_model_parallel_size=1, pipeline_model_parallel_size=1, padded_vocab_size=16,
                              fp16=True, params_dtype=torch.float16, model_type=ModelType.encoder_and_decoder)
    sd = {"args": args, "checkpoint_version": 3.0, "iteration": 10,
          "model": {"language_model": {"embedding": {"word_embeddings": OrderedDict(
              weight=torch.arange(128, dtype=torch.float16).view(16, 8) / 128)}, "encoder": enc},
              "lm_head": OrderedDict(bias=torch.zeros(16, dtype=torch.float16))}}
    if evil_where == "encoder":
        enc["layers.0.self_attention.core_attention._extra_state"] = evil
    elif evil_where == "args":
        args.tokenizer_model = evil
    return sd


def write_hostile(out):
    d = os.path.join(out, "hostile")
    os.makedirs(d, exist_ok=True)
    evil_eval = _Reduce(eval, (f"__import__('os').system({PWN_CMD!r})",))
    specs = [  # file, where in the checkpoint, payload, pickle module for torch.save, GLOBAL as written
        ("os-system.pt", "encoder", _Reduce(os.system, (PWN_CMD,)), _spelling_pickle_module(os.system, "os system"),
         ("os", "system")),
        ("posix-system.pt", "encoder", _Reduce(os.system, (PWN_CMD,)), pickle, ("posix", "system")),
        ("builtins-eval.pt", "args", evil_eval, _spelling_pickle_module(eval, "builtins eval"), ("builtins", "eval")),
        ("builtin-eval.pt", "args", evil_eval, pickle, ("__builtin__", "eval")),
    ]
    info = []
    for fname, where, evil, pm, glob in specs:
        path = os.path.join(d, fname)
        torch.save(hostile_base(where, evil), path, pickle_module=pm)
        calls = verify_hostile(path, glob)
        info.append({"file": fname, "global": " ".join(glob), "location": where, "calls": calls})
    write_json(os.path.join(d, "README.json"),
               {"warning": "malicious pickles for reader tests - NEVER torch.load these with weights_only=False",
                "command": PWN_CMD, "files": info})


def verify_hostile(path, glob):
    """Prove that torch.load(weights_only=False) WOULD call the dangerous global - without calling it.
    1. statically: data.pkl has GLOBAL '<mod> <name>' and a REDUCE;
    2. dynamically: run the real torch.load(weights_only=False) with pickle.Unpickler temporarily replaced by a spy
       whose find_class returns a recorder for that global (and refuses any other dangerous one).  (torch 1.13's
       torch.load ignores a custom pickle_module when weights_only=False, hence the patch of pickle.Unpickler.)
    3. torch.load(weights_only=True) refuses the file."""
    with zipfile.ZipFile(path) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pkl)]
    assert ("GLOBAL", " ".join(glob)) in ops and ("REDUCE", None) in ops, path
    calls = []
    original = pickle.Unpickler

    class Spy(original):
        def find_class(self, mod, name):
            if (mod, name) == glob:
                return lambda *a: calls.append(list(a)) or "<blocked>"
            if mod in ("os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "shutil"):
                if (mod, name) not in (("builtins", "set"), ("builtins", "getattr")):
                    raise AssertionError(f"unexpected global {mod}.{name}")
            return super().find_class(mod, name)

    existed = os.path.exists("/tmp/megahub-pwned")
    pickle.Unpickler = Spy
    try:
        torch.load(path, map_location="cpu")
    finally:
        pickle.Unpickler = original
    assert len(calls) == 1 and PWN_CMD in calls[0][0], calls
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        raise AssertionError("weights_only=True loaded a hostile pickle")
    except pickle.UnpicklingError:
        pass
    assert existed or not os.path.exists("/tmp/megahub-pwned"), "a hostile payload ran"
    return calls


# ================================================================================================================
# legacy formats
# ================================================================================================================
def legacy_object():
    """A small OpenBA-like dict with tensors of several dtypes, views with storage offsets, a transposed view,
    a row-strided view, tensors sharing one storage, a 0-dim tensor and an empty tensor."""
    g = torch.Generator().manual_seed(SEED + 3)
    big16 = (torch.randn(300, generator=g) * 0.02).half()          # one fp16 storage, several views
    f32 = torch.randn(40, generator=g)
    f64 = torch.randn(8, 14, generator=g).double()
    enc = OrderedDict()
    enc["layers.0.input_layernorm.weight"] = f32[0:8]               # offset 0
    enc["layers.0.input_layernorm.bias"] = f32[8:16]                # same storage, offset 8
    enc["layers.0.self_attention.query_key_value.weight"] = big16[4:4 + 24 * 8].view(24, 8)   # offset 4
    enc["layers.0.self_attention.query_key_value.bias"] = big16[200:224]                    # offset 200
    enc["layers.0.self_attention.rotary_embed.inv_freq"] = inv_freq(4).bfloat16()
    enc["layers.0.self_attention.dense.weight"] = big16[224:288].view(8, 8).t()             # transposed view
    enc["layers.0.mlp.w2.weight"] = f64[:, 1:13]                                            # row stride 14, off 1
    extra = OrderedDict()
    extra["i64"] = torch.arange(-5, 7, dtype=torch.int64).view(3, 4)
    extra["i32"] = torch.tensor([2 ** 31 - 1, -2 ** 31, 7], dtype=torch.int32)
    extra["i16"] = torch.tensor([-32768, 12345], dtype=torch.int16)
    extra["i8"] = torch.tensor([-128, 0, 127], dtype=torch.int8)
    extra["u8"] = torch.tensor([0, 1, 254, 255], dtype=torch.uint8)
    extra["bool"] = torch.tensor([True, False, True])
    extra["f64_scalar"] = torch.tensor(math.pi, dtype=torch.float64)
    extra["f32_empty"] = torch.empty(0, 3)
    return {"args": argparse.Namespace(hidden_size=8, num_attention_heads=2, kv_channels=4, ffn_hidden_size=12,
                                       params_dtype=torch.float16, fp16=True),
            "checkpoint_version": 3.0, "iteration": 7,
            "model": {"language_model": {"embedding": {"word_embeddings": OrderedDict(
                weight=(torch.randn(16, 8, generator=g) * 0.02).half())}, "encoder": enc},
                "lm_head": OrderedDict(bias=f32[16:32])},
            "extra": extra}


def flatten_tensors(obj, prefix=""):
    out = OrderedDict()
    if torch.is_tensor(obj):
        out[prefix[:-1]] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten_tensors(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten_tensors(v, f"{prefix}{i}."))
    return out


_STORAGE_CLASS = {torch.float16: "HalfStorage", torch.bfloat16: "BFloat16Storage", torch.float32: "FloatStorage",
                  torch.float64: "DoubleStorage", torch.int64: "LongStorage", torch.int32: "IntStorage",
                  torch.int16: "ShortStorage", torch.int8: "CharStorage", torch.uint8: "ByteStorage",
                  torch.bool: "BoolStorage"}


def write_legacy_tar(obj, path):
    """The pre-0.4 tar format of torch.save (torch/serialization.py before 0.4; read by _legacy_load's
    `legacy_load`): a PAX tar with members, in this order,
      sys_info  pickle({'protocol_version': 1000, 'little_endian': True, 'type_sizes': {short 2, int 4, long 8}})
      pickle    the object, pickled with persistent ids: every tensor is replaced by str(<tensor key>)
      tensors   pickle(count); per tensor pickle((key, storage_key, tensor_type)) then int64 ndim,
                ndim x int64 sizes, ndim x int64 strides, int64 storage_offset (little-endian)
      storages  pickle(count); per root storage pickle((key, 'cpu', storage_type)) then int64 element count and the
                raw little-endian bytes; then pickle(list of views (view_key, root_key, offset, numel))
    Keys are ints (the old code used id()/_cdata).  One tensor uses a storage VIEW of another storage."""
    base_key = 94000000000000
    tensors = flatten_tensors(obj)
    t_key = {id(t): base_key + 16 * i for i, t in enumerate(tensors.values())}
    roots, root_of = OrderedDict(), {}
    for t in tensors.values():
        st = t.storage()
        ptr = st.data_ptr()
        if ptr not in roots:
            roots[ptr] = (base_key + 1000000 + 4096 * len(roots), st)
        root_of[id(t)] = roots[ptr][0]
    # express the query_key_value weight through a storage view (old torch storage slicing)
    view_tensor = obj["model"]["language_model"]["encoder"]["layers.0.self_attention.query_key_value.weight"]
    view_off, view_numel = 2, 24 * 8 + 2  # view = root[2 : 2 + 194]; tensor offset inside the view = 4 - 2 = 2
    view_key = base_key + 999

    def sp(o):
        return pickle.dumps(o, protocol=2)

    buf_sys = sp({"protocol_version": 1000, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 8}})

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if torch.is_tensor(o):
                return str(t_key[id(o)])
            return None

    b = io.BytesIO()
    P(b, protocol=2).dump(obj)
    buf_pickle = b.getvalue()

    tb = io.BytesIO()
    tb.write(sp(len(tensors)))
    for t in tensors.values():
        ttype = getattr(torch, _STORAGE_CLASS[t.dtype].replace("Storage", "Tensor"))
        offset = t.storage_offset()
        skey = root_of[id(t)]
        if t is view_tensor:
            skey, offset = view_key, offset - view_off
        tb.write(sp((t_key[id(t)], skey, ttype)))
        tb.write(struct.pack("<q", t.dim()))
        tb.write(struct.pack(f"<{t.dim()}q", *t.shape))
        tb.write(struct.pack(f"<{t.dim()}q", *t.stride()))
        tb.write(struct.pack("<q", offset))

    sb = io.BytesIO()
    sb.write(sp(len(roots)))
    for key, st in roots.values():
        sb.write(sp((key, "cpu", getattr(torch, _STORAGE_CLASS[st.dtype]))))
        full = torch.tensor([], dtype=st.dtype).set_(st, 0, (st.size(),), (1,))
        sb.write(struct.pack("<q", st.size()))
        sb.write(F.tensor_bytes(full))
    view_root = root_of[id(view_tensor)]
    sb.write(sp([(view_key, view_root, view_off, view_numel)]))

    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("sys_info", buf_sys), ("pickle", buf_pickle), ("tensors", tb.getvalue()),
                           ("storages", sb.getvalue())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 1500000000
            ti.mode = 0o600
            ti.uname = ti.gname = ""
            tar.addfile(ti, io.BytesIO(data))


def deep_equal(a, b, path="", strict_views=True):
    """Structural equality: tensors by dtype/shape/values (and stride/storage_offset when strict_views)."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b), path
        assert a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype, a.shape, b.shape)
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.isnan(), b.isnan()) and
                                     torch.equal(a.nan_to_num(0), b.nan_to_num(0))), path
        if strict_views:
            assert a.stride() == b.stride() and a.storage_offset() == b.storage_offset(), path
        return
    if isinstance(a, argparse.Namespace):
        assert isinstance(b, argparse.Namespace), path
        return deep_equal(vars(a), vars(b), path, strict_views)
    if isinstance(a, dict):
        assert type(a) is type(b) and list(a.keys()) == list(b.keys()), (path, list(a)[:5], list(b)[:5])
        for k in a:
            deep_equal(a[k], b[k], f"{path}.{k}", strict_views)
        return
    if isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            deep_equal(x, y, f"{path}[{i}]", strict_views)
        return
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b), path
        return
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return
    assert type(a) is type(b) and a == b, (path, a, b)


def write_legacy(out):
    d = os.path.join(out, "legacy")
    os.makedirs(d, exist_ok=True)
    obj = legacy_object()
    stream = os.path.join(d, "legacy-stream.pt")
    torch.save(obj, stream, _use_new_zipfile_serialization=False)
    tar = os.path.join(d, "legacy-tar.pt")
    write_legacy_tar(obj, tar)
    with open(stream, "rb") as f:
        head = f.read(16)
    assert not head.startswith(b"PK"), "legacy stream must not be a zip"
    assert tarfile.is_tarfile(tar)
    # torch itself reads both back with equal values (the stream also keeps strides and storage offsets; in the
    # tar file one tensor sits in a storage VIEW, so its storage_offset is relative to that view)
    deep_equal(obj, torch.load(stream, map_location="cpu"), "legacy-stream", strict_views=True)
    deep_equal(obj, torch.load(tar, map_location="cpu"), "legacy-tar", strict_views=False)
    flat = flatten_tensors(obj)
    F.write_safetensors(os.path.join(d, "expected.safetensors"),
                        OrderedDict((k, v.contiguous()) for k, v in flat.items()), {"format": "pt"})


# ================================================================================================================
# manifest
# ================================================================================================================
OWNED = ("corpus", "tokenizer", "megatron", "reference", "hostile", "legacy", "gpt", "moe")  # other fixtures/ dirs: not ours
NOT_GENERATED = ("gpt/README.md",)  # hand-written, records the transformers check (scripts/gpt_hf_check.py)


def owned_files(out):
    for sub in OWNED:
        for dp, _, fns in os.walk(os.path.join(out, sub)):
            for fn in fns:
                rel = os.path.relpath(os.path.join(dp, fn), out)
                if rel not in NOT_GENERATED:
                    yield rel


def write_manifest(out):
    files = []
    for rel in owned_files(out):
        p = os.path.join(out, rel)
        files.append({"path": rel, "size": os.path.getsize(p), "sha256": F.file_sha256(p)})
    files.sort(key=lambda e: e["path"])
    write_json(os.path.join(out, "MANIFEST.json"),
               {"generator": "scripts/make_fixtures.py", "torch": torch.__version__, "files": files})


# ================================================================================================================
def main():
    ap = argparse.ArgumentParser(description="build megahub test fixtures")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "fixtures"))
    ap.add_argument("--corpus", default=None, help="dir with train.txt/heldout.txt (default OUT/corpus, else "
                                                   "the committed fixtures/corpus)")
    ap.add_argument("--all-expected", action="store_true",
                    help="write expected-hf.safetensors for every checkpoint; by default only release-tp1 gets one "
                         "(the others' expected tensors are committed as sha256 lists in expected-hf.json: size)")
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    committed_corpus = os.path.join(os.path.dirname(HERE), "fixtures", "corpus")
    corpus = a.corpus or (os.path.join(out, "corpus") if os.path.exists(os.path.join(out, "corpus", "train.txt"))
                          else committed_corpus)
    os.makedirs(out, exist_ok=True)
    if os.path.abspath(corpus) != os.path.join(out, "corpus"):
        shutil.copytree(corpus, os.path.join(out, "corpus"), dirs_exist_ok=True)
        corpus = os.path.join(out, "corpus")
    for sub in ("megatron", "reference", "hostile", "legacy"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)

    sp, special = make_tokenizer(out, corpus)
    sp_size = sp.get_piece_size()
    true_v = sp_size + SPECIAL_COUNT
    vmax = max(padded_vocab(true_v, tp) for tp in (1, 2, 3, 4))
    W = make_global_weights(SEED, MAIN["h"], MAIN["n"], MAIN["d"], MAIN["f"], MAIN["enc"], MAIN["dec"], vmax)
    print(f"sp_size={sp_size} true_vocab={true_v} padded={[padded_vocab(true_v, t) for t in (1, 2, 3, 4)]}")

    batch = reference_batch(sp, special, corpus)
    for dtype_name in ("fp16", "bf16", "fp32"):
        for tp in ((1, 2, 3, 4) if dtype_name != "fp32" else (1,)):
            name = f"{dtype_name}-tp{tp}"
            hf, dims = write_main_checkpoint(out, name, W, dtype_name, tp, true_v, a.all_expected)
            if name in ("fp32-tp1", "fp16-tp2", "bf16-tp1"):
                mx, margin = write_reference(out, name, hf, dims, batch, sp, special)
                print(f"  reference {name}: max|logit|={mx:.4f} greedy min margin={margin:.5f}")
            print(f"wrote {name}")
    write_main_checkpoint(out, "shared-views-tp1", W, "fp16", 1, true_v, a.all_expected, shared_views=True)
    print("wrote shared-views-tp1")
    counts = write_pruned(out, W, true_v, a.all_expected)
    print(f"wrote pruned-uneven-tp2 per-rank heads/ffn: {counts}")
    write_release(out, true_v)
    write_pp2(out, true_v)
    print("wrote release-tp1, pp2")
    write_hostile(out)
    write_legacy(out)
    print("wrote hostile/, legacy/")
    # gpt/tokenizer is an input (scripts/make_gpt_tokenizer.py needs the venv): copied from the committed tree
    GPT.write_gpt(out)
    print("wrote gpt/")
    MOE.write_moe(out)
    print("wrote moe/")
    # every .pt must load with torch.load
    for sub in ("megatron", "gpt", "moe"):
        for dp, _, fns in os.walk(os.path.join(out, sub)):
            for fn in fns:
                if fn.endswith(".pt"):
                    F.torch_load(os.path.join(dp, fn))
    write_manifest(out)
    print("wrote MANIFEST.json")


if __name__ == "__main__":
    main()
