"""fixturelib.py - helpers shared by the fixture scripts (make_fixtures.py, check_fixtures.py, torch_check.py,
openba_reference.py).  Not a CLI.  Must be imported by Debian's interpreter /usr/bin/python3 (torch + numpy).

What lives here and why:
  * install_megatron_stub(): a real Python module `megatron.core.enums` with `class ModelType(enum.Enum)`, exactly as
    OpenBA's Megatron fork defines it, so that pickling `args.model_type` records the global
    `megatron.core.enums ModelType` and torch.load can read it back without Megatron installed; likewise
    `megatron.core.transformer.enums.AttnBackend` (Megatron-Core GPT checkpoints, scripts/fixtures/gpt.py).
  * a minimal safetensors writer and reader (8-byte LE header length, JSON header padded with spaces to a multiple
    of 8, tensors back to back) written from the format description, independent of the `safetensors` package.
  * tensor_bytes()/tensor_sha256(): the canonical byte form of a tensor used everywhere in the fixtures: C-order,
    little-endian, the tensor's own dtype (bf16 as its 2 raw bytes).
"""
import enum
import hashlib
import json
import os
import struct
import sys
import types

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------------------------
# dtype tables
# ----------------------------------------------------------------------------------------------------------------
ST_DTYPE = {  # torch dtype -> safetensors dtype name
    torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}
TORCH_DTYPE = {v: k for k, v in ST_DTYPE.items()}
# numpy dtype with the same bytes (bf16 has none: use its raw 16 bits as int16)
NP_VIEW = {
    torch.float16: np.float16, torch.bfloat16: np.int16, torch.float32: np.float32, torch.float64: np.float64,
    torch.int64: np.int64, torch.int32: np.int32, torch.int16: np.int16, torch.int8: np.int8,
    torch.uint8: np.uint8, torch.bool: np.bool_,
}


def tensor_bytes(t):
    """C-order little-endian bytes of a CPU tensor in its own dtype."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    a = t.numpy()
    return a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def tensor_sha256(t):
    return hashlib.sha256(tensor_bytes(t)).hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bench_weights(dtype, seed=0):
    """The bench checkpoints' random weights: N(0, 0.02) in `dtype` from one seeded generator (bytes moved, not quality)."""
    g = torch.Generator().manual_seed(seed)
    return lambda *shape: (torch.randn(*shape, generator=g) * 0.02).to(dtype)


# ----------------------------------------------------------------------------------------------------------------
# megatron.core.enums stub
# ----------------------------------------------------------------------------------------------------------------
def install_megatron_stub():
    """Register megatron, megatron.core and megatron.core.enums (with ModelType) in sys.modules; idempotent."""
    if "megatron.core.enums" in sys.modules:
        return sys.modules["megatron.core.enums"].ModelType
    megatron = sys.modules.setdefault("megatron", types.ModuleType("megatron"))
    core = sys.modules.setdefault("megatron.core", types.ModuleType("megatron.core"))
    enums = types.ModuleType("megatron.core.enums")

    class ModelType(enum.Enum):  # same as OpenBA-v2 training/megatron/core/enums.py
        encoder_or_decoder = 1
        encoder_and_decoder = 2

        def __reduce_ex__(self, proto):
            # Pickle as Python <= 3.10 did (OpenBA trained on those): GLOBAL 'megatron.core.enums ModelType',
            # (2,) REDUCE.  Python >= 3.11 would write getattr(ModelType, 'encoder_and_decoder') instead.
            return self.__class__, (self._value_,)

    ModelType.__module__ = "megatron.core.enums"
    ModelType.__qualname__ = "ModelType"
    enums.ModelType = ModelType
    sys.modules["megatron.core.enums"] = enums
    megatron.core = core
    core.enums = enums
    _install_transformer_enums(core)
    return ModelType


def _install_transformer_enums(core):
    """megatron.core.transformer.enums.AttnBackend as Megatron-Core 0.17 defines it (args.attention_backend of every
    Megatron-Core GPT checkpoint).  Megatron-Core 0.17's ModelType has only encoder_or_decoder = 1, which pickles to
    the same bytes as the OpenBA member above, so one stub serves both."""
    transformer = sys.modules.setdefault("megatron.core.transformer", types.ModuleType("megatron.core.transformer"))
    tenums = types.ModuleType("megatron.core.transformer.enums")

    class AttnBackend(enum.Enum):  # megatron/core/transformer/enums.py @ core_v0.17.0
        flash = 1
        fused = 2
        unfused = 3
        local = 4
        auto = 5

        def __reduce_ex__(self, proto):
            # Python >= 3.12 (what Megatron-Core 0.17 runs on) pickles enums as Class(value): GLOBAL + (5,) REDUCE
            return self.__class__, (self._value_,)

    AttnBackend.__module__ = "megatron.core.transformer.enums"
    AttnBackend.__qualname__ = "AttnBackend"
    tenums.AttnBackend = AttnBackend
    sys.modules["megatron.core.transformer.enums"] = tenums
    core.transformer = transformer
    transformer.enums = tenums


# ----------------------------------------------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------------------------------------------
def write_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> CPU tensor.  Layout like the reference implementation: sorted by descending element
    size, then by name, so every tensor starts at a multiple of its element size (the header is padded to 8)."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name in sorted(tensors, key=lambda k: (-tensors[k].element_size(), k)):
        t = tensors[name]
        b = tensor_bytes(t)
        header[name] = {"dtype": ST_DTYPE[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    hjson = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    hjson += b" " * ((-len(hjson)) % 8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def read_safetensors(path, with_header=False):
    """Returns an ordered dict name -> tensor (header order), and optionally the parsed header."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    end_max = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = TORCH_DTYPE[info["dtype"]]
        b, e = info["data_offsets"]
        end_max = max(end_max, e)
        arr = np.frombuffer(data[base + b:base + e], dtype=np.dtype(NP_VIEW[dt]).newbyteorder("<"))
        t = torch.from_numpy(arr.copy())
        if dt == torch.bfloat16:
            t = t.view(torch.bfloat16)
        out[name] = t.reshape(info["shape"])
    if end_max != len(data) - base:
        raise ValueError(f"{path}: buffer is {len(data) - base} bytes but offsets end at {end_max}")
    return (out, header) if with_header else out


# ----------------------------------------------------------------------------------------------------------------
# checkpoint loading
# ----------------------------------------------------------------------------------------------------------------
def torch_load(path):
    """torch.load of a fixture checkpoint, weights_only=False, CPU (the Megatron fixtures carry cuda:N locations)."""
    install_megatron_stub()
    return torch.load(path, map_location="cpu")
