import { createHash, type Hash } from "node:crypto";
import { isMainThread, parentPort, Worker } from "node:worker_threads";

/**
 * sha256 of output tensors on a worker thread, so hashing overlaps with reading and writing instead of taking
 * main-thread time (it more than doubled a conversion's wall time). The executor hands a block over only after it
 * has been written: a large block that owns its buffer is transferred (no copy), anything else is copied. At most
 * MAX_IN_FLIGHT bytes wait in the worker, so memory stays bounded when it falls behind.
 */
const MAX_IN_FLIGHT = 64 << 20;
/** Below this a copy is cheaper than a transfer, and small blocks may be views of shared constants. */
const TRANSFER_MIN = 1 << 20;

type Request = { op: "update"; id: number; data: Uint8Array } | { op: "digest"; id: number };
type Reply = { op: "ack"; bytes: number } | { op: "digest"; id: number; hex: string };

export interface TensorHasher {
  /** Starts a hash; returns its id. */
  start(): number;
  /** Adds a block the caller will not touch again (it may be detached). */
  update(id: number, block: Uint8Array): Promise<void>;
  digest(id: number): Promise<string>;
  close(): Promise<void>;
}

/**
 * A hasher on a worker thread; on the main thread where a worker cannot run this module (from TypeScript
 * sources under tsx or vitest, the worker would not have their loader).
 */
export function createTensorHasher(): TensorHasher {
  if (!import.meta.url.endsWith(".js")) return mainThreadHasher();
  let worker: Worker;
  try {
    worker = new Worker(new URL(import.meta.url), { stdout: false, stderr: false });
  } catch {
    return mainThreadHasher();
  }
  worker.unref();
  let next = 0;
  let inFlight = 0;
  let failed: Error | undefined;
  const waiters: (() => void)[] = [];
  const digests = new Map<number, { resolve: (hex: string) => void; reject: (e: Error) => void }>();
  worker.on("message", (m: Reply) => {
    if (m.op === "ack") {
      inFlight -= m.bytes;
      while (inFlight <= MAX_IN_FLIGHT && waiters.length > 0) waiters.shift()?.();
    } else {
      digests.get(m.id)?.resolve(m.hex);
      digests.delete(m.id);
    }
  });
  const fail = (e: Error) => {
    failed = e;
    waiters.splice(0).forEach((w) => w());
    for (const d of digests.values()) d.reject(e);
    digests.clear();
  };
  worker.on("error", fail);
  worker.on("exit", (code) => failed ?? fail(new Error(`sha256 worker exited (${code})`)));
  const send = (r: Request, transfer: ArrayBuffer[] = []) => worker.postMessage(r, transfer);
  return {
    start: () => next++,
    async update(id, block) {
      if (failed) throw failed;
      const owned = block.byteLength >= TRANSFER_MIN && block.byteOffset === 0 && block.byteLength === block.buffer.byteLength;
      const data = owned ? block : new Uint8Array(block);
      inFlight += data.byteLength;
      send({ op: "update", id, data }, [data.buffer as ArrayBuffer]);
      if (inFlight > MAX_IN_FLIGHT) await new Promise<void>((resolve) => waiters.push(resolve));
      if (failed) throw failed;
    },
    digest(id) {
      if (failed) return Promise.reject(failed);
      return new Promise((resolve, reject) => {
        digests.set(id, { resolve, reject });
        send({ op: "digest", id });
      });
    },
    async close() {
      failed ??= new Error("hasher closed");
      await worker.terminate();
    },
  };
}

function mainThreadHasher(): TensorHasher {
  const hashes = new Map<number, Hash>();
  let next = 0;
  return {
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
    close: async () => undefined,
  };
}

// Worker side: the same module, started by createTensorHasher.
if (!isMainThread && parentPort) {
  const port = parentPort;
  const hashes = new Map<number, Hash>();
  port.on("message", (r: Request) => {
    if (r.op === "update") {
      let h = hashes.get(r.id);
      if (!h) hashes.set(r.id, (h = createHash("sha256")));
      h.update(r.data);
      port.postMessage({ op: "ack", bytes: r.data.byteLength } satisfies Reply);
    } else {
      const h = hashes.get(r.id) ?? createHash("sha256");
      hashes.delete(r.id);
      port.postMessage({ op: "digest", id: r.id, hex: h.digest("hex") } satisfies Reply);
    }
  });
}
