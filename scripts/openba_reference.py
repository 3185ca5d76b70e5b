#!/usr/bin/python3
"""openba_reference.py - an independent PyTorch implementation of OpenBA's forward pass on HF-layout tensors.

Run (Debian's interpreter, it has torch):
  /usr/bin/python3 scripts/openba_reference.py check <hf.safetensors> <fixtures/reference/NAME.safetensors> \
        --heads 12 --kv-channels 8
      recomputes the logits of the reference batch stored in the second file from the HF weights in the first
      (e.g. a converter's output) and prints {"max_abs_diff": ...}; exit status 1 when it exceeds --tol (1e-4).
  make_fixtures.py imports this module to write fixtures/reference/*.

Why: the ONNX export of the TypeScript side must be checked against logits that nobody derived from its code.  This
file follows only the documented maths (docs/openba-format.md §2.4), everything in fp32 (weights are upcast):
  * embedding lookup in shared_embedding (no scaling, no positional embedding);
  * pre-LN blocks, nn.LayerNorm eps 1e-5 with bias;  encoder: x += SelfAttn(LN(x)); x += MLP(LN(x));
    decoder: x += CausalSelfAttn(LN(x)); x += CrossAttn(LN(x), enc_out); x += MLP(LN(x)); each stack ends with
    final_layernorm;
  * self-attention: qkv viewed [b, s, n, 3d] and chunked into q, k, v (per-head layout); rotate-half rotary on q and k
    (encoder AND decoder self-attention, never cross-attention) with positions 0..s-1 and
    inv_freq = 1 / 10000^(arange(0, d, 2)/d) in fp32, angle table = cat(freqs, freqs);
  * scores = q.k^T / sqrt(d), masked positions FILLED with -10000 (not -inf), softmax in fp32;
    encoder: key padding mask; decoder self: causal AND decoder key padding; cross: encoder key padding;
  * output projection o with bias;  MLP: a, b = chunk(fc_in(x), 2) ; fc_out(silu(a) * b), no biases;
  * logits = lm_head(dec_out) with weight and bias, no scaling, fp32.
"""
import argparse
import json
import math
import sys

import torch
import torch.nn.functional as Fn

LN_EPS = 1e-5
MASK_VALUE = -10000.0


def _ln(x, hf, name):
    return Fn.layer_norm(x, (x.shape[-1],), hf[name + ".weight"], hf[name + ".bias"], LN_EPS)


def _lin(x, hf, name, bias=True):
    return Fn.linear(x, hf[name + ".weight"], hf.get(name + ".bias") if bias else None)


def rotary_tables(seq_len, d):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    t = torch.arange(seq_len, dtype=torch.float32)
    freqs = torch.einsum("i,j->ij", t, inv_freq)          # [s, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)               # [s, d]
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x, cos, sin):
    # x [b, n, s, d]; cos/sin [s, d]
    return x * cos[None, None] + rotate_half(x) * sin[None, None]


def attention(q, k, v, masked):
    """q [b,n,sq,d], k/v [b,n,sk,d], masked: bool [b,1|n,sq,sk] True = masked."""
    d = q.shape[-1]
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
    scores = scores.masked_fill(masked, MASK_VALUE)
    probs = torch.softmax(scores.float(), dim=-1)
    return torch.matmul(probs, v)                          # [b,n,sq,d]


def _merge(ctx):
    b, n, s, d = ctx.shape
    return ctx.transpose(1, 2).reshape(b, s, n * d)


def self_attn(x, hf, pfx, n, d, masked):
    b, s, _ = x.shape
    qkv = _lin(x, hf, pfx + ".qkv").view(b, s, n, 3 * d).transpose(1, 2)   # [b,n,s,3d]
    q, k, v = qkv.chunk(3, dim=-1)
    cos, sin = rotary_tables(s, d)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    return _lin(_merge(attention(q, k, v, masked)), hf, pfx + ".o")


def cross_attn(x, enc, hf, pfx, n, d, masked):
    b, s, _ = x.shape
    se = enc.shape[1]
    q = _lin(x, hf, pfx + ".q").view(b, s, n, d).transpose(1, 2)
    kv = _lin(enc, hf, pfx + ".kv").view(b, se, n, 2 * d).transpose(1, 2)
    k, v = kv.chunk(2, dim=-1)
    return _lin(_merge(attention(q, k, v, masked)), hf, pfx + ".o")


def mlp(x, hf, pfx):
    a, b = _lin(x, hf, pfx + ".fc_in", bias=False).chunk(2, dim=-1)
    return _lin(Fn.silu(a) * b, hf, pfx + ".fc_out", bias=False)


def count_blocks(hf, stack):
    return len({k.split(".")[2] for k in hf if k.startswith(stack + ".block.")})


def to_fp32(hf):
    return {k: v.float() for k, v in hf.items()}


def encode(hf, input_ids, attention_mask, n, d):
    x = Fn.embedding(input_ids, hf["shared_embedding.weight"])
    key_pad = (attention_mask == 0)[:, None, None, :]                          # [b,1,1,s]
    for i in range(count_blocks(hf, "encoder")):
        p = f"encoder.block.{i}"
        x = x + self_attn(_ln(x, hf, p + ".input_layernorm"), hf, p + ".self_attn", n, d, key_pad)
        x = x + mlp(_ln(x, hf, p + ".post_attn_layernorm"), hf, p + ".mlp")
    return _ln(x, hf, "encoder.final_layernorm")


def decode(hf, enc, attention_mask, decoder_input_ids, decoder_attention_mask, n, d):
    b, t = decoder_input_ids.shape
    if decoder_attention_mask is None:
        decoder_attention_mask = torch.ones_like(decoder_input_ids)
    causal = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)[None, None]
    self_masked = causal | (decoder_attention_mask == 0)[:, None, None, :]
    cross_masked = (attention_mask == 0)[:, None, None, :]
    x = Fn.embedding(decoder_input_ids, hf["shared_embedding.weight"])
    for i in range(count_blocks(hf, "decoder")):
        p = f"decoder.block.{i}"
        x = x + self_attn(_ln(x, hf, p + ".input_layernorm"), hf, p + ".self_attn", n, d, self_masked)
        x = x + cross_attn(_ln(x, hf, p + ".post_attn_layernorm"), enc, hf, p + ".inter_attn", n, d, cross_masked)
        x = x + mlp(_ln(x, hf, p + ".post_inter_attn_layernorm"), hf, p + ".mlp")
    x = _ln(x, hf, "decoder.final_layernorm")
    return Fn.linear(x, hf["lm_head.weight"], hf["lm_head.bias"]).float()


@torch.no_grad()
def logits(hf, input_ids, attention_mask, decoder_input_ids, heads, kv_channels, decoder_attention_mask=None):
    """hf: dict of HF tensors (any dtype; upcast to fp32 here).  Returns fp32 logits [B, T, V]."""
    hf = to_fp32(hf)
    enc = encode(hf, input_ids, attention_mask, heads, kv_channels)
    return decode(hf, enc, attention_mask, decoder_input_ids, decoder_attention_mask, heads, kv_channels)


@torch.no_grad()
def greedy(hf, input_ids, heads, kv_channels, steps, start_id=0, eos_id=1, vocab_limit=None):
    """Greedy decoding of one prompt (no cache: the whole prefix is re-run each step, same maths).
    Returns (generated ids, smallest top1-top2 logit margin seen).  Argmax runs over ALL padded-vocab logits, or
    over ids < vocab_limit when given; stops early after emitting eos."""
    hf = to_fp32(hf)
    ids = torch.tensor([input_ids], dtype=torch.long)
    mask = torch.ones_like(ids)
    enc = encode(hf, ids, mask, heads, kv_channels)
    dec = [start_id]
    out, margin = [], float("inf")
    for _ in range(steps):
        lg = decode(hf, enc, mask, torch.tensor([dec]), None, heads, kv_channels)[0, -1]
        if vocab_limit is not None:
            lg = lg[:vocab_limit]
        top = torch.topk(lg, 2)
        margin = min(margin, float(top.values[0] - top.values[1]))
        nxt = int(top.indices[0])
        out.append(nxt)
        dec.append(nxt)
        if nxt == eos_id:
            break
    return out, margin


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="recompute reference logits from HF weights and compare")
    c.add_argument("hf")
    c.add_argument("reference")
    c.add_argument("--heads", type=int, required=True)
    c.add_argument("--kv-channels", type=int, required=True)
    c.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args(argv)
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    import fixturelib as F
    hf = F.read_safetensors(a.hf)
    ref = F.read_safetensors(a.reference)
    lg = logits(hf, ref["input_ids"], ref["attention_mask"], ref["decoder_input_ids"], a.heads, a.kv_channels)
    diff = float((lg - ref["logits"]).abs().max()) if lg.shape == ref["logits"].shape else float("inf")
    print(json.dumps({"max_abs_diff": diff, "shape": list(lg.shape), "ref_shape": list(ref["logits"].shape)}))
    return 0 if diff <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())
