#!/bin/sh
# make_tokenizer.sh - train the tiny real sentencepiece model used by the fixtures.
#
# Run:   sh scripts/make_tokenizer.sh [CORPUS] [OUT_DIR]   (defaults fixtures/corpus/train.txt, fixtures/tokenizer)
# Needs: Debian's sentencepiece CLI (`spm_train`, package sentencepiece).
#
# Why:   OpenBA's tokenizer is a unigram sentencepiece model with byte fallback whose fixed ids are
#        <pad>=0, </s>=1, <unk>=2 and no BOS (docs/openba-format.md §8).  We train the same kind of model with
#        1000 pieces, so sp_size = 1000 and the OpenBA-added ids are <extra_id_k> = 1099 - k, <R>/<S>/<X> =
#        1100/1101/1102 and the true vocab is 1103.
#        character_coverage is 0.98, not 0.9995: at 0.9995 the ~1100 distinct characters of the bilingual corpus do
#        not fit in 1000 pieces (spm_train refuses); at 0.98 about 450 characters are pieces and rarer Chinese
#        characters go through byte fallback (<0xE8><0xAE><0xB8> ...), which the tests want to exercise anyway.
#        Training is deterministic: one thread, every sentence loaded (no sampling/shuffling), fixed seed, and it
#        runs in a scratch dir with the fixed relative names fixtures/corpus/train.txt and fixtures/tokenizer/spiece,
#        because spm_train records --input and --model_prefix inside the .model file.
set -eu
CORPUS=${1:-fixtures/corpus/train.txt}
OUT=${2:-fixtures/tokenizer}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/fixtures/corpus" "$WORK/fixtures/tokenizer"
cp "$CORPUS" "$WORK/fixtures/corpus/train.txt"
( cd "$WORK" && spm_train --input=fixtures/corpus/train.txt --model_prefix=fixtures/tokenizer/spiece \
  --vocab_size=1000 --model_type=unigram --byte_fallback=true --character_coverage=0.98 \
  --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 \
  --input_sentence_size=10000000 --shuffle_input_sentence=false --num_threads=1 --random_seed=1234 \
  --max_sentence_length=16384 --minloglevel=1 )
cp "$WORK/fixtures/tokenizer/spiece.model" "$WORK/fixtures/tokenizer/spiece.vocab" "$OUT/"
