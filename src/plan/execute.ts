import { createHash } from "node:crypto";
import { copyFile, mkdir, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { MegahubError } from "../errors.js";
import { safetensorsHeader } from "../formats/safetensors/write.js";
import { type CastStats } from "../tensors/cast.js";
import { blockTasks, runTasks } from "./blocks.js";
import { createTensorHasher, type TensorHasher } from "./hasher.js";
import { OutputFile } from "./output.js";
import { fileBytes, tensorsOf, type Plan, type PlannedFile, type TensorFile, type CustomFile } from "./plan.js";
import { BlockPool, DEFAULT_BLOCK_BYTES } from "./pool.js";
import { describe, recipeBytes, type Recipe } from "./recipe.js";

export { blocks } from "./blocks.js";
export { DEFAULT_BLOCK_BYTES } from "./pool.js";

/**
 * Blocks being made (read, gathered, cast) at once, and blocks being written and hashed at once. Measured on the
 * bench (page cache warm): one of each left the main thread idle most of the time waiting for libuv; four of each
 * keep the disk queue and the hash workers busy. The pool holds both plus two spare, so no task waits for a buffer
 * that a finished-but-unwritten block holds.
 */
const MAKE_AHEAD = 4;
const WRITE_DEPTH = 4;
export const POOL_BLOCKS = MAKE_AHEAD + WRITE_DEPTH + 2;

/**
 * About the most memory a run holds in blocks: the pool, plus a block's worth of input per block being made (a
 * gather or merge reads its source rows beside its output), plus the hash workers' copies of heap blocks.
 */
export function executorMemoryBytes(blockBytes = DEFAULT_BLOCK_BYTES): number {
  return (POOL_BLOCKS + MAKE_AHEAD) * blockBytes + (64 << 20);
}

export interface ExecuteOptions {
  blockBytes?: number;
  /** sha256 of every output file, for the manifest and for `push` (on by default). */
  hash?: boolean;
  /** sha256 of every output tensor as well (off by default: it hashes every byte a second time). */
  tensorHashes?: boolean;
  onProgress?: (done: number, total: number) => void;
  /** Called as each file is complete on disk, with its tensors' entries (a split run journals them). */
  onFile?: (path: string, record: FileRecord, tensors: ExecuteResult["tensors"]) => Promise<void>;
}

export interface FileRecord {
  bytes: number;
  sha256?: string;
}

export interface ExecuteResult {
  files: Record<string, FileRecord>;
  tensors: Record<string, { sha256?: string; recipe: string }>;
  /** Finite values that became ±inf when narrowing (fp32 → fp16 …). */
  overflows: number;
  bytesWritten: number;
}

const headerBytes = (t: TensorFile) => safetensorsHeader(t).byteLength;

/**
 * Runs a plan into `dir` (normally a staged directory), one output file after another. Inside a file, several blocks
 * are made ahead while earlier ones are written at their positions and handed, in file order, to sha256 workers, all
 * in a fixed pool of reused buffers: memory stays near a dozen blocks whatever the model size.
 */
export async function executePlan(plan: Plan, dir: string, options: ExecuteOptions = {}): Promise<ExecuteResult> {
  const blockBytes = options.blockBytes ?? DEFAULT_BLOCK_BYTES;
  const total = plan.files.reduce((a, f) => a + fileBytes(f, headerBytes), 0);
  const stats: CastStats = { overflows: 0 };
  const result: ExecuteResult = { files: {}, tensors: {}, overflows: 0, bytesWritten: 0 };
  const hashing = options.hash !== false;
  // The workers also compute torch files' zip CRCs, so they run under --no-hash too when there are such files.
  const hasher = hashing || plan.files.some((f) => f.kind === "custom") ? createTensorHasher() : undefined;
  const pool = new BlockPool(blockBytes, POOL_BLOCKS);
  /** Tensor digests by recipe: the tied embedding is written twice (shared_embedding and lm_head) but hashed once. */
  const digests = new Map<Recipe, Promise<string | undefined>>();
  let done = 0;
  const advance = (n: number) => {
    done += n;
    options.onProgress?.(done, total);
  };
  options.onProgress?.(0, total);
  const context: FileContext = { hasher, hashing, pool, blockBytes, stats, advance, digests, tensorHashes: hashing && options.tensorHashes === true };
  try {
    for (const file of plan.files) {
      const path = join(dir, file.path);
      await mkdir(dirname(path), { recursive: true });
      const record = await writeOne(file, path, context);
      const expected = fileBytes(file, headerBytes);
      if (record.bytes !== expected) throw new MegahubError("OUTPUT", `wrote ${record.bytes} bytes, planned ${expected}`, { file: path });
      result.files[file.path] = record;
      result.bytesWritten += record.bytes;
      const tensors: ExecuteResult["tensors"] = {};
      for (const t of tensorsOf(file)) {
        const sha256 = await digests.get(t.recipe);
        tensors[t.name] = result.tensors[t.name] = { ...(sha256 ? { sha256 } : {}), recipe: describe(t.recipe) };
      }
      await options.onFile?.(file.path, record, tensors);
    }
  } finally {
    await hasher?.close();
  }
  result.overflows = stats.overflows;
  return result;
}

interface FileContext {
  hasher: TensorHasher | undefined;
  /** File digests wanted (the hasher may run for zip CRCs alone). */
  hashing: boolean;
  pool: BlockPool;
  blockBytes: number;
  stats: CastStats;
  advance: (n: number) => void;
  digests: Map<Recipe, Promise<string | undefined>>;
  tensorHashes: boolean;
}

async function writeOne(file: PlannedFile, path: string, c: FileContext): Promise<FileRecord> {
  switch (file.kind) {
    case "text": {
      await writeFile(path, file.content, { flag: "wx" });
      const bytes = typeof file.content === "string" ? Buffer.byteLength(file.content) : file.content.byteLength;
      c.advance(bytes);
      return { bytes, ...(c.hashing ? { sha256: createHash("sha256").update(file.content).digest("hex") } : {}) };
    }
    case "copy": {
      await copyFile(file.from, path);
      c.advance(file.bytes);
      const bytes = (await stat(path)).size;
      return { bytes, ...(c.hashing && c.hasher ? { sha256: await c.hasher.hashFile(path) } : {}) };
    }
    case "safetensors":
    case "custom": {
      const out = await OutputFile.create(path, { depth: WRITE_DEPTH, pool: c.pool, hashFile: c.hashing, ...(c.hasher ? { hasher: c.hasher } : {}) });
      try {
        await (file.kind === "safetensors" ? writeSafetensors(file, out, c) : writeCustom(file, out, c));
        return await out.close();
      } catch (e) {
        await out.abort();
        throw e;
      }
    }
  }
}

/** The tensor hash a recipe's blocks feed, or none when it is off or this recipe is already hashed elsewhere. */
function tensorHash(recipe: Recipe, out: OutputFile, c: FileContext): { ids: number[]; finish: () => void } {
  if (!c.tensorHashes || !c.hasher || c.digests.has(recipe)) return { ids: [], finish: () => undefined };
  const id = c.hasher.start();
  let resolve: (hex: string | undefined) => void = () => undefined;
  c.digests.set(recipe, new Promise((r) => (resolve = r)));
  return { ids: [id], finish: () => void out.digest(id).then(resolve, () => resolve(undefined)) };
}

async function writeSafetensors(file: TensorFile, out: OutputFile, c: FileContext): Promise<void> {
  const header = safetensorsHeader(file);
  await out.append(header);
  c.advance(header.byteLength);
  // A recipe written twice (the untied head is the embedding) is copied from the bytes already in this file rather
  // than computed again: a pruned or cast embedding costs seconds to gather, a page-cache read does not.
  const written = new Map<Recipe, number>();
  for (const t of file.tensors) {
    const earlier = written.get(t.recipe);
    written.set(t.recipe, out.bytes);
    if (earlier !== undefined) {
      await out.drain();
      const bytes = recipeBytes(t.recipe);
      for (let off = 0; off < bytes; off += c.blockBytes) {
        const block = (await c.pool.acquire()).subarray(0, Math.min(c.blockBytes, bytes - off));
        await out.readAt(block, earlier + off).catch((e: unknown) => {
          c.pool.release(block);
          throw e;
        });
        await out.append(block);
        c.advance(block.byteLength);
      }
      continue;
    }
    const hash = tensorHash(t.recipe, out, c);
    for await (const block of runTasks(blockTasks(t.recipe, c.blockBytes, c.stats), MAKE_AHEAD, c.pool)) {
      await out.append(block, hash.ids);
      c.advance(block.byteLength);
    }
    hash.finish();
  }
}

/** A custom writer appends its own headers around the recipes' blocks; the blocks carry their tensor hash. */
async function writeCustom(file: CustomFile, out: OutputFile, c: FileContext): Promise<void> {
  const ids = new WeakMap<Uint8Array, number[]>();
  const hasher = c.hasher;
  const sink = {
    append: async (data: Uint8Array, checksum?: number) => {
      await out.append(data, [...(ids.get(data) ?? []), ...(checksum === undefined ? [] : [checksum])]);
      c.advance(data.byteLength);
    },
    ...(hasher?.crc
      ? { crc32: { start: () => hasher.start("crc32"), value: async (id: number) => Number.parseInt((await out.digest(id)) ?? "", 16) } }
      : {}),
  };
  await file.write(sink, (recipe) => ({
    async *[Symbol.asyncIterator]() {
      const hash = tensorHash(recipe, out, c);
      for await (const block of runTasks(blockTasks(recipe, c.blockBytes, c.stats), MAKE_AHEAD, c.pool)) {
        if (hash.ids.length > 0) ids.set(block, hash.ids);
        yield block;
      }
      hash.finish();
    },
  }));
}
