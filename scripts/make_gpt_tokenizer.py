#!/usr/bin/env python3
"""make_gpt_tokenizer.py - build the Llama-style HF tokenizer of the `demo` GPT fixture from fixtures/tokenizer/spiece.model.

Run:   ~/.cache/megahub/venv-ref/bin/python scripts/make_gpt_tokenizer.py [--out fixtures/gpt/tokenizer]
       Needs the reference venv (scripts/make_ref_venv.sh: `tokenizers`, `transformers`, `sentencepiece`); Debian's
       /usr/bin/python3 has no `tokenizers`, so make_fixtures.py copies the committed output instead and
       check_fixtures.py re-runs this script only when the venv exists.

Why:   the demo leg needs a real Hugging Face tokenizer (tokenizer.json + tokenizer_config.json +
       special_tokens_map.json) whose size matches the embedding.  The repo's sentencepiece model (unigram, byte
       fallback, <pad>=0 </s>=1 <unk>=2, no BOS) is turned into a `tokenizers` Unigram model with the same pieces,
       scores and ids, sentencepiece's whitespace normalisation and "▁" prefix, and a BOS
       `<s>` added as a new special token (id 1000) that the post-processor puts in front, as Llama tokenizers do.
       The HF class is PreTrainedTokenizerFast (what Llama 3 ships), so any transformers version loads it.
       The result is checked against sentencepiece itself: for every line of fixtures/corpus/heldout.txt the HF ids
       are [1000] + spm ids.
"""
import argparse
import json
import os

import sentencepiece as spm
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
from transformers import PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOS = "<s>"


def build(spm_path):
    # pieces, scores and types through the sentencepiece API (the venv has no protobuf for the raw ModelProto)
    sp = spm.SentencePieceProcessor(model_file=spm_path)
    n = sp.get_piece_size()
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(n)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=sp.unk_id(), byte_fallback=True))
    # sentencepiece's nmt_nfkc normaliser with remove_extra_whitespaces (NFKC, trim, collapse space runs), then its
    # "▁" handling as in the legacy Llama tokenizer.json: prepend one "▁", every space becomes "▁"
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Strip(),
                                           normalizers.Replace(Regex(" {2,}"), " "),
                                           normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1)])
    specials = [AddedToken(vocab[i][0], special=True, normalized=False) for i in range(n)
                if sp.is_control(i) or sp.is_unknown(i)]
    tok.add_special_tokens(specials + [AddedToken(BOS, special=True, normalized=False)])
    bos_id = tok.token_to_id(BOS)
    assert bos_id == n, (bos_id, n)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                                       special_tokens=[(BOS, bos_id)])
    return tok, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "fixtures", "gpt", "tokenizer"))
    ap.add_argument("--spm", default=os.path.join(ROOT, "fixtures", "tokenizer", "spiece.model"))
    ap.add_argument("--heldout", default=os.path.join(ROOT, "fixtures", "corpus", "heldout.txt"))
    a = ap.parse_args()
    tok, n_spm = build(a.spm)
    os.makedirs(a.out, exist_ok=True)
    tok.save(os.path.join(a.out, "tokenizer.json"), pretty=True)
    # tokenizer_config.json / special_tokens_map.json written by hand, so their bytes do not depend on the
    # transformers version (save_pretrained adds version-specific keys)
    added = {}
    for tid, t in sorted(tok.get_added_tokens_decoder().items()):
        added[str(tid)] = {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                           "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special}
    cfg = {"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": added, "bos_token": BOS,
           "clean_up_tokenization_spaces": False, "eos_token": "</s>", "model_max_length": 4096,
           "pad_token": "<pad>", "tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>"}
    with open(os.path.join(a.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")
    stm = {"bos_token": BOS, "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    with open(os.path.join(a.out, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(stm, f, indent=2)
        f.write("\n")
    # proof: the saved files, loaded by transformers, give sentencepiece's ids behind the BOS
    loaded = PreTrainedTokenizerFast.from_pretrained(a.out)
    sp = spm.SentencePieceProcessor(model_file=a.spm)
    n = 0
    with open(a.heldout, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            want = [loaded.bos_token_id] + sp.encode(line)
            got = loaded(line).input_ids
            assert got == want, (line[:60], got[:12], want[:12])
            assert loaded.decode(got, skip_special_tokens=True) == sp.decode(sp.encode(line)), line[:60]
            n += 1
    assert len(loaded) == n_spm + 1, (len(loaded), n_spm)
    print(f"tokenizer: {len(loaded)} tokens (spm {n_spm} + <s>), {n} held-out lines equal to spm ids")


if __name__ == "__main__":
    main()
