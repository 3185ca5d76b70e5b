#!/usr/bin/python3
"""Torch reference for `megahub prune`: prunes the same global weights with its OWN slicing code.

  /usr/bin/python3 scripts/prune_reference.py (--hf expected-hf.safetensors | --megatron CKPT_DIR) --masks prune-masks.json
      [--out-hf pruned.safetensors] [--out-megatron DIR --tp N [--vocab-rows R --true-vocab T]]
      [--magnitude-out masks.json]

Written from OpenBA's prune_model semantics (openba-format.md section 5), independently of megahub's TypeScript:
explicit per-tensor index_select on views [n, 3, d] / [n, 2, d] / [n, d] for heads, one global hidden index, a
per-layer FFN index, a decoder layer's self- and cross-attention sharing one head mask, dropped layers removed and
the rest renumbered. kv_channels is never pruned.

Outputs (all safetensors, written by the tiny writer below, no `safetensors` package needed):
- --out-hf: the pruned model under HF OpenBA names (fc_in = [w1; w3], lm_head.weight = the embedding);
- --out-megatron DIR: rank{r}.safetensors per TP rank under Megatron names, split evenly (column params on dim 0,
  row params on dim 1, vocab params on dim 0 after resizing the vocabulary to --vocab-rows by trimming, or by
  repeating row --true-vocab - 1 as Megatron's tools do);
- --magnitude-out: the masks magnitude pruning should pick (L2 norms in float64, ties to the lower index), computed
  here from the weights for the counts and dropped layers in the masks file.
"""
import argparse, json, os, pickle, struct
import torch

DT = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64"}
TD = {v: k for k, v in DT.items()}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        buf = bytearray(data[base + a:base + b])
        t = torch.frombuffer(buf, dtype=TD[e["dtype"]]) if buf else torch.empty(0, dtype=TD[e["dtype"]])
        out[name] = t.reshape(e["shape"]).clone()
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {"dtype": DT[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


class _Inert:
    """Stands in for any class a checkpoint pickle names that is not importable here (megatron enums …)."""

    def __init__(self, *a, **k):
        pass

    def __setstate__(self, state):
        pass


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except Exception:
            return type(name, (_Inert,), {})




def load_megatron(path):
    """Global (TP-merged) Megatron tensors, merged by the rules of openba-format.md section 1.4."""
    if os.path.exists(os.path.join(path, "latest_checkpointed_iteration.txt")):
        it = open(os.path.join(path, "latest_checkpointed_iteration.txt")).read().strip()
        path = os.path.join(path, "release" if it == "release" else "iter_%07d" % int(it))
    ranks = sorted(d for d in os.listdir(path) if d.startswith("mp_rank_"))
    # torch.load subclasses pickle.Unpickler at call time (and Debian's 1.13 ignores pickle_module=): swap in the
    # tolerant one for the duration, so args.model_type & co load without Megatron installed.
    saved, pickle.Unpickler = pickle.Unpickler, _Unpickler
    try:
        sds = [torch.load(os.path.join(path, r, "model_optim_rng.pt"), map_location="cpu")["model"] for r in ranks]
    finally:
        pickle.Unpickler = saved

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, prefix + k + ".")
            elif torch.is_tensor(v):
                yield prefix + k, v

    shards = [dict(flat(sd)) for sd in sds]
    out = {}
    for k, v in shards[0].items():
        kind = tp_kind(k)
        if kind == "replicated":
            out[k] = v.clone()
        else:
            out[k] = torch.cat([s[k] for s in shards], dim=1 if kind == "row" else 0)
    return out


ROW = ("self_attention.dense.weight", "inter_attention.dense.weight", "mlp.w2.weight")
COLUMN = ("query_key_value.weight", "query_key_value.bias", "query.weight", "query.bias", "key_value.weight", "key_value.bias",
          "mlp.w1.weight", "mlp.w3.weight")


def tp_kind(key):
    if key in ("language_model.embedding.word_embeddings.weight", "lm_head.bias"):
        return "vocab"
    if key.endswith(ROW):
        return "row"
    if ".layers." in key and key.endswith(COLUMN):
        return "column"
    return "replicated"


def hf_to_megatron(hf):
    """HF OpenBA names back to global Megatron names (fc_in split into w1 / w3)."""
    out = {"language_model.embedding.word_embeddings.weight": hf["shared_embedding.weight"], "lm_head.bias": hf["lm_head.bias"]}
    names = {"input_layernorm": "input_layernorm", "self_attn.qkv": "self_attention.query_key_value", "self_attn.o": "self_attention.dense",
             "post_attn_layernorm": "post_attention_layernorm", "inter_attn.q": "inter_attention.query", "inter_attn.kv": "inter_attention.key_value",
             "inter_attn.o": "inter_attention.dense", "post_inter_attn_layernorm": "post_inter_attention_layernorm", "mlp.fc_out": "mlp.w2"}
    for k, v in hf.items():
        parts = k.split(".")
        if parts[0] in ("encoder", "decoder") and parts[1] == "final_layernorm":
            out["language_model.%s.final_layernorm.%s" % (parts[0], parts[2])] = v
        elif parts[0] in ("encoder", "decoder") and parts[1] == "block":
            stack, i, op, kind = parts[0], parts[2], ".".join(parts[3:-1]), parts[-1]
            pre = "language_model.%s.layers.%s." % (stack, i)
            if op == "mlp.fc_in":
                f = v.shape[0] // 2
                out[pre + "mlp.w1.weight"], out[pre + "mlp.w3.weight"] = v[:f].clone(), v[f:].clone()
            else:
                out[pre + names[op] + "." + kind] = v
    return out


def layer_count(g, stack):
    return len({int(k.split(".")[3]) for k in g if k.startswith("language_model.%s.layers." % stack)})


def prune(g, masks, d):
    """OpenBA's prune_model on global Megatron tensors, then layer dropping and renumbering."""
    hid = torch.tensor(masks["hidden_index"], dtype=torch.long)
    src = masks["source_dims"]
    n, h = src["heads"], src["hidden"]
    out = {
        "language_model.embedding.word_embeddings.weight": g["language_model.embedding.word_embeddings.weight"].index_select(1, hid),
        "lm_head.bias": g["lm_head.bias"].clone(),
    }
    for stack in ("encoder", "decoder"):
        for part in ("weight", "bias"):
            k = "language_model.%s.final_layernorm.%s" % (stack, part)
            out[k] = g[k].index_select(0, hid)
    for L in masks["layers"]:
        heads = torch.tensor(L["head_index"], dtype=torch.long)
        ffn = torch.tensor(L["ffn_index"], dtype=torch.long)
        old = "language_model.%s.layers.%d." % (L["stack"], L["layer"])
        new = "language_model.%s.layers.%d." % (L["stack"], L["new_layer"])
        for k, v in g.items():
            if not k.startswith(old):
                continue
            p = k[len(old):]
            if p.endswith("layernorm.weight") or p.endswith("layernorm.bias") or p.endswith("dense.bias"):
                r = v.index_select(0, hid)
            elif p == "self_attention.query_key_value.weight":
                r = v.view(n, 3 * d, h).index_select(0, heads).index_select(2, hid).reshape(-1, len(hid))
            elif p == "self_attention.query_key_value.bias":
                r = v.view(n, 3 * d).index_select(0, heads).reshape(-1)
            elif p == "inter_attention.query.weight":
                r = v.view(n, d, h).index_select(0, heads).index_select(2, hid).reshape(-1, len(hid))
            elif p == "inter_attention.query.bias":
                r = v.view(n, d).index_select(0, heads).reshape(-1)
            elif p == "inter_attention.key_value.weight":
                r = v.view(n, 2 * d, h).index_select(0, heads).index_select(2, hid).reshape(-1, len(hid))
            elif p == "inter_attention.key_value.bias":
                r = v.view(n, 2 * d).index_select(0, heads).reshape(-1)
            elif p in ("self_attention.dense.weight", "inter_attention.dense.weight"):
                r = v.index_select(0, hid).view(len(hid), n, d).index_select(1, heads).reshape(len(hid), -1)
            elif p in ("mlp.w1.weight", "mlp.w3.weight"):
                r = v.index_select(0, ffn).index_select(1, hid)
            elif p == "mlp.w2.weight":
                r = v.index_select(0, hid).index_select(1, ffn)
            elif p == "self_attention.rotary_embed.inv_freq":
                r = v.clone()
            else:
                raise SystemExit("unknown tensor " + k)
            out[new + p] = r.contiguous()
    return out


def to_hf(m):
    names = {"input_layernorm": "input_layernorm", "self_attention.query_key_value": "self_attn.qkv", "self_attention.dense": "self_attn.o",
             "post_attention_layernorm": "post_attn_layernorm", "inter_attention.query": "inter_attn.q", "inter_attention.key_value": "inter_attn.kv",
             "inter_attention.dense": "inter_attn.o", "post_inter_attention_layernorm": "post_inter_attn_layernorm", "mlp.w2": "mlp.fc_out"}
    emb = m["language_model.embedding.word_embeddings.weight"]
    hf = {"shared_embedding.weight": emb, "lm_head.weight": emb.clone(), "lm_head.bias": m["lm_head.bias"]}
    for stack in ("encoder", "decoder"):
        for part in ("weight", "bias"):
            hf["%s.final_layernorm.%s" % (stack, part)] = m["language_model.%s.final_layernorm.%s" % (stack, part)]
        for i in range(layer_count(m, stack)):
            pre = "language_model.%s.layers.%d." % (stack, i)
            for k, v in m.items():
                if not k.startswith(pre):
                    continue
                op, kind = k[len(pre):].rsplit(".", 1)
                if op in names:
                    hf["%s.block.%d.%s.%s" % (stack, i, names[op], kind)] = v
            hf["%s.block.%d.mlp.fc_in.weight" % (stack, i)] = torch.cat([m[pre + "mlp.w1.weight"], m[pre + "mlp.w3.weight"]], 0)
    return hf


def ranks(m, tp, vocab_rows, true_vocab):
    out = [dict() for _ in range(tp)]
    for k, v in m.items():
        kind = tp_kind(k)
        if kind == "vocab" and vocab_rows is not None and vocab_rows != v.shape[0]:
            if vocab_rows < v.shape[0]:
                v = v[:vocab_rows]
            else:
                v = torch.cat([v, v[true_vocab - 1:true_vocab].expand(vocab_rows - v.shape[0], *v.shape[1:])], 0)
        if kind == "replicated":
            parts = [v] * tp
        else:
            dim = 1 if kind == "row" else 0
            assert v.shape[dim] % tp == 0, "%s: %d does not split into %d" % (k, v.shape[dim], tp)
            parts = torch.chunk(v, tp, dim)
        for r in range(tp):
            out[r][k] = parts[r].contiguous()
    return out


def magnitude(g, masks, d):
    """Independent magnitude masks: float64 L2 norms over the matrices that own each unit, in the kept layers."""
    src, dst = masks["source_dims"], masks["target_dims"]
    n, h = src["heads"], src["hidden"]
    sq = lambda t: t.double().pow(2)
    top = lambda v, k: sorted(sorted(range(len(v)), key=lambda i: (-float(v[i]), i))[:k])
    hidden = sq(g["language_model.embedding.word_embeddings.weight"]).sum(0)
    layers = []
    for L in masks["layers"]:
        pre = "language_model.%s.layers.%d." % (L["stack"], L["layer"])
        w = lambda p: g[pre + p]
        heads = sq(w("self_attention.query_key_value.weight")).view(n, 3 * d, h).sum((1, 2)) + sq(w("self_attention.dense.weight")).view(h, n, d).sum((0, 2))
        hidden = hidden + sq(w("self_attention.query_key_value.weight")).sum(0) + sq(w("self_attention.dense.weight")).sum(1)
        if L["stack"] == "decoder":
            heads = heads + sq(w("inter_attention.query.weight")).view(n, d, h).sum((1, 2))
            heads = heads + sq(w("inter_attention.key_value.weight")).view(n, 2 * d, h).sum((1, 2))
            heads = heads + sq(w("inter_attention.dense.weight")).view(h, n, d).sum((0, 2))
            for p in ("inter_attention.query.weight", "inter_attention.key_value.weight"):
                hidden = hidden + sq(w(p)).sum(0)
            hidden = hidden + sq(w("inter_attention.dense.weight")).sum(1)
        ffn = sq(w("mlp.w1.weight")).sum(1) + sq(w("mlp.w3.weight")).sum(1) + sq(w("mlp.w2.weight")).sum(0)
        hidden = hidden + sq(w("mlp.w1.weight")).sum(0) + sq(w("mlp.w3.weight")).sum(0) + sq(w("mlp.w2.weight")).sum(1)
        layers.append({"stack": L["stack"], "layer": L["layer"], "head_index": top(heads, dst["heads"]), "ffn_index": top(ffn, dst["ffn"])})
    return {"hidden_index": top(hidden, dst["hidden"]), "layers": layers}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf")
    ap.add_argument("--megatron")
    ap.add_argument("--masks", required=True)
    ap.add_argument("--out-hf")
    ap.add_argument("--out-megatron")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--vocab-rows", type=int)
    ap.add_argument("--true-vocab", type=int)
    ap.add_argument("--magnitude-out")
    a = ap.parse_args()
    g = hf_to_megatron(read_safetensors(a.hf)) if a.hf else load_megatron(a.megatron)
    masks = json.load(open(a.masks))
    d = masks["source_dims"]["kvChannels"]
    if a.magnitude_out:
        json.dump(magnitude(g, masks, d), open(a.magnitude_out, "w"))
    m = prune(g, masks, d)
    if a.out_hf:
        write_safetensors(a.out_hf, to_hf(m))
    if a.out_megatron:
        os.makedirs(a.out_megatron, exist_ok=True)
        for r, t in enumerate(ranks(m, a.tp, a.vocab_rows, a.true_vocab)):
            write_safetensors(os.path.join(a.out_megatron, "rank%d.safetensors" % r), t)
    print(json.dumps({"tensors": len(m)}))


if __name__ == "__main__":
    main()
