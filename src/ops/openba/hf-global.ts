import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { MegahubError } from "../../errors.js";
import { FileSource } from "../../io/byte-source.js";
import { OPENBA, OPENBA_GLOBAL_PARAMS, OPENBA_LAYER_PARAMS } from "../../models/openba/spec.js";
import type { Stack } from "../../models/openba/types.js";
import { blocks } from "../../plan/execute.js";
import { readTensor, select, type Recipe } from "../../plan/recipe.js";
import { castBytes } from "../../tensors/cast.js";
import { megatronKey, type GlobalModel } from "./global-model.js";
import { readModelDir } from "../../models/openba/hf-dir.js";

export interface HfModel {
  model: GlobalModel;
  config: Record<string, unknown>;
  close(): Promise<void>;
}

/**
 * Reads an HF OpenBA directory as a GlobalModel under Megatron names: fc_in is split back into w1/w3 (row selects,
 * no copy), and the head is tied back to the embedding — after checking it really equals the embedding.
 */
export async function openHfModel(dir: string): Promise<HfModel> {
  const hf = await readModelDir(dir);
  const sources = new Map<string, FileSource>();
  const close = () => Promise.all([...sources.values()].map((s) => s.close())).then(() => undefined);
  try {
    for (const f of hf.files) sources.set(f, await FileSource.open(join(dir, f)));
    const { projection: _projection, ...dims } = hf.dims;
    const tensors = new Map<string, Recipe>();
    const take = (name: string): Recipe => {
      const t = hf.tensors.get(name);
      if (!t) throw new MegahubError("MODEL", "missing", { file: dir, tensor: name });
      return readTensor(sources.get(t.file) as FileSource, t.offset, t.dtype, t.shape, `${t.file}:${name}`);
    };
    for (const p of OPENBA_GLOBAL_PARAMS) tensors.set(p.megatron, take(p.hf[0] as string));
    for (const stack of ["encoder", "decoder"] as const) {
      const n = stack === "encoder" ? dims.encoderLayers : dims.decoderLayers;
      for (let i = 0; i < n; i++) {
        for (const p of OPENBA_LAYER_PARAMS) {
          if (p.hf === null || !(p.stacks as readonly Stack[]).includes(stack)) continue;
          const r = take(`${OPENBA.layerPrefix(stack, i).hf}${p.hf}`);
          const half = "fuse" in p ? Array.from({ length: dims.ffn }, (_, k) => k + p.fuse.index * dims.ffn) : undefined;
          tensors.set(megatronKey(stack, i, p.megatron), half ? select(r, 0, half) : r);
        }
      }
    }
    await checkTiedHead(take("lm_head.weight"), take("shared_embedding.weight"), dir);
    const trueVocab = await trueVocabOf(dir);
    return { model: { dims, tensors, ...(trueVocab ? { trueVocab } : {}) }, config: { ...hf.config }, close };
  } catch (e) {
    await close();
    throw e;
  }
}

/** Megatron ties the head to the embedding; an HF model whose head was trained apart cannot go back unchanged. */
async function checkTiedHead(head: Recipe, emb: Recipe, dir: string): Promise<void> {
  if (head.dtype !== emb.dtype || head.shape.join() !== emb.shape.join()) {
    throw new MegahubError("MODEL", `lm_head.weight ${head.dtype}[${head.shape}] differs from shared_embedding.weight ${emb.dtype}[${emb.shape}]`, { file: dir });
  }
  const stats = { overflows: 0 };
  const a = blocks(head, 16 << 20, stats);
  const b = blocks(emb, 16 << 20, stats);
  let maxDiff = 0;
  let differing = 0;
  for (;;) {
    const [x, y] = await Promise.all([a.next(), b.next()]);
    if (x.done || y.done) break;
    if (Buffer.compare(x.value, y.value) === 0) continue;
    const fx = new Float32Array(castBytes(x.value, head.dtype, "F32", stats).slice().buffer);
    const fy = new Float32Array(castBytes(y.value, emb.dtype, "F32", stats).slice().buffer);
    for (let i = 0; i < fx.length; i++) {
      const d = Math.abs((fx[i] as number) - (fy[i] as number));
      if (d > 0 || Number.isNaN(d)) differing++;
      if (d > maxDiff || Number.isNaN(d)) maxDiff = d;
    }
  }
  if (differing > 0) {
    throw new MegahubError(
      "MODEL",
      `lm_head.weight differs from shared_embedding.weight in ${differing} of ${head.shape.reduce((p, q) => p * q, 1)} values (max |Δ| ${maxDiff.toPrecision(4)}); Megatron OpenBA ties them, so this model cannot be written back without changing it`,
      { file: dir },
    );
  }
}

async function trueVocabOf(dir: string): Promise<number | undefined> {
  try {
    const added = JSON.parse(await readFile(join(dir, "added_tokens.json"), "utf8")) as Record<string, number>;
    const ids = Object.values(added).filter((v) => typeof v === "number");
    return ids.length > 0 ? Math.max(...ids) + 1 : undefined;
  } catch {
    return undefined;
  }
}
