#!/usr/bin/env bash
# gpu-device-check.sh — on a GPU machine with no network, no node and no npm: unpack the kit that
# scripts/gpu-kit-build.sh made, install ORT's CUDA provider with megahub itself, let `megahub doctor` find the CUDA
# libraries, and measure with megahub's own commands:
#   - CUDA vs CPU logits on the fixtures (fp32 with TF32 off, fp32 with --tf32, fp16, bf16) and where each node ran;
#   - `megahub verify --device cuda` against the fixtures' torch references;
#   - the time of one verify of a model at OpenBA-v2's widths (scripts/gpu-bench-model.mjs, 2+2 layers, fp16).
# Stages may arrive in two calls (.gpu/a then .gpu/b): everything unpacked goes to $GPU_CHECK_WORK, which outlives a
# call while the machine stays warm. Run from the repo root:  bash .gpu/a/gpu-device-check.sh  (or scripts/…)
# env: GPU_CHECK_WORK (default /tmp/megahub-gpu)  GPU_CHECK_LD (library dirs to put first)  GPU_CHECK_DEADLINE
#      (seconds, default 240; later steps are skipped and say so)  GPU_CHECK_NO_BENCH=1  OUT (logs and JSON go here)
#      GPU_CHECK_BENCH_ARGS (passed to gpu-bench-model.mjs, e.g. "--vocab 1280" for a quick run)
# exit: 0 CUDA ran the fixtures; 3 CUDA was not usable (the doctor says why); 2 setup (kit or node missing)
set -u
export PATH="$PATH:/usr/sbin:/sbin"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd); [ -f "$ROOT/package.json" ] || ROOT=$(cd "$HERE/.." && pwd)
KIT=$ROOT/.gpu
WORK=${GPU_CHECK_WORK:-/tmp/megahub-gpu}
OUTD=${OUT:-$WORK/out}
DEADLINE=${GPU_CHECK_DEADLINE:-240}
mkdir -p "$WORK" "$OUTD"
T0=$(date +%s)
el() { echo "$(( $(date +%s) - T0 ))s"; }
sec() { echo; echo "===== $* [$(el)]"; }
budget() { [ $(( $(date +%s) - T0 )) -lt "$DEADLINE" ] && return 0; echo "SKIPPED ($*): past the ${DEADLINE}s budget"; return 1; }
RESULTS=()
result() { RESULTS+=("$*"); echo "RESULT: $*"; }
unxz_to() { if command -v xz >/dev/null; then xz -dc -T0 "$1" > "$2"; else python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'), 1<<24)" "$1" "$2"; fi; }
untar_xz() { mkdir -p "$2"; if command -v xz >/dev/null; then xz -dc -T0 "$1" | tar --no-same-owner -C "$2" -xf -; else python3 -c "import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$1" "$2"; fi; }
first() { ls $1 2>/dev/null | head -1; }

main() {
sec "machine"
echo "$(date -u +%FT%TZ) $(uname -n) $(uname -r) $(uname -m); cpus $(nproc); glibc $(ldd --version 2>/dev/null | head -1 | awk '{print $NF}')"
NVSMI=$(command -v nvidia-smi || ls /usr/local/nvidia/bin/nvidia-smi 2>/dev/null || true)
if [ -n "$NVSMI" ]; then timeout 30 "$NVSMI" --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
else echo "nvidia-smi: not found"; fi

sec "kit"
for st in a b; do
  [ -f "$KIT/$st/SHA256SUMS" ] || continue
  (cd "$KIT/$st" && sha256sum -c --quiet SHA256SUMS >/dev/null 2>&1) && echo "stage $st: checksums ok" || echo "stage $st: CHECKSUM MISMATCH"
done
NODE=""
if [ -x "$WORK/bin/node" ]; then NODE=$WORK/bin/node
elif [ -n "$(first "$KIT/a/node-*.xz")" ]; then mkdir -p "$WORK/bin"; unxz_to "$(first "$KIT/a/node-*.xz")" "$WORK/bin/node.tmp" && chmod +x "$WORK/bin/node.tmp" && mv "$WORK/bin/node.tmp" "$WORK/bin/node" && NODE=$WORK/bin/node
elif command -v node >/dev/null; then NODE=$(command -v node); fi
ORT=$WORK/node_modules/onnxruntime-node
[ -f "$ORT/package.json" ] || { [ -n "$(first "$KIT/a/ort-node-*.tar.xz")" ] && untar_xz "$(first "$KIT/a/ort-node-*.tar.xz")" "$WORK/node_modules"; }
if [ ! -f "$ROOT/dist/index.js" ] || [ ! -d "$ROOT/node_modules/@huggingface" ]; then
  [ -f "$KIT/a/megahub-runtime.tar.xz" ] && untar_xz "$KIT/a/megahub-runtime.tar.xz" "$ROOT"
fi
[ -d "$WORK/provider" ] || { [ -n "$(first "$KIT/b/ort-cuda-provider-*.tar.xz")" ] && untar_xz "$(first "$KIT/b/ort-cuda-provider-*.tar.xz")" "$WORK"; }
echo "node: ${NODE:-MISSING} $([ -n "$NODE" ] && "$NODE" --version)  onnxruntime-node: $([ -f "$ORT/package.json" ] && echo "$ORT" || echo MISSING)  provider folder: $([ -d "$WORK/provider" ] && echo "$WORK/provider" || echo 'not yet (stage b)')"
if [ -z "$NODE" ] || [ ! -f "$ORT/package.json" ] || [ ! -f "$ROOT/dist/index.js" ]; then
  result "SETUP: node, onnxruntime-node or megahub's dist/ missing: carry .gpu/a (again, if the machine was given back)"
  return 2
fi
export MEGAHUB_ONNXRUNTIME_NODE=$ORT
MH() { "$NODE" "$ROOT/bin/megahub.js" "$@"; }
if [ -d "$WORK/provider" ] && [ ! -f "$ORT/bin/napi-v6/linux/x64/megahub-gpu.json" ]; then
  sec "megahub gpu install --from $WORK/provider"
  MH gpu install --from "$WORK/provider" 2>&1
fi

sec "CUDA libraries: megahub doctor's search, then its verdict"
MH doctor --no-probe --json > "$WORK/doctor-static.json" 2>/dev/null
LD=$("$NODE" -e '
  const d = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const dirs = [...new Set((d.libraries || []).filter((l) => !l.path && l.offPath).map((l) => require("path").dirname(l.offPath)))];
  console.log(dirs.join(":"));' "$WORK/doctor-static.json" 2>/dev/null)
export LD_LIBRARY_PATH="${GPU_CHECK_LD:+$GPU_CHECK_LD:}${LD:+$LD:}${LD_LIBRARY_PATH:-}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
# The loader reads LD_LIBRARY_PATH when a process starts: every command below is a new process.
MH doctor 2>&1 | tee "$WORK/doctor.txt"
MH doctor --json > "$OUTD/doctor.json" 2>/dev/null
if ! grep -q '^verdict: CUDA execution provider usable' "$WORK/doctor.txt"; then
  result "CUDA NOT usable: $(grep -m1 '^verdict:' "$WORK/doctor.txt" | cut -c10-600)"
  return 3
fi
result "CUDA usable: $(grep -m1 '^CUDA session probe' "$WORK/doctor.txt" | cut -c1-300)"

sec "CUDA vs CPU logits and verify --device cuda on the fixtures"
for fx in fp32-tp1 fp16-tp2 bf16-tp1; do
  budget "fixture $fx" || continue
  hf=$WORK/hf-$fx; ref=$ROOT/fixtures/reference/$fx.safetensors
  [ -f "$hf/model.safetensors" ] || MH convert "$ROOT/fixtures/megatron/$fx" --out "$hf" --quiet >/dev/null 2>"$WORK/convert-$fx.err" || { echo "convert $fx failed: $(tail -1 "$WORK/convert-$fx.err")"; continue; }
  modes=("") ; [ $fx = fp32-tp1 ] && modes=("" "--tf32")
  for tf in "${modes[@]}"; do
    label="$fx${tf:+ $tf}"
    "$NODE" "$ROOT/scripts/gpu-cuda-vs-cpu.mjs" "$hf" "$ref" $tf > "$OUTD/cuda-vs-cpu-$fx${tf:+-tf32}.json" 2>"$WORK/cvc.err" \
      && result "CUDA vs CPU $label: $("$NODE" -e '
           const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
           const p = r.cuda.placement.byProvider.map((x) => `${x.nodes} on ${x.provider}`).join(", ");
           console.log(`max|Δ| ${r.maxAbs.toExponential(2)} p99 ${r.p99Abs.toExponential(2)} NMSE ${r.nmse.toExponential(2)} top-1 ${(r.top1 * 100).toFixed(1)} %; forward CUDA ${r.cuda.forwardMs.toFixed(1)} ms / CPU ${r.cpu.forwardMs.toFixed(1)} ms; nodes: ${p}`);' "$OUTD/cuda-vs-cpu-$fx${tf:+-tf32}.json")" \
      || result "CUDA vs CPU $label: FAILED $(tail -2 "$WORK/cvc.err" | tr '\n' ' ' | cut -c1-400)"
    MH verify "$hf" --reference "$ref" --device cuda --no-record $tf --json > "$OUTD/verify-$fx${tf:+-tf32}.json" 2>/dev/null
    result "verify $label --device cuda: exit $? $("$NODE" -e '
      const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      console.log(r.ok ? `PASS max|Δ| ${r.metrics.maxAbs.toExponential(2)} (gate ${r.tolerance.tf32 ? "TF32" : r.tolerance.comparison})` : `FAIL ${JSON.stringify(r.failures ?? r.error).slice(0, 300)}`);' "$OUTD/verify-$fx${tf:+-tf32}.json" 2>&1)"
  done
done

if [ "${GPU_CHECK_NO_BENCH:-0}" != 1 ] && budget "bench model"; then
  sec "one verify of a model at OpenBA-v2's widths (2+2 layers, fp16)"
  # shellcheck disable=SC2086
  [ -f "$WORK/bench/model.safetensors" ] || "$NODE" "$ROOT/scripts/gpu-bench-model.mjs" "$WORK/bench" ${GPU_CHECK_BENCH_ARGS:-}
  for dev in cuda cpu; do
    budget "bench verify $dev" || continue
    s=$(date +%s%N)
    MH verify "$WORK/bench" --against "$WORK/bench" --device $dev --no-record --json > "$OUTD/bench-verify-$dev.json" 2>/dev/null
    rc=$?; ms=$(( ($(date +%s%N) - s) / 1000000 ))
    result "bench verify --device $dev: exit $rc, wall $ms ms; $("$NODE" -e '
      const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      const p = r.placement.byProvider.map((x) => `${x.nodes} on ${x.provider}`).join(", ");
      console.log(`session ${r.timings.sessionMs.toFixed(0)} ms, forward ${r.timings.forwardMs.toFixed(0)} ms (the second of two models); nodes: ${p}`);' "$OUTD/bench-verify-$dev.json" 2>&1)"
  done
fi

sec "summary"
for l in "${RESULTS[@]}"; do echo "RESULT: $l"; done
echo "elapsed $(el)"
return 0
}

main "$@" 2>&1 | tee "$OUTD/gpu-device-check.log"
exit "${PIPESTATUS[0]}"
