#!/usr/bin/python3
"""Reference float conversions computed by torch, for megahub's cast kernels.

Run with Debian's interpreter (it has torch): /usr/bin/python3 scripts/make_cast_fixture.py [out.safetensors]
Writes fixtures/casts/casts.safetensors holding source values and torch's .to() results:
  f32 (F32), f32_to_f16 (F16), f32_to_bf16 (BF16), f16_all (F16, every bit pattern), f16_to_bf16 (BF16),
  bf16_all (BF16, every bit pattern), bf16_to_f16 (F16), f64 (F64), f64_to_f16 (F16), f64_to_bf16 (BF16).
The f32 set mixes random normals of many scales with hand-picked edge cases: rounding ties, subnormals,
the largest finite values and just past them (overflow to inf), signed zeros, infinities.
"""
import json, random, struct, sys
import torch

out = sys.argv[1] if len(sys.argv) > 1 else "fixtures/casts/casts.safetensors"

# Python's own Mersenne Twister, not torch.randn: the values must not depend on which CPU kernels torch picks,
# since CI regenerates this file and compares it byte for byte.
rng = random.Random(20261128)
scales = [1e-8, 1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 6e4, 1e6, 1e30]
rand = torch.tensor([rng.gauss(0.0, 1.0) * s for s in scales for _ in range(2000)], dtype=torch.float64)
edges = []
# f16 ties: halfway between consecutive f16 values, in normal and subnormal ranges
f16 = torch.arange(0, 0x7C00, 97, dtype=torch.int32).to(torch.int16).view(torch.float16).double()
edges += ((f16[:-1] + f16[1:]) / 2).tolist()
# bf16 ties
bf = torch.arange(0, 0x7F80, 89, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).double()
edges += ((bf[:-1] + bf[1:]) / 2).tolist()
edges += [0.0, -0.0, float("inf"), float("-inf"), 65504.0, 65519.99, 65520.0, 70000.0, -65520.0,
          5.96e-8, 2.98e-8, 2.99e-8, 1e-45, 3.4e38, -3.4e38, 3.3895314e38, 3.3961776e38]
f64 = torch.cat([rand, torch.tensor(edges, dtype=torch.float64)])
f32 = f64.float()

f16_all = torch.arange(0, 65536, dtype=torch.int32).to(torch.int16).view(torch.float16)
bf16_all = torch.arange(0, 65536, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
# NaN payloads are not preserved by every path; keep them out of the bit-exact comparison
f16_all = f16_all[~torch.isnan(f16_all)]
bf16_all = bf16_all[~torch.isnan(bf16_all)]

tensors = {
    "f32": f32, "f32_to_f16": f32.half(), "f32_to_bf16": f32.bfloat16(),
    "f16_all": f16_all, "f16_to_bf16": f16_all.bfloat16(), "f16_to_f32": f16_all.float(),
    "bf16_all": bf16_all, "bf16_to_f16": bf16_all.half(), "bf16_to_f32": bf16_all.float(),
    "f64": f64, "f64_to_f16": f64.half(), "f64_to_bf16": f64.bfloat16(), "f64_to_f32": f64.float(),
}
names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
header, blobs, off = {}, [], 0
for k, t in tensors.items():
    b = t.contiguous().view(torch.uint8).numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
    header[k] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for b in blobs:
        f.write(b)
print(f"wrote {out}: {len(f32)} f32 values, {len(f16_all)} f16, {len(bf16_all)} bf16")
