/**
 * Rows are read, gathered, hashed and written in blocks of this size: large enough that per-request costs vanish,
 * small enough that the few blocks in flight keep memory near a hundred MiB whatever the model size. Every block
 * size in megahub derives from this one number.
 */
export const DEFAULT_BLOCK_BYTES = 16 << 20;

/**
 * A fixed set of block buffers the executor reuses for every read, gather and write. Fresh 16 MiB allocations cost
 * a page fault per 4 KiB page and garbage-collector time on every block; reused buffers cost neither. The buffers
 * live in shared memory, so the hash workers read the very bytes being written without a copy or a transfer.
 * The pool also bounds memory: work waits for a free buffer instead of allocating past `count × blockBytes`.
 */
export class BlockPool {
  private readonly free: Uint8Array[] = [];
  private readonly waiting: ((block: Uint8Array) => void)[] = [];
  private readonly buffers = new Set<ArrayBufferLike>();

  constructor(
    readonly blockBytes: number,
    readonly count: number,
  ) {
    if (!Number.isSafeInteger(blockBytes) || blockBytes < 1 || !Number.isSafeInteger(count) || count < 1) {
      throw new RangeError(`a block pool needs a positive block size and count, got ${blockBytes} × ${count}`);
    }
  }

  /** A whole buffer of `blockBytes` (created lazily, up to `count`), waiting while all are in use. */
  acquire(): Promise<Uint8Array> {
    const block = this.free.pop();
    if (block) return Promise.resolve(block);
    if (this.buffers.size < this.count) {
      const fresh = new Uint8Array(new SharedArrayBuffer(this.blockBytes));
      this.buffers.add(fresh.buffer);
      return Promise.resolve(fresh);
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Gives a buffer (or any view of one) back; its contents are dead from here on. */
  release(view: Uint8Array): void {
    const block = view.byteOffset === 0 && view.byteLength === this.blockBytes ? view : new Uint8Array(view.buffer, 0, this.blockBytes);
    const next = this.waiting.shift();
    if (next) next(block);
    else this.free.push(block);
  }

  /** Whether `view` lies in one of this pool's buffers (so whoever holds it last must release it, not drop it). */
  owns(view: Uint8Array): boolean {
    return this.buffers.has(view.buffer);
  }
}
