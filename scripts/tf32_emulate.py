#!/usr/bin/python3
"""tf32_emulate.py - how far TF32 matmuls move the fixtures' logits, to ground verify's --tf32 gates (tolerances.ts).

CUDA's fp32 GEMMs with TF32 allowed round both operands to TF32 (10 explicit mantissa bits, round-to-nearest as
cuBLAS converts) and accumulate in fp32.  This runs scripts/openba_reference.py's maths twice on a converted HF model
dir: plain fp32, and with every Fn.linear / torch.matmul operand rounded to TF32 first, and prints the metrics verify
uses (max |diff| as a multiple of the reference std, NMSE, mean KL, min cosine, top-1 agreement).  No GPU involved:
this emulates the rounding, it does not measure a GPU (kernels may also reorder the sums).

  /usr/bin/python3 scripts/tf32_emulate.py <hf-dir> <fixtures/reference/NAME.safetensors>
"""
import json
import sys

import torch
import torch.nn.functional as Fn

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import fixturelib as F  # noqa: E402
import openba_reference as R  # noqa: E402


def to_tf32(x):
    """Round fp32 to the nearest TF32 value (ties to even): keep the top 10 mantissa bits."""
    x = x.float().contiguous()
    b = x.view(torch.int32)
    lsb = (b >> 13) & 1
    return ((b + 0xFFF + lsb) & ~0x1FFF).view(torch.float32)


def main(hf_dir, ref_path):
    cfg = json.load(open(f"{hf_dir}/config.json"))
    hf = F.read_safetensors(f"{hf_dir}/model.safetensors")
    ref = F.read_safetensors(ref_path)
    args = (ref["input_ids"], ref["attention_mask"], ref["decoder_input_ids"], cfg["num_heads"], cfg["kv_channels"])
    exact = R.logits(hf, *args)
    linear, matmul = Fn.linear, torch.matmul
    Fn.linear = lambda x, w, b=None: linear(to_tf32(x), to_tf32(w), b)
    torch.matmul = lambda a, b: matmul(to_tf32(a), to_tf32(b))
    try:
        tf32 = R.logits(hf, *args)
    finally:
        Fn.linear, torch.matmul = linear, matmul
    d = (tf32 - exact).double()
    e = exact.double()
    v = e.shape[-1]
    p = torch.log_softmax(e.reshape(-1, v), -1)
    q = torch.log_softmax(tf32.double().reshape(-1, v), -1)
    cos = Fn.cosine_similarity(e.reshape(-1, v), tf32.double().reshape(-1, v), dim=-1)
    print(json.dumps({
        "model": hf_dir,
        "max_abs": float(d.abs().max()),
        "max_abs_per_std": float(d.abs().max() / e.std()),
        "nmse": float((d ** 2).mean() / e.var()),
        "mean_kl": float((p.exp() * (p - q)).sum(-1).mean()),
        "min_cosine": float(cos.min()),
        "top1": float((e.reshape(-1, v).argmax(-1) == tf32.reshape(-1, v).argmax(-1)).double().mean()),
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
