import type { FileHandle } from "node:fs/promises";

/** Bytes gathered before one `writev`: sockets deliver 16–64 KiB chunks, and a syscall per chunk halved throughput. */
const BATCH_BYTES = 4 << 20;

/**
 * Writes network chunks to a file in few large `writev` calls, at a running position (for multipart parts written
 * in place) or appended (position null). Memory stays bounded by {@link BATCH_BYTES}. Call `flush()` at the end.
 */
export class BatchedWriter {
  private chunks: Uint8Array[] = [];
  private pending = 0;

  constructor(
    private readonly fh: FileHandle,
    private position: number | null,
  ) {}

  async write(chunk: Uint8Array): Promise<void> {
    this.chunks.push(chunk);
    this.pending += chunk.byteLength;
    if (this.pending >= BATCH_BYTES) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.pending === 0) return;
    const chunks = this.chunks;
    const n = this.pending;
    this.chunks = [];
    this.pending = 0;
    const { bytesWritten } = await this.fh.writev(chunks, this.position ?? undefined);
    if (bytesWritten < n) {
      // A short writev is legal; finish the rest with plain writes.
      const rest = Buffer.concat(chunks).subarray(bytesWritten);
      let done = 0;
      while (done < rest.length) {
        const at = this.position === null ? null : this.position + bytesWritten + done;
        done += (await this.fh.write(rest, done, rest.length - done, at)).bytesWritten;
      }
    }
    if (this.position !== null) this.position += n;
  }
}
