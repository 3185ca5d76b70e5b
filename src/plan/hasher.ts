import { createHash, type Hash } from "node:crypto";
import { createReadStream, closeSync, openSync, readSync } from "node:fs";
import { availableParallelism } from "node:os";
import { isMainThread, parentPort, Worker } from "node:worker_threads";
import * as zlib from "node:zlib";

/**
 * sha256 on worker threads, so hashing overlaps with reading and writing instead of taking main-thread time (it
 * more than doubled a conversion's wall time). Each hash is bound to one worker (round robin), so several files hash
 * on several cores at once and one file's blocks arrive in order. Blocks in shared memory (the executor's pool) are
 * read in place; anything else is transferred when it owns a large buffer, else copied. At most MAX_IN_FLIGHT copied
 * bytes wait in the workers, so memory stays bounded when they fall behind.
 */
const MAX_IN_FLIGHT = 64 << 20;
/** Below this a copy is cheaper than a transfer, and small blocks may be views of shared constants. */
const TRANSFER_MIN = 1 << 20;
/** Read size when a worker hashes a whole file. */
const FILE_BLOCK = 8 << 20;

/** CRC-32 as zip uses it, where node:zlib has it (Node ≥ 20.15); without it the zip writer computes its own. */
const crc32 = typeof zlib.crc32 === "function" ? zlib.crc32 : undefined;

type Request =
  | { op: "start"; id: number; kind: "crc32" }
  | { op: "update"; id: number; seq: number; data: Uint8Array }
  | { op: "digest"; id: number; seq: number }
  | { op: "file"; seq: number; path: string };
type Reply = { op: "ack"; seq: number; bytes: number } | { op: "hex"; seq: number; hex: string } | { op: "error"; seq: number; message: string };

export interface TensorHasher {
  /** Starts a sha256 (or, where `crc` says so, a zip CRC-32, whose digest is 8 hex digits); returns its id. */
  start(kind?: "sha256" | "crc32"): number;
  /** Whether this hasher computes CRC-32 (off the main thread: it was the hot spot of writing torch files). */
  readonly crc: boolean;
  /**
   * Adds a block. A shared-memory block is read in place: the promise settles once the worker has hashed it, and the
   * caller must not change it before. Any other block may be detached; the promise settles when it is handed over.
   */
  update(id: number, block: Uint8Array): Promise<void>;
  digest(id: number): Promise<string>;
  /** sha256 of a whole file, read by the worker (files written by code that streams its own bytes). */
  hashFile(path: string): Promise<string>;
  close(): Promise<void>;
}

/** How many hash workers: one per core but one (the main thread reads and writes), at least one, at most four. */
export function hashWorkerCount(): number {
  return Math.max(1, Math.min(4, availableParallelism() - 1));
}

/**
 * Hashers on worker threads; on the main thread where a worker cannot run this module (from TypeScript sources
 * under tsx or vitest, the worker would not have their loader).
 */
export function createTensorHasher(workers = hashWorkerCount()): TensorHasher {
  if (!import.meta.url.endsWith(".js")) return mainThreadHasher();
  const pool: Worker[] = [];
  try {
    for (let i = 0; i < workers; i++) pool.push(new Worker(new URL(import.meta.url), { stdout: false, stderr: false }));
  } catch {
    pool.forEach((w) => void w.terminate());
    return mainThreadHasher();
  }
  let nextId = 0;
  let nextSeq = 0;
  let rr = 0;
  let inFlight = 0;
  let failed: Error | undefined;
  const owner = new Map<number, Worker>();
  const waiters: (() => void)[] = [];
  const pending = new Map<number, { resolve: (hex: string) => void; reject: (e: Error) => void; copied: number }>();
  const fail = (e: Error) => {
    failed ??= e;
    waiters.splice(0).forEach((w) => w());
    for (const p of pending.values()) p.reject(failed);
    pending.clear();
  };
  for (const w of pool) {
    w.unref();
    w.on("message", (m: Reply) => {
      const p = pending.get(m.seq);
      pending.delete(m.seq);
      if (m.op === "ack") {
        inFlight -= p?.copied ?? 0;
        while (inFlight <= MAX_IN_FLIGHT && waiters.length > 0) waiters.shift()?.();
        p?.resolve("");
      } else if (m.op === "hex") p?.resolve(m.hex);
      else p?.reject(new Error(m.message));
    });
    w.on("error", fail);
    w.on("exit", (code) => fail(new Error(`sha256 worker exited (${code})`)));
  }
  const call = (w: Worker, r: Exclude<Request, { op: "start" }>, copied = 0, transfer: ArrayBuffer[] = []) =>
    new Promise<string>((resolve, reject) => {
      if (failed) return reject(failed);
      pending.set(r.seq, { resolve, reject, copied });
      w.postMessage(r, transfer);
    });
  const workerOf = (id: number) => owner.get(id) ?? (pool[0] as Worker);
  return {
    crc: crc32 !== undefined,
    start(kind = "sha256") {
      const id = nextId++;
      const w = pool[rr++ % pool.length] as Worker;
      owner.set(id, w);
      if (kind === "crc32") w.postMessage({ op: "start", id, kind } satisfies Request);
      return id;
    },
    async update(id, block) {
      if (failed) throw failed;
      const w = workerOf(id);
      if (block.buffer instanceof SharedArrayBuffer) {
        await call(w, { op: "update", id, seq: nextSeq++, data: block });
        return;
      }
      const owned = block.byteLength >= TRANSFER_MIN && block.byteOffset === 0 && block.byteLength === block.buffer.byteLength;
      const data = owned ? block : new Uint8Array(block);
      inFlight += data.byteLength;
      void call(w, { op: "update", id, seq: nextSeq++, data }, data.byteLength, [data.buffer as ArrayBuffer]).catch(() => undefined);
      if (inFlight > MAX_IN_FLIGHT) await new Promise<void>((resolve) => waiters.push(resolve));
      if (failed) throw failed;
    },
    async digest(id) {
      const w = workerOf(id);
      owner.delete(id);
      return call(w, { op: "digest", id, seq: nextSeq++ });
    },
    hashFile(path) {
      return call(pool[rr++ % pool.length] as Worker, { op: "file", seq: nextSeq++, path });
    },
    async close() {
      failed ??= new Error("hasher closed");
      await Promise.all(pool.map((w) => w.terminate()));
    },
  };
}

function mainThreadHasher(): TensorHasher {
  const hashes = new Map<number, Hash>();
  let next = 0;
  return {
    crc: false,
    start() {
      hashes.set(next, createHash("sha256"));
      return next++;
    },
    update: async (id, block) => void hashes.get(id)?.update(block),
    digest: async (id) => {
      const h = hashes.get(id);
      hashes.delete(id);
      return h ? h.digest("hex") : "";
    },
    hashFile: async (path) => {
      const h = createHash("sha256");
      for await (const chunk of createReadStream(path, { highWaterMark: FILE_BLOCK })) h.update(chunk as Buffer);
      return h.digest("hex");
    },
    close: async () => undefined,
  };
}

function hashFileSync(path: string, buffer: Uint8Array): string {
  const h = createHash("sha256");
  const fd = openSync(path, "r");
  try {
    for (let pos = 0; ; ) {
      const n = readSync(fd, buffer, 0, buffer.byteLength, pos);
      if (n === 0) break;
      h.update(buffer.subarray(0, n));
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}

// Worker side: the same module, started by createTensorHasher.
if (!isMainThread && parentPort) {
  const port = parentPort;
  const hashes = new Map<number, Hash>();
  const crcs = new Map<number, number>();
  let buffer: Uint8Array | undefined;
  port.on("message", (r: Request) => {
    if (r.op === "start") {
      crcs.set(r.id, 0);
    } else if (r.op === "update" && crcs.has(r.id) && crc32) {
      crcs.set(r.id, crc32(r.data, crcs.get(r.id)));
      port.postMessage({ op: "ack", seq: r.seq, bytes: r.data.byteLength } satisfies Reply);
    } else if (r.op === "digest" && crcs.has(r.id)) {
      const value = crcs.get(r.id) as number;
      crcs.delete(r.id);
      port.postMessage({ op: "hex", seq: r.seq, hex: (value >>> 0).toString(16).padStart(8, "0") } satisfies Reply);
    } else if (r.op === "update") {
      let h = hashes.get(r.id);
      if (!h) hashes.set(r.id, (h = createHash("sha256")));
      h.update(r.data);
      port.postMessage({ op: "ack", seq: r.seq, bytes: r.data.byteLength } satisfies Reply);
    } else if (r.op === "digest") {
      const h = hashes.get(r.id) ?? createHash("sha256");
      hashes.delete(r.id);
      port.postMessage({ op: "hex", seq: r.seq, hex: h.digest("hex") } satisfies Reply);
    } else {
      try {
        buffer ??= new Uint8Array(FILE_BLOCK);
        port.postMessage({ op: "hex", seq: r.seq, hex: hashFileSync(r.path, buffer) } satisfies Reply);
      } catch (e) {
        port.postMessage({ op: "error", seq: r.seq, message: (e as Error).message } satisfies Reply);
      }
    }
  });
}
