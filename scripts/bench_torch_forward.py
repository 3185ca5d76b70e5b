#!/usr/bin/python3
"""Times one teacher-forced forward pass of an HF OpenBA model in PyTorch on CPU (the reference the ONNX path is
compared with in `npm run bench`), using scripts/openba_reference.py's forward and the same inputs file.

  /usr/bin/python3 scripts/bench_torch_forward.py <hf-dir> <inputs.safetensors> --heads N --kv-channels D
Prints one JSON line: {"median_ms": …, "runs_ms": […], "load_ms": …}.
"""
import argparse, json, os, sys, time
import torch

sys.path.insert(0, os.path.dirname(__file__))
import openba_reference as ref  # noqa: E402
from fixturelib import read_safetensors  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("hf")
ap.add_argument("inputs")
ap.add_argument("--heads", type=int, required=True)
ap.add_argument("--kv-channels", type=int, required=True)
ap.add_argument("--iterations", type=int, default=3)
a = ap.parse_args()
torch.set_num_threads(os.cpu_count() or 1)  # like ORT, use every core

t0 = time.perf_counter()
weights = ref.to_fp32(read_safetensors(os.path.join(a.hf, "model.safetensors")))
x = read_safetensors(a.inputs)
load_ms = (time.perf_counter() - t0) * 1000
args = (weights, x["input_ids"], x["attention_mask"], x["decoder_input_ids"], a.heads, a.kv_channels)
with torch.no_grad():
    ref.logits(*args)
    runs = []
    for _ in range(a.iterations):
        t = time.perf_counter()
        ref.logits(*args)
        runs.append((time.perf_counter() - t) * 1000)
runs.sort()
print(json.dumps({"median_ms": runs[len(runs) // 2], "runs_ms": runs, "load_ms": load_ms, "threads": torch.get_num_threads()}))
