#!/usr/bin/env python3
"""make_dcp_fixtures.py - tiny Megatron-Core `torch_dist` checkpoints written by torch's REAL DCP writer.

Run:   ~/.cache/megahub/venv-ref/bin/python scripts/make_dcp_fixtures.py [--out fixtures/dcp]
       ~/.cache/megahub/venv-ref/bin/python scripts/make_dcp_fixtures.py --check   (CI: regenerate into a temp dir,
                                                                                  compare with the committed tree)
       Needs torch >= 2.4 with torch.distributed (gloo); runs 4 + 2 + 3 x 4 local CPU processes, no network.

Why:   megahub reads `torch_dist` checkpoints without torch.  The tests need files whose bytes come from torch's own
       `torch.distributed.checkpoint` (FileSystemWriter, thread_count=2 as Megatron's strategy uses, so every rank writes
       __R_0.distcp and __R_1.distcp), with every rank contributing the chunks Megatron-Core gives it: ShardedTensors
       with global offsets from its TP/PP coordinates, replicated tensors written once by their main replica, the
       stacked layer axis `decoder.layers.<param>` [L, ...] with one chunk per (layer, TP rank), SwiGLU fc1 placed
       gate-halves-then-up-halves, `_extra_state` / `rng_state` ShardedObjects as torch.save'd byte items with the
       `<key>/shard_<offsets>_<shape>` names, optimizer state in the fully_reshardable and dp_reshardable layouts, and
       Megatron's metadata.json + common.pt.  Layout facts: ../shared/docs/megatron-core-format.md §3; Megatron's
       planner (MCoreSavePlanner) is mirrored here: byte items on every rank, objects already serialised,
       flatten_state_dict=False (so planner_data is None) and the gathered local plans attached as `all_local_plans`.

       Megatron itself is not installed: the generator builds the same sharded state dicts by hand from the facts
       above, and torch writes them.  Determinism: torch's save_id (a uuid) and the checkpoint path are the only
       run-dependent fields of `.metadata`, so storage_meta is pinned, and the order of storage_data (which depends on
       which writer thread finished first) is sorted; with that every output is byte-identical across runs, and
       --check compares bytes (falling back to loaded content — every tensor and byte item via torch's dcp.load —
       when a different torch writes different bytes).

Outputs (under OUT):
  gpt-tp2-pp2/        world 4 (TP2 x PP2), bf16, TE names, 4 stacked layers, untied output layer,
                      fully_reshardable optimizer (optimizer.state.{param,exp_avg,exp_avg_sq}.<key>), old metadata.json
  gpt-tp2-perlayer/   world 2 (TP2), fp16, local-spec names, 3 per-layer keys decoder.layers.<i>.<param>, tied
                      embeddings, dp_reshardable optimizer (flat fp32 buckets per model-parallel rank), new metadata.json
  mixtral-tp2-ep2/    world 4 (TP2 x EP2), bf16, TE spec with grouped GEMM: Mixtral-style, every layer MoE, stacked
                      keys with the expert axis decoder.layers.mlp.experts.experts.<param> [L, E, ...]
  qwen2moe-ep4/       world 4 (EP4, one expert per rank), fp16, local spec: Qwen2-MoE-style, gated shared experts,
                      q/k/v biases, tied, layer 0 dense (moe_layer_freq [0, 1, 1]) so per-layer keys [E, ...]
  qwen3moe-pp2-ep2/   world 4 (PP2 x EP2), fp32, local spec: Qwen3-MoE-style, q/k norms, 8 experts, layer 1 dense
                      (moe_layer_freq 2), per-layer keys
                      (MoE models and weights: scripts/fixtures/moe_spec.py, the same tensors as fixtures/moe; layout:
                      scripts/fixtures/dcp_moe.py; no optimizer state, as saved with --no-save-optim)
  each holds latest_checkpointed_iteration.txt and iter_0000010/{metadata.json, common.pt, .metadata, __R_N.distcp};
  the MoE ones also expected-hf.json (config fields and name/dtype/shape/sha256 of every HF tensor, built from the
  global weights after checking that torch's dcp.load reads them back from the written directory)
  MANIFEST.json       path, size, sha256 of every file
"""
import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from argparse import Namespace

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed._shard.metadata import ShardMetadata
from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor, ShardedTensorMetadata
from torch.distributed._shard.sharded_tensor.metadata import TensorProperties
from torch.distributed.checkpoint import DefaultSavePlanner, FileSystemWriter
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.planner import SavePlan
from torch.distributed.checkpoint.planner_helpers import _create_write_items

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
import dcp_moe  # noqa: E402

ITERATION = 10
# Model dims: GQA (4 heads of 4, 2 groups), SwiGLU, padded vocab 64 (true 50, divisible-by 16 x TP 2).
H, HEADS, GROUPS, KV, F, VOCAB, PADDED = 16, 4, 2, 4, 24, 50, 64
QKV_ROWS = (HEADS + 2 * GROUPS) * KV

SPECS = {
    "gpt-tp2-pp2": dict(tp=2, pp=2, layers=4, dtype=torch.bfloat16, stacked=True, te=True, tied=False,
                        optim="fully_reshardable", metadata_json="old", seed=1),
    "gpt-tp2-perlayer": dict(tp=2, pp=1, layers=3, dtype=torch.float16, stacked=False, te=False, tied=True,
                             optim="dp_reshardable", metadata_json="new", seed=2),
    "mixtral-tp2-ep2": dict(moe="mixtral", tp=2, pp=1, ep=2, te=True, grouped=True, divisible_by=64, optim=None,
                            metadata_json="new"),
    "qwen2moe-ep4": dict(moe="qwen2moe", tp=1, pp=1, ep=4, te=False, grouped=False, divisible_by=128, optim=None,
                         metadata_json="old"),
    "qwen3moe-pp2-ep2": dict(moe="qwen3moe", tp=1, pp=2, ep=2, te=False, grouped=False, divisible_by=128, optim=None,
                             metadata_json="new"),
}


def world_of(spec):
    return spec["tp"] * spec["pp"] * spec.get("ep", 1)


def global_weights(spec):
    """Every global (TP-merged) tensor of the model, seeded: what a reader must reassemble."""
    g = torch.Generator().manual_seed(spec["seed"])
    r = lambda *shape: (torch.randn(*shape, generator=g) * 0.05).to(spec["dtype"])
    L = spec["layers"]
    w = {
        "embedding.word_embeddings.weight": r(PADDED, H),
        "decoder.final_layernorm.weight": (1 + r(H).float()).to(spec["dtype"]),
    }
    if not spec["tied"]:
        w["output_layer.weight"] = r(PADDED, H)
    norm_qkv = "self_attention.linear_qkv.layer_norm_weight" if spec["te"] else "input_layernorm.weight"
    norm_mlp = "mlp.linear_fc1.layer_norm_weight" if spec["te"] else "pre_mlp_layernorm.weight"
    per_layer = {
        norm_qkv: lambda: (1 + r(H).float()).to(spec["dtype"]),
        "self_attention.linear_qkv.weight": lambda: r(QKV_ROWS, H),
        "self_attention.linear_proj.weight": lambda: r(H, HEADS * KV),
        norm_mlp: lambda: (1 + r(H).float()).to(spec["dtype"]),
        # Global SwiGLU fc1 as torch_dist stores it: [gate_all; up_all] (TP-invariant).
        "mlp.linear_fc1.weight": lambda: r(2 * F, H),
        "mlp.linear_fc2.weight": lambda: r(H, F),
    }
    layers = {name: torch.stack([make() for _ in range(L)]) for name, make in per_layer.items()}
    return w, layers


def split_rule(name):
    """('rows'|'cols'|'swiglu'|None): how TP splits a per-layer parameter (megatron-core-format.md §1.4, §3.3)."""
    if name.endswith(("linear_qkv.weight", "linear_qkv.bias")):
        return "rows"
    if name.endswith("linear_fc1.weight"):
        return "swiglu"
    if name.endswith("linear_proj.weight") or name.endswith("linear_fc2.weight"):
        return "cols"
    return None


def tp_chunks(shape, rule, tp_size):
    """[(tp_rank, offsets, sizes)] of one per-layer tensor: the chunks each TP rank holds (replicated: rank 0 only)."""
    if rule is None:
        return [(0, (0,) * len(shape), tuple(shape))]
    out = []
    for t in range(tp_size):
        if rule == "rows":
            n = shape[0] // tp_size
            out.append((t, (t * n,) + (0,) * (len(shape) - 1), (n,) + tuple(shape[1:])))
        elif rule == "cols":
            n = shape[1] // tp_size
            out.append((t, (0, t * n), (shape[0], n)))
        else:  # each rank's [gate_r; up_r] becomes fragments r and r + TP of a 2*TP-way split of the rows
            n = shape[0] // (2 * tp_size)
            out.append((t, (t * n, 0), (n, shape[1])))
            out.append((t, ((t + tp_size) * n, 0), (n, shape[1])))
    return out


def chunk_plan(spec):
    """{fqn: (global tensor, [(writer rank, offsets, sizes)])} for the model weights, in Megatron's key order."""
    if spec.get("moe"):
        return dcp_moe.chunk_plan(spec, tp_chunks, split_rule)
    tp, pp, L = spec["tp"], spec["pp"], spec["layers"]
    per_stage = L // pp
    rank_of = lambda t, p: t + tp * p  # Megatron's default order tp-cp-ep-dp-pp with DP = 1
    w, layers = global_weights(spec)
    plan = {}
    emb = w["embedding.word_embeddings.weight"]
    plan["embedding.word_embeddings.weight"] = (emb, [(rank_of(t, 0), o, s) for t, o, s in tp_chunks(emb.shape, "rows", tp)])
    for name, stacked in layers.items():
        rule = split_rule(name)
        for layer in range(L):
            p = layer // per_stage
            chunks = [(rank_of(t, p), o, s) for t, o, s in tp_chunks(stacked.shape[1:], rule, tp)]
            if spec["stacked"]:
                # Stacked: the prepended axis 0 is the GLOBAL layer number (PP offset baked in), one chunk per layer.
                key = f"decoder.layers.{name}"
                entry = plan.setdefault(key, (stacked, []))
                entry[1].extend((r, (layer,) + o, (1,) + s) for r, o, s in chunks)
            else:
                plan[f"decoder.layers.{layer}.{name}"] = (stacked[layer], chunks)
    last = pp - 1
    fln = w["decoder.final_layernorm.weight"]
    plan["decoder.final_layernorm.weight"] = (fln, [(rank_of(0, last), (0,), tuple(fln.shape))])
    if "output_layer.weight" in w:
        out = w["output_layer.weight"]
        plan["output_layer.weight"] = (out, [(rank_of(t, last), o, s) for t, o, s in tp_chunks(out.shape, "rows", tp)])
    return plan


def torch_saved(obj):
    b = io.BytesIO()
    torch.save(obj, b)
    return b


def sharded_objects(spec, rank):
    """{unique key: BytesIO}: what a rank writes as byte items (ShardedObject.unique_key = key/shard_<off>_<shape>)."""
    if spec.get("moe"):
        return dcp_moe.sharded_objects(spec, rank, torch_saved)
    tp, pp, L = spec["tp"], spec["pp"], spec["layers"]
    t, p = rank % tp, rank // tp
    per_stage = L // pp
    out = {}
    modules = ["self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2"]
    for layer in range(p * per_stage, (p + 1) * per_stage):
        if t != 0:
            continue  # _extra_state is replicated over TP: the main replica writes it
        for i, m in enumerate(modules):
            # Local-spec linears keep None; TE keeps FP8 metadata as a BytesIO (older TE) or a uint8 tensor (newer).
            data = None if not spec["te"] else (io.BytesIO(b"") if i % 2 == 0 else torch.zeros(0, dtype=torch.uint8))
            if spec["stacked"]:
                out[f"decoder.layers.{m}._extra_state/shard_{layer}_{L}"] = torch_saved([data])
            else:
                out[f"decoder.layers.{layer}.{m}._extra_state/shard_0_1"] = torch_saved([data])
    # no output_layer._extra_state: GPTModel.sharded_state_dict pops it (old GPT checkpoints lacked it)
    g = torch.Generator().manual_seed(1000 + rank)
    rng = {"random_rng_state": (3, tuple(range(4)), None), "torch_rng_state": torch.randint(0, 255, (16,), generator=g, dtype=torch.uint8)}
    out[f"rng_state/shard_{p}.{t}_{pp}.{tp}"] = torch_saved([rng])
    return out


def as_sharded_tensor(global_tensor, chunks, rank, dtype=None):
    """A torch ShardedTensor holding this rank's chunks of `global_tensor` (global metadata names every chunk)."""
    src = global_tensor if dtype is None else global_tensor.to(dtype)
    local, meta = [], []
    for r, offsets, sizes in chunks:
        meta.append(ShardMetadata(list(offsets), list(sizes), f"rank:{r}/cpu"))
        if r == rank:
            view = src[tuple(slice(o, o + s) for o, s in zip(offsets, sizes))]
            local.append(Shard.from_tensor_and_offsets(view.contiguous(), list(offsets), rank))
    props = TensorProperties(dtype=src.dtype, layout=torch.strided, requires_grad=False,
                             memory_format=torch.contiguous_format, pin_memory=False)
    md = ShardedTensorMetadata(meta, torch.Size(src.shape), props)
    return ShardedTensor._init_from_local_shards_and_global_metadata(local, sharded_tensor_metadata=md)


def optimizer_tensors(spec, plan, rank):
    """{fqn: ShardedTensor} of the optimizer state in the layout `spec['optim']` names."""
    out = {}
    g = torch.Generator().manual_seed(500 + spec["seed"])
    if spec["optim"] == "fully_reshardable":
        # optimizer.state.<slot>.<model key>: the model's global shape and chunking, fp32 (param = fp32 master copy).
        for key, (tensor, chunks) in plan.items():
            for slot in ("param", "exp_avg", "exp_avg_sq"):
                value = tensor.float() if slot == "param" else torch.rand(tensor.shape, generator=g)
                out[f"optimizer.state.{slot}.{key}"] = as_sharded_tensor(value, chunks, rank)
        return out
    # dp_reshardable: per model-parallel rank (dp_group_idx_<mp rank>) one flat fp32 bucket of that rank's local
    # parameters, chunked by parameter; with DP = 1 the only DP rank holds it all.
    tp = spec["tp"]
    for mp_rank in range(tp * spec["pp"]):
        numels = [numel for key, (tensor, chunks) in plan.items() for r, _, sizes in chunks if r == mp_rank
                  for numel in [int(torch.Size(sizes).numel())]]
        total = sum(numels)
        prefix = f"optimizer.distributed.dp_group_idx_{mp_rank}.gbuf_idx_0.dtype_(torch.float16, torch.float32).bucket_idx_0"
        bounds, pos = [], 0
        for n in numels:
            bounds.append((mp_rank, (pos,), (n,)))
            pos += n
        for slot in ("param", "exp_avg", "exp_avg_sq"):
            out[f"{prefix}.{slot}"] = as_sharded_tensor(torch.rand(total, generator=g), bounds, rank)
    return out


def dp_optimizer_objects(spec, plan, rank):
    """The ShardedObjects of the dp_reshardable layout on this rank (its own dp_group_idx)."""
    numel = sum(int(torch.Size(s).numel()) for _, (_, chunks) in plan.items() for r, _, s in chunks if r == rank)
    base = f"optimizer.distributed.dp_group_idx_{rank}"
    return {
        f"{base}.optimizer/shard_0_1": torch_saved([{"param_groups": [{"lr": 3e-4, "weight_decay": 0.1, "params": [0]}], "state": {}}]),
        f"{base}.per_bucket_numel/shard_0_1": torch_saved([{0: {(torch.float16, torch.float32): [numel]}}]),
        f"{base}.per_bucket_numel_unpadded/shard_0_1": torch_saved([{0: {(torch.float16, torch.float32): [numel]}}]),
    }


class MegatronLikePlanner(DefaultSavePlanner):
    """MCoreSavePlanner's observable behaviour: byte items written by every rank as given, local plans kept."""

    def __init__(self):
        super().__init__(flatten_state_dict=False)

    def create_local_plan(self):
        items = []
        for fqn, obj in self.state_dict.items():
            items += _create_write_items(fqn, obj)
        self.plan = SavePlan(items=items)
        return self.plan

    def create_global_plan(self, all_plans):
        plans, metadata = super().create_global_plan(all_plans)
        metadata.all_local_plans = all_plans
        return plans, metadata

    def transform_object(self, write_item, object):
        return object


class PinnedWriter(FileSystemWriter):
    """torch's FileSystemWriter with the run-dependent fields of `.metadata` made reproducible (see Why)."""

    def storage_meta(self):
        return StorageMeta(checkpoint_id=f"iter_{ITERATION:07d}", save_id="megahub-fixture")

    def finish(self, metadata, results):
        ordered = [sorted(r, key=lambda wr: (wr.storage_data.relative_path, wr.storage_data.offset)) for r in results]
        super().finish(metadata, ordered)


def megatron_args(spec, name):
    if spec.get("moe"):
        return dcp_moe.megatron_args(spec, name, ITERATION)
    return Namespace(
        num_layers=spec["layers"], hidden_size=H, ffn_hidden_size=F, num_attention_heads=HEADS,
        group_query_attention=True, num_query_groups=GROUPS, kv_channels=KV, max_position_embeddings=128,
        seq_length=128, padded_vocab_size=PADDED, vocab_size=VOCAB, make_vocab_size_divisible_by=16,
        swiglu=True, normalization="RMSNorm", norm_epsilon=1e-5, position_embedding_type="rope", rotary_base=10000,
        add_bias_linear=False, add_qkv_bias=False, untie_embeddings_and_output_weights=not spec["tied"],
        tensor_model_parallel_size=spec["tp"], pipeline_model_parallel_size=spec["pp"],
        expert_model_parallel_size=1, data_parallel_size=1, world_size=spec["tp"] * spec["pp"],
        bf16=spec["dtype"] == torch.bfloat16, fp16=spec["dtype"] == torch.float16, params_dtype=spec["dtype"],
        transformer_impl="transformer_engine" if spec["te"] else "local", ckpt_format="torch_dist",
        use_distributed_optimizer=True, dist_ckpt_optim_fully_reshardable=spec["optim"] == "fully_reshardable",
        iteration=ITERATION, tokenizer_type="NullTokenizer", fixture=name,
    )


def common_state(spec, name):
    content = {"singleton_local_shards": False, "chained_optim_avoid_prefix": True}
    if spec["optim"]:
        content["distrib_optim_sharding_type"] = spec["optim"]
    state = {
        "args": megatron_args(spec, name),
        "checkpoint_version": 3.0,
        "iteration": ITERATION,
        "num_floating_point_operations_so_far": 123456789,
        "content_metadata": content,
        "opt_param_scheduler": {"max_lr": 3e-4, "min_lr": 3e-5, "num_steps": ITERATION * 8, "decay_style": "cosine"},
    }
    if spec["optim"] == "fully_reshardable":
        state["optimizer"] = {"optimizer": {"param_groups": [{"lr": 3e-4, "weight_decay": 0.1, "step": ITERATION, "params": [0]}]}}
    return state


def worker(rank, world, store, name, iter_dir):
    spec = SPECS[name]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        plan = chunk_plan(spec)
        state = {}
        for key, (tensor, chunks) in plan.items():
            if any(r == rank for r, _, _ in chunks):
                state[key] = as_sharded_tensor(tensor, chunks, rank)
        for key, st in (optimizer_tensors(spec, plan, rank) if spec["optim"] else {}).items():
            if any(sh.placement.rank() == rank for sh in st.metadata().shards_metadata):
                state[key] = st
        state.update(sharded_objects(spec, rank))
        if spec["optim"] == "dp_reshardable":
            state.update(dp_optimizer_objects(spec, plan, rank))
        dcp.save(state, storage_writer=PinnedWriter(iter_dir, thread_count=2), planner=MegatronLikePlanner())
        dist.barrier()
    finally:
        dist.destroy_process_group()


def make_one(name, root, tmp):
    spec = SPECS[name]
    world = world_of(spec)
    ckpt = os.path.join(root, name)
    iter_dir = os.path.join(ckpt, f"iter_{ITERATION:07d}")
    os.makedirs(iter_dir)
    store = os.path.join(tmp, f"store-{name}")
    mp.start_processes(worker, args=(world, store, name, iter_dir), nprocs=world, join=True, start_method="spawn")
    torch.save(common_state(spec, name), os.path.join(iter_dir, "common.pt"))
    config = {"sharded_backend": "torch_dist", "sharded_backend_version": 1}
    if spec["metadata_json"] == "old":
        config.update(common_backend="torch", common_backend_version=1)
    with open(os.path.join(iter_dir, "metadata.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(ckpt, "latest_checkpointed_iteration.txt"), "w") as f:
        f.write(str(ITERATION))
    if spec.get("moe"):
        config, hf = dcp_moe.expected_hf(spec, loaded(iter_dir))
        with open(os.path.join(ckpt, "expected-hf.json"), "w") as f:
            json.dump({"fixture": name, "model": spec["moe"], "config": config,
                       "tensors": [{"name": k, "dtype": ST_DTYPE[v.dtype], "shape": list(v.shape), "sha256": tensor_sha(v)}
                                   for k, v in hf.items()]}, f, indent=1)
            f.write("\n")


ST_DTYPE = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


def tensor_sha(t):
    """sha256 of a tensor's C-order bytes (fixturelib.tensor_sha256's definition)."""
    t = t.contiguous().reshape(-1)
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest()


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def walk(root):
    for d, _, files in os.walk(root):
        for fn in files:
            p = os.path.join(d, fn)
            rel = os.path.relpath(p, root)
            if rel != "MANIFEST.json":
                yield rel.replace(os.sep, "/"), p


def make_all(out):
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="megahub-dcp-store-") as tmp:
        for name in SPECS:
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
            make_one(name, out, tmp)
    files = [{"path": rel, "size": os.path.getsize(p), "sha256": sha256(p)} for rel, p in sorted(walk(out))]
    manifest = {"generator": "scripts/make_dcp_fixtures.py", "torch": torch.__version__, "files": files}
    with open(os.path.join(out, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return files


def loaded(iter_dir):
    """Everything torch's own reader gives for a DCP directory: tensors and byte items (as raw bytes)."""
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    sd = {}
    _load_state_dict(sd, storage_reader=dcp.FileSystemReader(iter_dir), planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    return sd


def same_content(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8) if a.numel() else a, b.view(torch.uint8) if b.numel() else b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_content(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_content(x, y) for x, y in zip(a, b))
    if isinstance(a, io.BytesIO):
        return a.getvalue() == b.getvalue()
    if isinstance(a, Namespace):
        return same_content(vars(a), vars(b))
    return a == b


def check(committed):
    with open(os.path.join(committed, "MANIFEST.json")) as f:
        old = {e["path"]: e for e in json.load(f)["files"]}
    problems, equal_content = [], 0
    with tempfile.TemporaryDirectory(prefix="megahub-dcp-check-") as tmp:
        new = {e["path"]: e for e in make_all(tmp)}
        for rel in sorted(set(old) ^ set(new)):
            problems.append(f"{rel}: {'committed but not generated' if rel in old else 'generated but not committed'}")
        for rel, e in old.items():
            p = os.path.join(committed, rel)
            if not os.path.exists(p) or sha256(p) != e["sha256"]:
                problems.append(f"{rel}: missing or edited after generation (sha256 differs from MANIFEST.json)")
        dirs_to_compare = set()
        for rel in sorted(set(old) & set(new)):
            if old[rel]["sha256"] != new[rel]["sha256"]:
                dirs_to_compare.add(os.path.dirname(rel))
        for d in sorted(dirs_to_compare):
            a_dir, b_dir = os.path.join(committed, d), os.path.join(tmp, d)
            if os.path.exists(os.path.join(a_dir, ".metadata")):
                ok = same_content(loaded(a_dir), loaded(b_dir))
                ok = ok and same_content(torch.load(os.path.join(a_dir, "common.pt"), weights_only=False),
                                         torch.load(os.path.join(b_dir, "common.pt"), weights_only=False))
            else:
                ok = False
            if ok:
                equal_content += 1
            else:
                problems.append(f"{d}: contents differ")
    print(f"dcp fixtures: {len(old)} files; {len(old) - len(problems)} checked, {equal_content} director(ies) equal by "
          f"loaded content rather than bytes, {len(problems)} problem(s)")
    for p in problems:
        print("  FAIL:", p)
    return 1 if problems else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(here), "fixtures", "dcp"))
    ap.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare with --out")
    a = ap.parse_args()
    if a.check:
        return check(a.out)
    files = make_all(a.out)
    print(f"wrote {len(files)} files, {sum(f['size'] for f in files)} bytes under {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
