#!/usr/bin/python3
"""torch_check.py - print a JSON summary of what PyTorch (or our independent safetensors parser) finds in a file.
The TypeScript tests call it in CI to compare their own readers with torch.

Run (Debian's interpreter, it has torch):
  /usr/bin/python3 scripts/torch_check.py load <file.pt>          torch.load(weights_only=False, map_location='cpu')
                                                                  with a stub `megatron.core.enums` registered
  /usr/bin/python3 scripts/torch_check.py safetensors <file>      parse a .safetensors file

NEVER point `load` at fixtures/hostile/*: weights_only=False runs whatever the pickle says.  `load` refuses paths
containing '/hostile/' unless --i-know-it-is-hostile is given (then it does not load, it only lists the globals).

Output: {"file", "kind": "torch"|"safetensors", "format": "zip"|"legacy-stream"|"legacy-tar"|"safetensors",
         "entries": [...]} where entries are in traversal order (depth first, container before its children), each
  {"path": [key, key, ...]  (the keys from the root; list indices as integers),
   "type": "dict" | "list" | "tuple" | "namespace" | "tensor" | "ndarray" | "dtype" | "enum" | "scalar" | "object",
   ...}
  dict:      "class" ("dict" or "collections.OrderedDict"), "keys" (in order; non-str keys as repr),
             "attrs" (names of instance attributes, e.g. ["_metadata"] on module state_dicts)
  list/tuple:"len"
  namespace: "fields" {name: JSON value, or repr() for non-JSON values such as torch.float16 / enums}
  tensor:    "dtype" (safetensors name: F16, BF16, F32, F64, I64, I32, I16, I8, U8, BOOL), "shape", "stride",
             "storage_offset", "sha256" (of the C-order little-endian bytes), "requires_grad"
  ndarray:   "dtype", "shape", "sha256"
  dtype:     "value" e.g. "torch.float16";  enum: "class", "name", "value"
  scalar:    "value" (int/float/str/bool/None; bytes as {"bytes_hex": ...}; NaN/inf as strings)
  object:    "class", "repr"
Namespaces and tuples of scalars are summarised in one entry (their items are not listed separately).
"""
import argparse
import enum
import json
import math
import os
import sys
import tarfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _json_scalar(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return repr(v)
    if isinstance(v, bytes):
        return {"bytes_hex": v.hex()}
    return v


def _is_scalar(v):
    return v is None or isinstance(v, (bool, int, float, str, bytes))


def _jsonable(v):
    if _is_scalar(v):
        return _json_scalar(v)
    if isinstance(v, (list, tuple)) and all(_is_scalar(x) for x in v):
        return [_json_scalar(x) for x in v]
    if isinstance(v, dict) and all(isinstance(k, str) and _is_scalar(x) for k, x in v.items()):
        return {k: _json_scalar(x) for k, x in v.items()}
    return repr(v)


def summarize(obj, entries, path):
    import numpy as np
    import torch
    import fixturelib as F

    if torch.is_tensor(obj):
        entries.append({"path": path, "type": "tensor", "dtype": F.ST_DTYPE.get(obj.dtype, str(obj.dtype)),
                        "shape": list(obj.shape), "stride": list(obj.stride()),
                        "storage_offset": obj.storage_offset(), "sha256": F.tensor_sha256(obj),
                        "requires_grad": bool(obj.requires_grad)})
    elif isinstance(obj, argparse.Namespace):
        entries.append({"path": path, "type": "namespace", "fields": {k: _jsonable(v) for k, v in vars(obj).items()}})
    elif isinstance(obj, dict):
        cls = type(obj)
        name = cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
        entries.append({"path": path, "type": "dict", "class": name,
                        "keys": [k if isinstance(k, str) else repr(k) for k in obj.keys()],
                        "attrs": sorted(getattr(obj, "__dict__", {}).keys())})
        for k, v in obj.items():
            summarize(v, entries, path + [k if isinstance(k, (str, int)) else repr(k)])
    elif isinstance(obj, (list, tuple)):
        t = "list" if isinstance(obj, list) else "tuple"
        if all(_is_scalar(x) for x in obj):
            entries.append({"path": path, "type": t, "len": len(obj), "value": [_json_scalar(x) for x in obj]})
        else:
            entries.append({"path": path, "type": t, "len": len(obj)})
            for i, v in enumerate(obj):
                summarize(v, entries, path + [i])
    elif isinstance(obj, np.ndarray):
        import hashlib
        a = np.ascontiguousarray(obj)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        entries.append({"path": path, "type": "ndarray", "dtype": str(a.dtype), "shape": list(a.shape),
                        "sha256": hashlib.sha256(a.tobytes()).hexdigest()})
    elif isinstance(obj, torch.dtype):
        entries.append({"path": path, "type": "dtype", "value": str(obj)})
    elif isinstance(obj, enum.Enum):
        cls = type(obj)
        entries.append({"path": path, "type": "enum", "class": f"{cls.__module__}.{cls.__qualname__}",
                        "name": obj.name, "value": _jsonable(obj.value)})
    elif _is_scalar(obj):
        entries.append({"path": path, "type": "scalar", "value": _json_scalar(obj)})
    else:
        cls = type(obj)
        entries.append({"path": path, "type": "object", "class": f"{cls.__module__}.{cls.__qualname__}",
                        "repr": repr(obj)[:200]})


def file_format(path):
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04":
        return "zip"
    if tarfile.is_tarfile(path):
        return "legacy-tar"
    return "legacy-stream"


def cmd_load(path, hostile_ok):
    fmt = file_format(path)
    if "/hostile/" in os.path.abspath(path).replace(os.sep, "/"):
        if not hostile_ok:
            raise SystemExit("refusing to torch.load a hostile fixture (see --i-know-it-is-hostile)")
        import pickletools
        with zipfile.ZipFile(path) as z:
            pkl = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
        glob = [arg for op, arg, _ in pickletools.genops(pkl) if op.name == "GLOBAL"]
        return {"file": path, "kind": "torch", "format": fmt, "loaded": False, "globals": glob}
    import fixturelib as F
    obj = F.torch_load(path)
    entries = []
    summarize(obj, entries, [])
    return {"file": path, "kind": "torch", "format": fmt, "entries": entries}


def cmd_safetensors(path):
    import fixturelib as F
    tensors, header = F.read_safetensors(path, with_header=True)
    entries = []
    for name, t in tensors.items():
        summarize(t, entries, [name])
    return {"file": path, "kind": "safetensors", "format": "safetensors",
            "metadata": header.get("__metadata__"), "entries": entries}


def main(argv=None):
    ap = argparse.ArgumentParser(description="JSON summary of a .pt (via torch.load) or .safetensors file")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a1 = sub.add_parser("load")
    a1.add_argument("file")
    a1.add_argument("--i-know-it-is-hostile", action="store_true")
    a2 = sub.add_parser("safetensors")
    a2.add_argument("file")
    a = ap.parse_args(argv)
    res = cmd_load(a.file, a.i_know_it_is_hostile) if a.cmd == "load" else cmd_safetensors(a.file)
    json.dump(res, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
