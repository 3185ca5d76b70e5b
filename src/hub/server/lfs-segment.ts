import { createHash, type Hash } from "node:crypto";
import { open } from "node:fs/promises";
import type { IncomingMessage } from "node:http";
import { BatchedWriter } from "../batched-writer.js";
import { OFFSET_HEADER, RECEIVED_HEADER, type SegmentStatus } from "../upload-resume.js";
import { HttpError } from "./http-util.js";

/** Outcome of one PUT into a segment. */
export type ReceiveResult = { complete: true; sha256: string } | { complete: false; error: HttpError };

/**
 * One byte range of an upload's temp file that one request at a time writes: a multipart part, or the whole
 * object of a basic upload. It remembers how many bytes it holds and their running sha256, also after the
 * request that sent them died, so a later request can continue at that offset instead of sending it all again.
 * Bytes only count as held once they were handed to the file writer; an interrupted request flushes before it
 * lets go, so what is held is on disk when the next writer starts.
 */
export class Segment {
  received = 0;
  private hash: Hash = createHash("sha256");
  /** sha256 hex of the complete segment. */
  digest: string | undefined;
  private writer: { req: IncomingMessage; done: Promise<void> } | undefined;

  constructor(
    /** Offset of the segment in the temp file. */
    readonly start: number,
    readonly length: number,
  ) {}

  get busy(): boolean {
    return this.writer !== undefined;
  }

  status(): SegmentStatus {
    return { length: this.length, received: this.received, sha256: this.digest ?? this.hash.copy().digest("hex") };
  }

  /**
   * Makes the caller the segment's only writer: a request still writing is cut (the newest request wins — a
   * client resuming after a crash must not wait for its own dead connection to time out) and waited for.
   */
  async takeOver(): Promise<void> {
    while (this.writer !== undefined) {
      const w = this.writer;
      w.req.destroy();
      await w.done;
    }
  }

  /**
   * Writes the request body at `offset` of the segment. Offset 0 starts over; any other offset must equal the
   * bytes held (else 409, with the held count in a header). `onBytes` counts every body byte received.
   */
  async receive(file: string, req: IncomingMessage, offset: number, onBytes: (n: number) => void): Promise<ReceiveResult> {
    await this.takeOver();
    let release!: () => void;
    this.writer = { req, done: new Promise<void>((r) => (release = r)) };
    try {
      if (offset === 0) this.reset();
      else if (offset !== this.received) {
        req.resume();
        throw new HttpError(409, `this upload holds ${this.received} bytes of the part, not ${offset}`, undefined, {
          [RECEIVED_HEADER]: String(this.received),
        });
      }
      if (this.digest !== undefined) {
        // Complete already (a retry whose answer was lost): nothing more may arrive.
        let extra = 0;
        for await (const c of req) extra += (c as Buffer).length;
        onBytes(extra);
        return extra === 0 ? { complete: true, sha256: this.digest } : { complete: false, error: this.tooLong(extra) };
      }
      return await this.write(file, req, onBytes);
    } finally {
      this.writer = undefined;
      release();
    }
  }

  private async write(file: string, req: IncomingMessage, onBytes: (n: number) => void): Promise<ReceiveResult> {
    await (await open(file, "a")).close(); // create once; segments then write in place, in any order
    const fh = await open(file, "r+");
    const out = new BatchedWriter(fh, this.start + this.received);
    let overflow = 0;
    try {
      for await (const chunk of req) {
        const buf = chunk as Buffer;
        onBytes(buf.length);
        // Never write past this segment (it would corrupt the next one): count, drop, refuse below.
        if (overflow > 0 || this.received + buf.length > this.length) {
          overflow += buf.length;
          continue;
        }
        this.hash.update(buf);
        await out.write(buf);
        this.received += buf.length;
      }
      await out.flush();
    } catch (e) {
      // The connection died: keep what arrived for the next request, if it reached the disk.
      await out.flush().catch(() => this.reset());
      throw e;
    } finally {
      await fh.close();
    }
    if (overflow > 0) {
      const error = this.tooLong(this.received + overflow);
      this.reset();
      return { complete: false, error };
    }
    if (this.received < this.length) {
      return { complete: false, error: new HttpError(400, `part has ${this.received} bytes, expected ${this.length}`) };
    }
    this.digest = this.hash.digest("hex");
    return { complete: true, sha256: this.digest };
  }

  private tooLong(n: number): HttpError {
    return new HttpError(400, `part has ${n} bytes, expected ${this.length}`);
  }

  private reset(): void {
    this.received = 0;
    this.hash = createHash("sha256");
    this.digest = undefined;
  }
}

/** The offset header of a request: 0 when absent; a 400 for anything but a decimal within the segment. */
export function requestOffset(req: IncomingMessage, length: number): number {
  const raw = req.headers[OFFSET_HEADER];
  if (raw === undefined) return 0;
  const n = typeof raw === "string" && /^\d{1,15}$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n > length) {
    req.resume();
    throw new HttpError(400, `${OFFSET_HEADER} must be a byte offset from 0 to ${length}`);
  }
  return n;
}
