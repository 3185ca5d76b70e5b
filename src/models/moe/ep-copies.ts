import { MegahubError } from "../../errors.js";
import type { MegatronCheckpoint, MegatronShard } from "../../formats/megatron/read.js";
import { DTYPES } from "../../tensors/dtypes.js";
import { GPT_IGNORED } from "../gpt/spec.js";
import { expertKey } from "./spec.js";

const SAMPLE = 4096;

/**
 * Every EP rank's file repeats the dense weights; the reader takes EP rank 0's after checking names and shapes.
 * This compares their bytes too, sampled (the first and last 4 KiB of each contiguous tensor, so EP × a few KiB per
 * tensor rather than EP copies of the dense model): files of different runs or iterations mixed in one directory
 * differ there. One error names the file, the tensor and the offset.
 */
export async function checkDenseCopyBytes(ckpt: MegatronCheckpoint): Promise<void> {
  if (ckpt.parallel.ep < 2) return;
  const key = (s: MegatronShard) => `${s.pp}/${s.chunk ?? 0}/${s.tp}`;
  const base = new Map(ckpt.shards.filter((s) => s.ep === 0).map((s) => [key(s), s]));
  for (const s of ckpt.shards) {
    const ref = base.get(key(s));
    if (s.ep === 0 || !ref) continue;
    for (const name of s.tensors.keys()) {
      if (expertKey(name) !== undefined || GPT_IGNORED.some((re) => re.test(name)) || !ref.tensors.has(name)) continue;
      const a = ckpt.recipe(ref, name);
      const b = ckpt.recipe(s, name);
      if (a.kind !== "read" || b.kind !== "read") continue;
      const bytes = a.shape.reduce((x, y) => x * y, 1) * DTYPES[a.dtype].bytes;
      for (const at of new Set([0, Math.max(0, bytes - SAMPLE)])) {
        const len = Math.min(SAMPLE, bytes - at);
        const [x, y] = await Promise.all([a.source.read(a.offset + at, len), b.source.read(b.offset + at, len)]);
        const i = x.findIndex((v, j) => v !== y[j]);
        if (i >= 0) {
          throw new MegahubError("MODEL", `EP rank ${s.ep}'s copy of this dense weight differs from EP rank 0's at byte ${at + i}: the EP files come from different runs or iterations`, {
            file: s.file,
            tensor: name,
          });
        }
      }
    }
  }
}
