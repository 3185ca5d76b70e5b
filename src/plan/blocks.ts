import { readInto } from "../io/byte-source.js";
import { castBytes, type CastStats } from "../tensors/cast.js";
import { materializeRows, rowBytes, rowCount } from "./materialize.js";
import type { BlockPool } from "./pool.js";
import { recipeBytes, type Recipe } from "./recipe.js";

/**
 * One block of a recipe's output, not yet made. A recipe's output is a list of these, known from its shape alone,
 * so several can be read at once (the disk and the page cache answer many requests faster than one at a time).
 * Given a pool, a task makes its block in one of the pool's buffers.
 */
export type BlockTask = (pool: BlockPool | undefined) => Promise<Uint8Array>;

/**
 * The tasks that make a recipe's bytes, in order, each about `blockBytes`. Plain reads and dim-0 concatenations (the
 * bulk of any conversion) are byte ranges of the input read straight into the block; casts convert block by block;
 * every other recipe is cut into row blocks.
 */
export function blockTasks(r: Recipe, blockBytes: number, stats: CastStats): BlockTask[] {
  if (r.kind === "read") {
    const total = recipeBytes(r);
    const step = Math.max(8, blockBytes - (blockBytes % 8));
    const tasks: BlockTask[] = [];
    for (let off = 0; off < total; off += step) {
      const n = Math.min(step, total - off);
      const at = r.offset + off;
      tasks.push((pool) => (pool ? intoBlock(pool, n, (out) => readInto(r.source, out, at)) : r.source.read(at, n)));
    }
    return tasks;
  }
  if (r.kind === "concat" && r.shape.slice(0, r.dim).every((d) => d === 1)) {
    return r.parts.flatMap((p) => blockTasks(p, blockBytes, stats));
  }
  if (r.kind === "cast") {
    const input = r.input;
    // The input block is dropped as soon as it is cast, so it comes from the heap, not the pool.
    return blockTasks(input, blockBytes, stats).map((t) => async (pool) => {
      const cast = castBytes(await t(undefined), input.dtype, r.dtype, stats);
      return pool && cast.byteLength <= pool.blockBytes ? intoBlock(pool, cast.byteLength, async (out) => void out.set(cast)) : cast;
    });
  }
  if (recipeBytes(r) === 0) return [];
  const rows = rowCount(r);
  const rb = rowBytes(r);
  const step = Math.max(1, Math.floor(blockBytes / Math.max(1, rb)));
  const tasks: BlockTask[] = [];
  for (let start = 0; start < rows; start += step) {
    const end = Math.min(start + step, rows);
    tasks.push((pool) =>
      pool && (end - start) * rb <= pool.blockBytes
        ? intoBlock(pool, (end - start) * rb, (out) => materializeRows(r, start, end, stats, out).then(() => undefined))
        : materializeRows(r, start, end, stats),
    );
  }
  return tasks;
}

/** Fills the first `n` bytes of a pool buffer; the buffer goes back to the pool if filling fails. */
async function intoBlock(pool: BlockPool, n: number, fill: (out: Uint8Array) => Promise<void>): Promise<Uint8Array> {
  const block = await pool.acquire();
  const out = block.subarray(0, n);
  try {
    await fill(out);
  } catch (e) {
    pool.release(block);
    throw e;
  }
  return out;
}

/**
 * Runs tasks with up to `window` in flight and yields their blocks in order. A consumer that stops early (an error
 * downstream) leaves no block unreturned: finished ones go back to the pool, failures of the rest are swallowed.
 */
export async function* runTasks(tasks: readonly BlockTask[], window: number, pool?: BlockPool): AsyncGenerator<Uint8Array> {
  const started: Promise<Uint8Array>[] = [];
  let next = 0;
  const fill = () => {
    while (next < tasks.length && started.length < window) {
      const p = (tasks[next++] as BlockTask)(pool);
      p.catch(() => undefined); // reported when awaited in order, not as an unhandled rejection in between
      started.push(p);
    }
  };
  try {
    fill();
    while (started.length > 0) {
      const block = await (started.shift() as Promise<Uint8Array>);
      fill();
      yield block;
    }
  } finally {
    for (const p of started.splice(0)) p.then((b) => pool?.owns(b) && pool.release(b), () => undefined);
  }
}

/**
 * The bytes of a recipe's output, in order, in blocks of about `blockBytes`, in buffers of their own (for callers
 * that keep or compare blocks: the untied-head check, magnitude scores). Two blocks are made ahead.
 */
export function blocks(recipe: Recipe, blockBytes: number, stats: CastStats): AsyncGenerator<Uint8Array> {
  return runTasks(blockTasks(recipe, blockBytes, stats), 2);
}
