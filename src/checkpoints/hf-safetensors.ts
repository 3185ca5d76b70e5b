import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { MegahubError } from "../errors.js";
import { readSafetensors } from "../formats/safetensors/read.js";
import { INDEX_FILE } from "../formats/safetensors/write.js";
import { FileSource } from "../io/byte-source.js";
import type { Dtype } from "../tensors/dtypes.js";

/** One tensor of an HF model dir, located by file and absolute byte range (what ONNX external data needs). */
export interface TensorRef {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  /** Shard file name, relative to the model dir. */
  readonly file: string;
  /** Absolute offset of the tensor's first byte in that file. */
  readonly offset: number;
  readonly length: number;
}

const SINGLE_FILE = "model.safetensors";

/** An HF model directory's config and tensor locations, from config.json and the safetensors headers only. */
export interface HfDir {
  readonly dir: string;
  readonly config: Readonly<Record<string, unknown>>;
  readonly tensors: ReadonlyMap<string, TensorRef>;
  /** Shard files in name order. */
  readonly files: readonly string[];
}

/** Reads config.json, the index (or model.safetensors alone) and every shard's header; no tensor bytes. */
export async function openHfDir(dir: string): Promise<HfDir> {
  const config = await readJson(join(dir, "config.json"));
  const weightMap = await shardMap(dir);
  const tensors = new Map<string, TensorRef>();
  const files = [...new Set(weightMap.values())].sort();
  for (const file of files) {
    const source = await FileSource.open(join(dir, file));
    try {
      const st = await readSafetensors(source);
      for (const e of st.entries) {
        // The index is authoritative: a tensor stored twice is read from the shard the index names.
        if (weightMap.get(e.name) !== file) continue;
        tensors.set(e.name, { name: e.name, dtype: e.dtype, shape: e.shape, file, offset: st.dataStart + e.begin, length: e.end - e.begin });
      }
    } finally {
      await source.close();
    }
  }
  const absent = [...weightMap].filter(([name]) => !tensors.has(name));
  if (absent.length > 0) {
    throw new MegahubError("FORMAT", `the index names ${absent.length} tensors its shards lack, e.g. ${absent[0]?.[0]} in ${absent[0]?.[1]}`, { file: join(dir, INDEX_FILE) });
  }
  return { dir, config, tensors, files };
}

export async function readJson(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new MegahubError("LAYOUT", `cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { file: path });
  }
  const v: unknown = JSON.parse(text);
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new MegahubError("FORMAT", "expected a JSON object", { file: path });
  }
  return v as Record<string, unknown>;
}

/** tensor name → shard file, from the index, or every tensor of model.safetensors when there is no index. */
async function shardMap(dir: string): Promise<Map<string, string>> {
  let index: Record<string, unknown> | undefined;
  try {
    index = await readJson(join(dir, INDEX_FILE));
  } catch (e) {
    if (!(e instanceof MegahubError && e.code === "LAYOUT")) throw e;
  }
  if (index === undefined) {
    const st = await FileSource.open(join(dir, SINGLE_FILE)).catch(() => {
      throw new MegahubError("LAYOUT", `neither ${SINGLE_FILE} nor ${INDEX_FILE} found`, { file: dir });
    });
    try {
      const header = await readSafetensors(st);
      return new Map(header.entries.map((e) => [e.name, SINGLE_FILE]));
    } finally {
      await st.close();
    }
  }
  const wm = index.weight_map;
  if (typeof wm !== "object" || wm === null) {
    throw new MegahubError("FORMAT", "weight_map missing", { file: join(dir, INDEX_FILE) });
  }
  const out = new Map<string, string>();
  for (const [name, file] of Object.entries(wm)) {
    // A shard name must be a plain file in this dir: ORT refuses external data outside the model's dir anyway.
    if (typeof file !== "string" || basename(file) !== file) {
      throw new MegahubError("FORMAT", `weight_map["${name}"] must be a file name in the model dir`, {
        file: join(dir, INDEX_FILE),
      });
    }
    out.set(name, file);
  }
  return out;
}

