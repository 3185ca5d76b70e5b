#!/usr/bin/env bash
# Prepares what the CUDA-provider tests need on a machine with no GPU, cached outside the repo. Idempotent.
#   <cache>/provider/   libonnxruntime_providers_cuda.so + _shared.so of ORT 1.29.0, from the npm package that
#                       `megahub gpu install` uses (fetched with npm pack; npm checks the registry's integrity)
#   <cache>/standins/   stand-in CUDA 13 libraries (libcudart.so.13, libcublas.so.13, libcublasLt.so.13,
#                       libcurand.so.10, libcuda.so.1) that export every symbol the provider imports from them; every
#                       call returns 100 (cudaErrorNoDevice / not initialised), so ORT loads the provider, gets as far
#                       as cudaSetDevice and fails cleanly. cudaGetErrorString names the stand-in and the value of
#                       NVIDIA_TF32_OVERRIDE at that moment, so tests can see what the CUDA libraries were told.
# These libraries exercise the core<->provider bridge and megahub's diagnosis, not CUDA.
# usage: scripts/make_cuda_standins.sh [CACHE]   (default ${XDG_CACHE_HOME:-~/.cache}/megahub/cuda-standins)
# needs: npm, tar, gcc, nm (binutils)
set -euo pipefail
CACHE=${1:-${MEGAHUB_CUDA_STANDINS:-${XDG_CACHE_HOME:-$HOME/.cache}/megahub/cuda-standins}}
SPEC=com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
PROV=$CACHE/provider
STUB=$CACHE/standins
if [ -f "$PROV/libonnxruntime_providers_cuda.so" ] && [ -f "$PROV/libonnxruntime_providers_shared.so" ] && [ -f "$STUB/.done" ]; then
  echo "CUDA stand-ins ready: $CACHE"; exit 0
fi
for t in npm tar gcc nm; do command -v $t >/dev/null || { echo "make_cuda_standins.sh: $t is missing" >&2; exit 2; }; done
TMP=$(mktemp -d /tmp/megahub-standins-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$CACHE"
if [ ! -f "$PROV/libonnxruntime_providers_cuda.so" ] || [ ! -f "$PROV/libonnxruntime_providers_shared.so" ]; then
  echo "fetching $SPEC (about 180 MB)"
  (cd "$TMP" && npm pack --silent "$SPEC" >/dev/null)
  mkdir -p "$TMP/x" "$PROV.tmp"
  tar --no-same-owner -xzf "$TMP"/*.tgz -C "$TMP/x" package/Plugins/Linux/x64/libonnxruntime_providers_cuda.so package/Plugins/Linux/x64/libonnxruntime_providers_shared.so
  mv "$TMP"/x/package/Plugins/Linux/x64/*.so "$PROV.tmp/"
  rm -rf "$PROV"; mv "$PROV.tmp" "$PROV"
fi
P=$PROV/libonnxruntime_providers_cuda.so
rm -rf "$STUB.tmp"; mkdir -p "$STUB.tmp"
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcuda.so.1; do
  # The symbols the provider binds to this library (versioned imports name it: sym@libcudart.so.13).
  syms=$(nm -D --undefined-only "$P" | awk '{print $2}' | grep -F "@$lib" | sed 's/@.*//' | sort -u || true)
  {
    echo '#include <stdlib.h>'
    echo '#include <stdio.h>'
    echo 'static char msg[256];'
    echo "static const char* why(void){const char* t=getenv(\"NVIDIA_TF32_OVERRIDE\");"
    echo "  snprintf(msg,sizeof msg,\"stand-in $lib: no CUDA device (NVIDIA_TF32_OVERRIDE=%s)\",t?t:\"<unset>\");return msg;}"
    for s in $syms; do
      case $s in
        *GetErrorName|*GetErrorString|*GetStatusString|*GetStatusName) echo "const char* $s(int e){(void)e;return why();}";;
        *) echo "int $s(void){return 100;}";;
      esac
    done
    echo 'int megahub_cuda_standin(void){return 1;}'
  } > "$TMP/$lib.c"
  echo "$lib { global: *; };" > "$TMP/$lib.map"
  gcc -shared -fPIC -O0 -o "$STUB.tmp/$lib" -Wl,-soname,$lib -Wl,--version-script="$TMP/$lib.map" "$TMP/$lib.c"
done
touch "$STUB.tmp/.done"
rm -rf "$STUB"; mv "$STUB.tmp" "$STUB"
echo "CUDA stand-ins ready: $CACHE"; ls -l "$PROV" "$STUB"
