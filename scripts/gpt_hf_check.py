#!/usr/bin/env python3
"""gpt_hf_check.py - prove the GPT fixtures' ground truth with real transformers.

Run:   ~/.cache/megahub/venv-ref/bin/python scripts/gpt_hf_check.py [--fixtures fixtures] [--json OUT.json]
       exit 0 = every check passed, 1 = a check failed (listed).  Needs the reference venv (scripts/make_ref_venv.sh).

What:  for every model of fixtures/gpt/cases.json, the case that carries expected-hf.safetensors is turned into an HF
       model directory (config.json = expected-hf.json's `config`, model.safetensors = the expected tensors) and
       loaded with AutoModelForCausalLM.from_pretrained (no trust_remote_code) in fp32; the loader must report no
       missing / unexpected keys and must pick the expected class (LlamaForCausalLM / Qwen2ForCausalLM /
       Qwen3ForCausalLM).  Its logits on reference/<model>.safetensors' input_ids must equal the plain-torch
       Megatron-Core forward stored there: max |diff| <= 1e-4 and top-1 equal at every position.  Then every other
       case of the model must list exactly the same HF tensors (names, dtypes, shapes, sha256) in expected-hf.json,
       and the safetensors must hash to that list.  The demo model's tokenizer must load and give input_ids of the
       reference's first row for its text.  Negative controls (gate/up swapped, q/k/v split naively, rope scaling
       dropped, another rope_theta) must each move the logits beyond the tolerance, so the comparison can fail.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOL = 1e-4


def sha(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def check_model(gdir, mname, info, cases, problems):
    full = [n for n, c in cases.items() if c["model"] == mname
            and json.load(open(os.path.join(gdir, n, "expected-hf.json")))["safetensors"]]
    assert full, mname
    case = full[0]
    exp = json.load(open(os.path.join(gdir, case, "expected-hf.json")))
    tensors = load_file(os.path.join(gdir, case, exp["safetensors"]))
    listed = [(t["name"], t["dtype"], t["shape"], t["sha256"]) for t in exp["tensors"]]
    st_dt = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
    have = sorted((k, st_dt[v.dtype], list(v.shape), sha(v)) for k, v in tensors.items())
    if sorted(listed) != have:
        problems.append(f"{case}: expected-hf.safetensors differs from its expected-hf.json tensor list")
    for n, c in cases.items():
        if c["model"] == mname and n != case:
            other = json.load(open(os.path.join(gdir, n, "expected-hf.json")))
            if [(t["name"], t["dtype"], t["shape"], t["sha256"]) for t in other["tensors"]] != listed:
                problems.append(f"{n}: HF tensors differ from {case}'s")
            if other["config"] != exp["config"]:
                problems.append(f"{n}: HF config differs from {case}'s")
    model, load_info = load_hf(exp["config"], tensors)
    cls = type(model).__name__
    if cls != exp["architecture"]:
        problems.append(f"{mname}: transformers built {cls}, expected {exp['architecture']}")
    bad = {k: v for k, v in load_info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys",
                                                              "error_msgs")}
    if bad:
        problems.append(f"{mname}: loading info {bad}")
    ref = load_file(os.path.join(gdir, info["reference"]))
    with torch.no_grad():
        got = model(input_ids=ref["input_ids"]).logits.float()
    want = ref["logits"]
    if got.shape != want.shape:
        problems.append(f"{mname}: logits shape {tuple(got.shape)} vs reference {tuple(want.shape)}")
        return {"case": case, "class": cls, "error": "shape"}
    diff = float((got - want).abs().max())
    top1 = float((got.argmax(-1) == want.argmax(-1)).float().mean())
    if diff > TOL or top1 != 1.0:
        problems.append(f"{mname}: max |logit diff| {diff:.3g} (tol {TOL}), top-1 agreement {top1:.3f}")
    res = {"case": case, "class": cls, "max_abs_diff": diff, "top1_agreement": top1,
           "positions": int(want.shape[0] * want.shape[1]), "vocab": int(want.shape[-1]),
           "transformers_dtype": "float32", "weights_dtype": exp["megatron"]["dtype"]}
    if info.get("tokenizer"):
        tok = AutoTokenizer.from_pretrained(os.path.join(gdir, info["tokenizer"]))
        text = "The licensor grants you a worldwide, royalty-free license."
        ids = tok(text).input_ids[:12]
        if ids != ref["input_ids"][0].tolist() or len(tok) != info["true_vocab"]:
            problems.append(f"{mname}: tokenizer gives {ids} (len {len(tok)}), reference row 0 is "
                            f"{ref['input_ids'][0].tolist()} (vocab {info['true_vocab']})")
        res["tokenizer_len"] = len(tok)
    res["controls"] = controls(exp["config"], tensors, ref, want, info, problems, mname)
    return res


def load_hf(config, tensors):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(config, f, indent=1)
        save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        model, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, output_loading_info=True)
    return model.eval(), info


def controls(config, tensors, ref, want, info, problems, mname):
    """Negative controls: the layout mistakes a converter can make must move the logits far beyond the tolerance,
    or the comparison above would prove nothing.  Returns {mistake: max |logit diff| vs the reference}."""
    t = {k: v.clone() for k, v in tensors.items()}
    out = {}

    def run(name, tt, cfg=config):
        m, _ = load_hf(cfg, tt)
        with torch.no_grad():
            out[name] = float((m(input_ids=ref["input_ids"]).logits.float() - want).abs().max())

    p = "model.layers.0."
    sw = dict(t)
    sw[p + "mlp.gate_proj.weight"], sw[p + "mlp.up_proj.weight"] = t[p + "mlp.up_proj.weight"], t[p + "mlp.gate_proj.weight"]
    run("gate/up swapped (layer 0)", sw)
    nh, ng, d = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    if 1 < ng < nh:
        # re-fuse q/k/v in Megatron's per-group order, then split it naively as [all q; all k; all v] (with one
        # group, or with MHA where q/k/v stay whole per head group, the orders coincide or differ per head: skip)
        q, k, v = t[p + "self_attn.q_proj.weight"], t[p + "self_attn.k_proj.weight"], t[p + "self_attn.v_proj.weight"]
        per = nh // ng
        fused = torch.cat([torch.cat([q.view(ng, per * d, -1)[g], k.view(ng, d, -1)[g], v.view(ng, d, -1)[g]])
                           for g in range(ng)])
        nv = dict(t)
        nv[p + "self_attn.q_proj.weight"] = fused[:nh * d].contiguous()
        nv[p + "self_attn.k_proj.weight"] = fused[nh * d:(nh + ng) * d].contiguous()
        nv[p + "self_attn.v_proj.weight"] = fused[(nh + ng) * d:].contiguous()
        run("naive q/k/v split (layer 0)", nv)
    if config.get("rope_scaling"):
        run("rope_scaling dropped", t, {k: v for k, v in config.items() if k != "rope_scaling"})
    cfg = dict(config, rope_theta=10000.0) if config["rope_theta"] != 10000.0 else dict(config, rope_theta=500000.0)
    run("rope_theta changed", t, cfg)
    for name, dv in out.items():
        if not dv > TOL:
            problems.append(f"{mname}: control '{name}' moved the logits only {dv:.3g} (<= {TOL}): no proof")
    return out


def main():
    ap = argparse.ArgumentParser(description="check the GPT fixtures against transformers")
    ap.add_argument("--fixtures", default=os.path.join(ROOT, "fixtures"))
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()
    import transformers
    gdir = os.path.join(a.fixtures, "gpt")
    with open(os.path.join(gdir, "cases.json")) as f:
        table = json.load(f)
    problems, results = [], {}
    for mname, info in table["models"].items():
        results[mname] = check_model(gdir, mname, info, table["cases"], problems)
        r = results[mname]
        print(f"{mname:6s} {r['case']:10s} {r['class']:17s} max|diff| {r.get('max_abs_diff', float('nan')):.3g} "
              f"top-1 {r.get('top1_agreement', 0):.3f} ({r.get('positions')} positions, vocab {r.get('vocab')})")
        print("       controls: " + ", ".join(f"{k} {v:.3g}" for k, v in r.get("controls", {}).items()))
    out = {"torch": torch.__version__, "transformers": transformers.__version__, "tolerance": TOL,
           "models": results, "problems": problems}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    for p in problems:
        print("FAIL:", p)
    print("OK" if not problems else "MISMATCH", f"(torch {torch.__version__}, transformers {transformers.__version__})")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
