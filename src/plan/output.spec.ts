import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runTasks, type BlockTask } from "./blocks.js";
import { createTensorHasher } from "./hasher.js";
import { OutputFile } from "./output.js";
import { BlockPool } from "./pool.js";

const dir = mkdtempSync(join(tmpdir(), "megahub-output-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A task that fills a block with `value` after `delay` ms, in a pool buffer when given one. */
const task = (n: number, value: number, delay: number): BlockTask => async (pool) => {
  await sleep(delay);
  const out = pool ? (await pool.acquire()).subarray(0, n) : new Uint8Array(n);
  return out.fill(value);
};

describe("the executor's pipeline", () => {
  it("yields blocks in order although they finish out of order, and writes and hashes them in file order", async () => {
    const pool = new BlockPool(64, 6);
    const hasher = createTensorHasher();
    const sizes = [64, 3, 64, 17, 1, 64, 40, 64];
    const tasks = sizes.map((n, i) => task(n, i + 1, (sizes.length - i) * 3));
    const out = await OutputFile.create(join(dir, "ordered.bin"), { depth: 2, pool, hasher });
    const tensor = hasher.start();
    for await (const block of runTasks(tasks, 3, pool)) await out.append(block, [tensor]);
    // A heap block (not from the pool) goes through the same path.
    await out.append(new Uint8Array(5).fill(99), [tensor]);
    const tensorHex = await out.digest(tensor);
    const record = await out.close();
    await hasher.close();
    const expected = Buffer.concat([...sizes.map((n, i) => Buffer.alloc(n, i + 1)), Buffer.alloc(5, 99)]);
    expect(readFileSync(join(dir, "ordered.bin")).equals(expected)).toBe(true);
    const hex = createHash("sha256").update(expected).digest("hex");
    expect(record).toEqual({ bytes: expected.byteLength, sha256: hex });
    expect(tensorHex).toBe(hex);
    // Every pool buffer came back: six acquisitions succeed at once.
    const all = await Promise.all(Array.from({ length: 6 }, () => pool.acquire()));
    expect(all.length).toBe(6);
  });

  it("reports a failing task in order and returns the buffers of the tasks still in flight", async () => {
    const pool = new BlockPool(16, 4);
    const failing: BlockTask = async () => {
      await sleep(5);
      throw new Error("read failed");
    };
    const tasks = [task(16, 1, 1), failing, task(16, 3, 1), task(16, 4, 1)];
    const got: number[] = [];
    await expect(
      (async () => {
        for await (const b of runTasks(tasks, 3, pool)) {
          got.push(b[0] as number);
          pool.release(b);
        }
      })(),
    ).rejects.toThrow("read failed");
    expect(got).toEqual([1]);
    await sleep(20);
    const all = await Promise.race([Promise.all(Array.from({ length: 4 }, () => pool.acquire())), sleep(500).then(() => "stuck")]);
    expect(all).not.toBe("stuck");
  });

  it("a pool never hands out more than its buffers: acquire waits for a release", async () => {
    const pool = new BlockPool(8, 1);
    const first = await pool.acquire();
    let second: Uint8Array | undefined;
    void pool.acquire().then((b) => (second = b));
    await sleep(5);
    expect(second).toBeUndefined();
    pool.release(first.subarray(0, 3));
    await sleep(0);
    expect(second?.byteLength).toBe(8);
    expect(pool.owns(first)).toBe(true);
    expect(pool.owns(new Uint8Array(8))).toBe(false);
  });
});
