import { open, type FileHandle } from "node:fs/promises";
import { MegahubError } from "../errors.js";
import type { TensorHasher } from "./hasher.js";
import type { BlockPool } from "./pool.js";

/** Where a writer puts a file's bytes, front to back. */
export interface Sink {
  /**
   * Appends a block. It may still be in flight when the promise settles (the promise only waits for room): the
   * caller hands the block over and must not change it again. A block from the executor's pool goes back to it once
   * written and hashed.
   */
  append(data: Uint8Array, tensorHashes?: readonly number[]): Promise<void>;
}

export interface OutputFileOptions {
  hasher?: TensorHasher;
  /** sha256 of the whole file (default true when a hasher is given). */
  hashFile?: boolean;
  pool?: BlockPool;
  /** Blocks in flight (written or hashed) before append waits. */
  depth: number;
}

/**
 * An output file written with positional writes, several blocks in flight, and hashed as it is written: every block
 * is handed to the file's sha256 (and to any tensor hashes) in file order, so the file's digest — the LFS oid `push`
 * needs — costs no second pass over the bytes.
 */
export class OutputFile implements Sink {
  private pos = 0;
  private readonly inFlight = new Set<Promise<void>>();
  /** Settles once the previous block has been posted to the hashers: blocks reach them in file order. */
  private posted: Promise<void> = Promise.resolve();
  private failure: unknown;
  private readonly fileHash: number | undefined;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly options: OutputFileOptions,
  ) {
    this.fileHash = options.hashFile === false ? undefined : options.hasher?.start();
  }

  /** Creates `path` (an existing file is refused) for reading back and writing. */
  static async create(path: string, options: OutputFileOptions): Promise<OutputFile> {
    return new OutputFile(path, await open(path, "wx+"), options);
  }

  get bytes(): number {
    return this.pos;
  }

  async append(data: Uint8Array, tensorHashes: readonly number[] = []): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    const at = this.pos;
    this.pos += data.byteLength;
    const written = writeAll(this.handle, data, at);
    const ids = [...(this.fileHash === undefined ? [] : [this.fileHash]), ...tensorHashes];
    const hasher = this.options.hasher;
    const shared = data.buffer instanceof SharedArrayBuffer;
    const previous = this.posted;
    // A block in shared memory is hashed while it is being written; any other may be detached by the hand-over,
    // so it waits for its write. Either way blocks are posted in order.
    const posting = (async () => {
      await previous;
      if (!shared) await written;
      if (!hasher) return [];
      // Each hash but the last gets its own copy of a heap block (a transfer would detach it for the others).
      return ids.map((id, i) => hasher.update(id, shared || i === ids.length - 1 ? data : new Uint8Array(data)));
    })();
    this.posted = posting.then(
      () => undefined,
      () => undefined,
    );
    const done = Promise.all([written, posting.then((updates) => Promise.all(updates))]).then(
      () => undefined,
      (e: unknown) => void (this.failure ??= e),
    );
    const tracked = done.finally(() => {
      this.inFlight.delete(tracked);
      if (this.options.pool?.owns(data)) this.options.pool.release(data);
    });
    this.inFlight.add(tracked);
    while (this.inFlight.size >= this.options.depth) await Promise.race(this.inFlight);
    if (this.failure !== undefined) throw this.failure;
  }

  /** The digest of a tensor hash fed through append, asked for after its last block has reached the hasher. */
  async digest(id: number): Promise<string | undefined> {
    await this.posted;
    return this.options.hasher?.digest(id);
  }

  /** Waits until every block appended so far is on disk and hashed. */
  async drain(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.race(this.inFlight);
    if (this.failure !== undefined) throw this.failure;
  }

  /** Reads back bytes already written (call drain first): a repeated tensor is copied, not made again. */
  async readAt(target: Uint8Array, position: number): Promise<void> {
    const { bytesRead } = await this.handle.read(target, 0, target.byteLength, position);
    if (bytesRead !== target.byteLength) {
      throw new MegahubError("OUTPUT", `short read of ${bytesRead} of ${target.byteLength} bytes while copying a repeated tensor`, { file: this.path });
    }
  }

  /** Finishes the file: every write done, the handle closed; returns its size and sha256 (when hashing). */
  async close(): Promise<{ bytes: number; sha256?: string }> {
    try {
      await this.drain();
    } finally {
      await this.handle.close();
    }
    const sha256 = this.fileHash === undefined ? undefined : await this.options.hasher?.digest(this.fileHash);
    return { bytes: this.pos, ...(sha256 === undefined ? {} : { sha256 }) };
  }

  /** After a failure: lets the writes in flight settle (their buffers go back to the pool) and closes the handle. */
  async abort(): Promise<void> {
    await Promise.allSettled([...this.inFlight]);
    await this.handle.close().catch(() => undefined);
  }
}

async function writeAll(handle: FileHandle, block: Uint8Array, pos: number): Promise<void> {
  let off = 0;
  while (off < block.byteLength) {
    const { bytesWritten } = await handle.write(block, off, block.byteLength - off, pos + off);
    off += bytesWritten;
  }
}
