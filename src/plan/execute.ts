import { copyFile, mkdir, open, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { MegahubError } from "../errors.js";
import { safetensorsHeader } from "../formats/safetensors/write.js";

import { castBytes, type CastStats } from "../tensors/cast.js";
import { materializeRows, rowBytes, rowCount } from "./materialize.js";
import { fileBytes, tensorsOf, type Plan, type PlannedFile } from "./plan.js";
import { describe, recipeBytes, type Recipe } from "./recipe.js";
import { createTensorHasher } from "./hasher.js";

/** Rows are read and written in blocks of about this size: memory stays near two blocks whatever the model size. */
export const DEFAULT_BLOCK_BYTES = 16 << 20;

export interface ExecuteOptions {
  blockBytes?: number;
  /** sha256 of every output tensor, for the manifest (on by default). */
  hash?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface ExecuteResult {
  files: Record<string, { bytes: number }>;
  tensors: Record<string, { sha256?: string; recipe: string }>;
  /** Finite values that became ±inf when narrowing (fp32 → fp16 …). */
  overflows: number;
  bytesWritten: number;
}

/**
 * Runs a plan into `dir` (normally a staged directory): one output tensor at a time, one row block at a time,
 * reading the next block while the previous one is written.
 */
export async function executePlan(plan: Plan, dir: string, options: ExecuteOptions = {}): Promise<ExecuteResult> {
  const blockBytes = options.blockBytes ?? DEFAULT_BLOCK_BYTES;
  const total = plan.files.reduce((a, f) => a + fileBytes(f, (t) => safetensorsHeader(t).byteLength), 0);
  const stats: CastStats = { overflows: 0 };
  const result: ExecuteResult = { files: {}, tensors: {}, overflows: 0, bytesWritten: 0 };
  const digests = new Map<Recipe, string>();
  const hasher = options.hash === false ? undefined : createTensorHasher();
  let done = 0;
  const advance = (n: number) => {
    done += n;
    options.onProgress?.(done, total);
  };
  options.onProgress?.(0, total);
  try {
    for (const file of plan.files) await runFile(file);
  } finally {
    await hasher?.close();
  }
  result.overflows = stats.overflows;
  return result;

  async function runFile(file: PlannedFile): Promise<void> {
    const path = join(dir, file.path);
    await mkdir(dirname(path), { recursive: true });
    const emit = (name: string) =>
      async function* (recipe: Recipe): AsyncGenerator<Uint8Array> {
        // The tied embedding is written twice (shared_embedding and lm_head): hash its bytes once.
        const id = hasher === undefined || digests.has(recipe) ? undefined : hasher.start();
        for await (const block of blocks(recipe, blockBytes, stats)) {
          yield block;
          advance(block.byteLength);
          // The writer is done with the block once it asks for the next one: hand it to the hasher now.
          if (id !== undefined) await hasher?.update(id, block);
        }
        if (id !== undefined && hasher) digests.set(recipe, await hasher.digest(id));
      };
    const before = done;
    await writeFileOf(file, path, emit, advance);
    const expected = fileBytes(file, (t) => safetensorsHeader(t).byteLength);
    // Custom writers report tensor bytes only; count their headers and pickles too so progress ends at 100 %.
    if (file.kind === "custom") advance(expected - (done - before));
    for (const t of tensorsOf(file)) {
      const sha256 = digests.get(t.recipe);
      result.tensors[t.name] = { ...(sha256 ? { sha256 } : {}), recipe: describe(t.recipe) };
    }
    const bytes = (await stat(path)).size;
    if (bytes !== expected) {
      throw new MegahubError("OUTPUT", `wrote ${bytes} bytes, planned ${expected}`, { file: path });
    }
    result.files[file.path] = { bytes };
    result.bytesWritten += bytes;
  }
}

async function writeFileOf(
  file: PlannedFile,
  path: string,
  emit: (name: string) => (recipe: Recipe) => AsyncGenerator<Uint8Array>,
  advance: (n: number) => void,
): Promise<void> {
  switch (file.kind) {
    case "text":
      await writeFile(path, file.content, { flag: "wx" });
      advance(typeof file.content === "string" ? Buffer.byteLength(file.content) : file.content.byteLength);
      return;
    case "copy":
      await copyFile(file.from, path);
      advance(file.bytes);
      return;
    case "custom": {
      let current = "";
      const byName = new Map(file.tensors.map((t) => [t.recipe, t.name]));
      await file.write(path, (recipe) => {
        current = byName.get(recipe) ?? current;
        return emit(current)(recipe);
      });
      return;
    }
    case "safetensors": {
      const handle = await open(path, "wx+");
      try {
        const header = safetensorsHeader(file);
        await handle.write(header, 0, header.byteLength, 0);
        advance(header.byteLength);
        let pos = header.byteLength;
        // A recipe written twice (the untied head is the embedding) is copied from the bytes already in this file
        // rather than computed again: a pruned or cast embedding costs seconds to gather, a page-cache read does not.
        const written = new Map<Recipe, number>();
        for (const t of file.tensors) {
          const earlier = written.get(t.recipe);
          written.set(t.recipe, pos);
          const source = earlier === undefined ? emit(t.name)(t.recipe) : copyWithin(handle, earlier, recipeBytes(t.recipe), advance);
          for await (const block of source) {
            await writeAll(handle, block, pos);
            pos += block.byteLength;
          }
        }
      } finally {
        await handle.close();
      }
      return;
    }
  }
}

async function* copyWithin(
  handle: Awaited<ReturnType<typeof open>>,
  from: number,
  bytes: number,
  advance: (n: number) => void,
): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < bytes; off += COPY_BLOCK) {
    const n = Math.min(COPY_BLOCK, bytes - off);
    const block = Buffer.allocUnsafe(n);
    const { bytesRead } = await handle.read(block, 0, n, from + off);
    if (bytesRead !== n) throw new MegahubError("OUTPUT", `short read of ${bytesRead} of ${n} bytes while copying a repeated tensor`);
    yield block;
    advance(n);
  }
}

const COPY_BLOCK = 16 << 20;

async function writeAll(handle: Awaited<ReturnType<typeof open>>, block: Uint8Array, pos: number): Promise<void> {
  let off = 0;
  while (off < block.byteLength) {
    const { bytesWritten } = await handle.write(block, off, block.byteLength - off, pos + off);
    off += bytesWritten;
  }
}

/**
 * The bytes of a recipe's output, in order, in blocks of about `blockBytes`. Plain reads and dim-0 concatenations
 * (the bulk of any conversion) pass input blocks straight through; casts convert block by block; every other recipe
 * is cut into row blocks. The next block is read while the caller writes the current one.
 */
export function blocks(recipe: Recipe, blockBytes: number, stats: CastStats): AsyncGenerator<Uint8Array> {
  return prefetch(stream(recipe, blockBytes, stats));
}

async function* stream(r: Recipe, blockBytes: number, stats: CastStats): AsyncGenerator<Uint8Array> {
  if (r.kind === "read") {
    const total = recipeBytes(r);
    const step = Math.max(8, blockBytes - (blockBytes % 8));
    for (let off = 0; off < total; off += step) yield await r.source.read(r.offset + off, Math.min(step, total - off));
  } else if (r.kind === "concat" && r.shape.slice(0, r.dim).every((d) => d === 1)) {
    for (const p of r.parts) yield* stream(p, blockBytes, stats);
  } else if (r.kind === "cast") {
    for await (const chunk of stream(r.input, blockBytes, stats)) yield castBytes(chunk, r.input.dtype, r.dtype, stats);
  } else {
    const rows = rowCount(r);
    const step = Math.max(1, Math.floor(blockBytes / Math.max(1, rowBytes(r))));
    if (recipeBytes(r) === 0) return;
    for (let start = 0; start < rows; start += step) yield await materializeRows(r, start, Math.min(start + step, rows), stats);
  }
}

/** Keeps one `next()` of the source in flight while the consumer handles the current value. */
async function* prefetch<T>(source: AsyncGenerator<T>): AsyncGenerator<T> {
  let pending = source.next();
  for (;;) {
    const current = await pending;
    if (current.done) return;
    pending = source.next();
    // A failing read-ahead is reported when awaited, not as an unhandled rejection in between.
    pending.catch(() => undefined);
    yield current.value;
  }
}
