#!/usr/bin/env bash
# Builds the modern Python referee (torch with DCP, transformers, huggingface_hub + hf_xet, safetensors,
# sentencepiece) from the machine's local wheel mirror, cached outside the repo. Idempotent.
set -euo pipefail
VENV="${MEGAHUB_REF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/megahub/venv-ref}"
PKGS=("torch==2.13.0+cpu" "transformers==5.18.0" huggingface_hub hf_xet safetensors sentencepiece protobuf)
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch, transformers, huggingface_hub, hf_xet, safetensors, sentencepiece, google.protobuf" 2>/dev/null; then
  echo "reference venv ready: $VENV"; exit 0
fi
# The mirror's indexes (pip config's extra-index-url); the default index is unreachable, so never wait on it.
read -r -a IDX <<<"$(pip config get global.extra-index-url 2>/dev/null || echo 'file:///opt/pypi/simple file:///opt/pypi-more/simple')"
ARGS=(--index-url "${IDX[0]}")
for i in "${IDX[@]:1}"; do ARGS+=(--extra-index-url "$i"); done
PY="$(command -v python3)"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q "${ARGS[@]}" "${PKGS[@]}"
"$VENV/bin/python" -c "import torch, transformers, huggingface_hub; print('reference venv:', torch.__version__, transformers.__version__, huggingface_hub.__version__)"
