#!/usr/bin/env python3
"""gpt_reference.py - reference logits and greedy ids for HF decoder-only models, computed by transformers itself.

Run with the reference venv (scripts/make_ref_venv.sh: torch 2.x, transformers 5.x):
  python scripts/gpt_reference.py reference <hf-dir> <out.safetensors> [--compute fp32|native] [--inputs FILE]
      AutoModelForCausalLM.from_pretrained(<hf-dir>) runs a padded batch (or the input_ids / attention_mask of
      --inputs) and writes input_ids I64 [B,S], attention_mask I64 [B,S] and logits F32 [B,S,V] - the file
      `megahub verify <hf-dir> --reference <out>` reads. --compute fp32 (default) upcasts the weights, so every
      dtype is held to the exact gates; native runs in the stored dtype (metadata compute_dtype says which).
  python scripts/gpt_reference.py greedy <hf-dir> --ids 1,2,3 [--max-new-tokens N]
      prints {"generated_ids": [...], "min_margin": m}: model.generate(do_sample=False) in fp32, the new ids only.
  python scripts/gpt_reference.py refs <out-root> <hf-dir>... [--make-moe DIR] [--ids 1,2,3] [--max-new-tokens N]
      for each dir (the MoE dirs test/verify-moe.test.ts converts), in one process: the fp32 reference file, the
      native one when the weights are not fp32, and greedy ids of --ids; prints {dir: {refs, prompt_ids, greedy}}.
      --make-moe first writes a tiny random Qwen3-MoE there with transformers' own save_pretrained (bf16, 16
      experts, top-4, decoder_sparse_step 2), so a dir in the layout transformers itself saves is checked too.
  python scripts/gpt_reference.py make <out-root>
      writes the tiny random test models (Llama GQA + llama3 RoPE, Qwen2 bias + tied, Qwen3 QK-norm with
      head_dim != hidden/heads, Mistral MQA + sliding window + linear RoPE) in fp32 and fp16/bf16, each with a
      byte-level BPE tokenizer, its reference files and greedy ids, and prints a JSON summary. test/verify-gpt.test.ts
      calls this at test time; nothing it writes is committed.

Why transformers and not our own forward: the ONNX graph was written from transformers' modeling code, so the
referee must be that code running, not a second transcription of it.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

# A padded batch: row 0 full, row 1 right-padded, row 2 left-padded (its pad queries see no key; verify skips them).
BATCH, SEQ = 3, 12


def padded_batch(vocab, seed=7):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (BATCH, SEQ), generator=g)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, SEQ - 4:] = 0
    mask[2, :3] = 0
    ids[mask == 0] = 0
    return ids, mask


def load(hf_dir, compute):
    from transformers import AutoModelForCausalLM
    dtype = torch.float32 if compute == "fp32" else "auto"
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype)
    model.eval()
    return model


@torch.no_grad()
def reference(hf_dir, out, compute="fp32", inputs=None):
    model = load(hf_dir, compute)
    if inputs is not None:
        from safetensors.torch import load_file
        t = load_file(inputs)
        ids = t["input_ids"].long()
        mask = t.get("attention_mask", torch.ones_like(ids)).long()
    else:
        ids, mask = padded_batch(model.config.vocab_size)
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    save_file({"input_ids": ids.contiguous(), "attention_mask": mask.contiguous(), "logits": logits.contiguous()}, out,
              metadata={"compute_dtype": dtype, "producer": "scripts/gpt_reference.py (transformers)"})
    return logits


@torch.no_grad()
def greedy(hf_dir, ids, max_new_tokens):
    model = load(hf_dir, "fp32")
    x = torch.tensor([ids])
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=max_new_tokens,
                         return_dict_in_generate=True, output_logits=True)
    new = out.sequences[0, len(ids):].tolist()
    margin = min(float(l[0].topk(2).values[0] - l[0].topk(2).values[1]) for l in out.logits)
    return {"generated_ids": new, "min_margin": margin}


def make_tokenizer(out_dir, vocab, corpus):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    fast.save_pretrained(out_dir)
    return fast


# name -> (config class, kwargs, dtypes)
def variants():
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config
    common = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, bos_token_id=1,
                  eos_token_id=2, pad_token_id=0, max_position_embeddings=64)
    return {
        "llama": (LlamaConfig, dict(common, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                                    rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
                  ["float32", "bfloat16"]),
        "qwen2": (Qwen2Config, dict(common, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                    rope_theta=1000000.0), ["float32", "float16"]),
        "qwen3": (Qwen3Config, dict(common, num_attention_heads=4, num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-6),
                  ["float32", "bfloat16"]),
        "mistral": (MistralConfig, dict(common, num_attention_heads=4, num_key_value_heads=1, sliding_window=5,
                                        rope_theta=10000.0, rope_scaling={"rope_type": "linear", "factor": 2.0}),
                    ["float32", "float16"]),
    }


@torch.no_grad()
def randomize(model, seed):
    # transformers initialises biases to zero and norms to one, which would let a graph that drops them pass.
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif name.endswith("embed_tokens.weight"):
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.15 * torch.randn(p.shape, generator=g))


def make(root):
    from transformers import AutoModelForCausalLM
    corpus_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "corpus", "train.txt")
    with open(corpus_path, encoding="utf8") as f:
        corpus = [line for line in f.read().splitlines() if line.strip()][:2000]
    prompt = "The license grants"
    summary = {}
    for i, (family, (cls, kw, dtypes)) in enumerate(variants().items()):
        config = cls(**kw)
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        randomize(model, 100 + i)
        for dtype in dtypes:
            name = f"{family}-{dtype}"
            d = os.path.join(root, name)
            # bf16 dirs are sharded (index + several files), so external data into many shards is exercised too.
            model.to(getattr(torch, dtype)).save_pretrained(d, max_shard_size="60KB" if dtype == "bfloat16" else "1GB")
            tok = make_tokenizer(d, config.vocab_size, corpus)
            entry = {"dir": d, "family": family, "dtype": dtype, "refs": {}}
            for compute in (["fp32"] if dtype == "float32" else ["fp32", "native"]):
                ref = os.path.join(root, f"{name}.{compute}.safetensors")
                reference(d, ref, compute)
                entry["refs"][compute] = ref
            ids = tok(prompt)["input_ids"]
            entry["prompt"] = prompt
            entry["prompt_ids"] = ids
            chat = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
            entry["chat_ids"] = list(chat["input_ids"] if hasattr(chat, "keys") else chat)
            entry["greedy"] = greedy(d, ids, 10)
            texts = ["Hello world", "  leading spaces and\ttabs\n", "naïve café ünïcödé 日本語 🙂", "<s>special</s> tokens", ""]
            entry["tokenizer"] = [{"text": t, "ids": tok(t)["input_ids"], "decoded": tok.decode(tok(t)["input_ids"], skip_special_tokens=True)}
                                  for t in texts]
            summary[name] = entry
        model.to(torch.float32)
    print(json.dumps(summary))


def make_moe(d):
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig
    config = Qwen3MoeConfig(vocab_size=120, hidden_size=32, intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=8, num_experts=16, num_experts_per_tok=4, moe_intermediate_size=16,
                            decoder_sparse_step=2, norm_topk_prob=True, max_position_embeddings=64, rope_theta=10000.0)
    torch.manual_seed(5)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # seed 109: greedy margins ≥ 0.08 over the test's 8 tokens (105 left a near-tie of 1e-3 in the bf16 weights)
    randomize(model, 109)
    model.to(torch.bfloat16).save_pretrained(d)


def refs(root, dirs, ids, max_new_tokens):
    out = {}
    for i, d in enumerate(dirs):
        with open(os.path.join(d, "config.json"), encoding="utf8") as f:
            c = json.load(f)
        stored = c.get("torch_dtype") or c.get("dtype") or "float32"
        entry = {"refs": {}, "prompt_ids": ids, "dtype": stored}
        for compute in (["fp32"] if stored == "float32" else ["fp32", "native"]):
            ref = os.path.join(root, f"ref{i}.{compute}.safetensors")
            reference(d, ref, compute)
            entry["refs"][compute] = ref
        entry["greedy"] = greedy(d, ids, max_new_tokens)
        out[d] = entry
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reference")
    r.add_argument("hf")
    r.add_argument("out")
    r.add_argument("--compute", choices=["fp32", "native"], default="fp32")
    r.add_argument("--inputs")
    g = sub.add_parser("greedy")
    g.add_argument("hf")
    g.add_argument("--ids", required=True)
    g.add_argument("--max-new-tokens", type=int, default=16)
    rs = sub.add_parser("refs")
    rs.add_argument("root")
    rs.add_argument("dirs", nargs="+")
    rs.add_argument("--ids", default="1,5,17,42,9,77,3,64")
    rs.add_argument("--make-moe")
    rs.add_argument("--max-new-tokens", type=int, default=8)
    m = sub.add_parser("make")
    m.add_argument("root")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.cmd == "reference":
        lg = reference(a.hf, a.out, a.compute, a.inputs)
        print(json.dumps({"out": a.out, "shape": list(lg.shape)}))
    elif a.cmd == "refs":
        if a.make_moe:
            make_moe(a.make_moe)
            a.dirs.append(a.make_moe)
        print(json.dumps(refs(a.root, a.dirs, [int(x) for x in a.ids.split(",")], a.max_new_tokens)))
    elif a.cmd == "greedy":
        print(json.dumps(greedy(a.hf, [int(x) for x in a.ids.split(",")], a.max_new_tokens)))
    else:
        make(a.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
