#!/bin/sh
# make_corpus.sh - extract the small bilingual (English + Chinese) text corpus in fixtures/corpus/.
#
# Run:   sh scripts/make_corpus.sh [OUT_DIR]        (default OUT_DIR = fixtures/corpus)
# Needs: Debian packages base-files (/usr/share/common-licenses), manpages-zh, groff-base, bsdextrautils (col).
#        apt-get install -y manpages-zh
#
# Why:   the tokenizer fixture (scripts/make_tokenizer.sh) must be trained on real text that nobody in this
#        project wrote, in both of OpenBA's languages.  English comes from licence texts shipped by Debian,
#        Chinese from the Simplified-Chinese manual pages of manpages-zh, rendered to plain UTF-8 text with groff
#        (one paragraph per line: very long line length, left-adjusted, no hyphenation, overstrike removed,
#        leading/trailing blanks stripped, runs of spaces and of blank lines squeezed).  Licence texts are copied
#        verbatim.
#        train.txt and heldout.txt use disjoint documents.  The committed output is the reference; this script only
#        documents (and can repeat) how it was made - rendering may differ slightly with another groff version.
set -eu
OUT=${1:-fixtures/corpus}
mkdir -p "$OUT"
LIC=/usr/share/common-licenses
ZH=/usr/share/man/zh_CN

EN_TRAIN="GPL-3 LGPL-2.1 Apache-2.0 GPL-2"
ZH_TRAIN="man1/ls man1/cp man1/date man1/sed man1/diff man1/find man1/tar man1/gzip man1/grep man1/file man7/hier man7/regex man7/glob"
EN_HELD="MPL-2.0"
ZH_HELD="man7/daemon"

en() {  # the licence text verbatim (the licences allow verbatim copies only), then one blank line
  cat "$LIC/$1"
  echo
}
zh() {  # render a zh_CN man page to plain text, one paragraph per line
  f=$(ls "$ZH/$1".*.gz | head -n 1)
  zcat "$f" | timeout 20 groff -Kutf8 -Tutf8 -mandoc -rLL=1000n -dAD=l -rHY=0 2>/dev/null | col -bx |
    sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e 's/  */ /g' | cat -s
  echo
}

{ for d in $EN_TRAIN; do en "$d"; done; for p in $ZH_TRAIN; do zh "$p"; done; } > "$OUT/train.txt"
{ for d in $EN_HELD; do en "$d"; done; for p in $ZH_HELD; do zh "$p"; done; } > "$OUT/heldout.txt"
wc -c "$OUT/train.txt" "$OUT/heldout.txt"
