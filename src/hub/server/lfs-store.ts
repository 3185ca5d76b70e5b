import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import type { IncomingMessage } from "node:http";
import { join } from "node:path";
import { HttpError, readBody } from "./http-util.js";
import type { SegmentStatus } from "../upload-resume.js";
import { requestOffset, Segment } from "./lfs-segment.js";

/** Parts of a multipart upload; the Hub and S3 use 5 MB–5 GB, megahub's local disk is fastest with larger ones. */
export const DEFAULT_CHUNK_SIZE = 64 * 1024 * 1024;
/** How long an upload URL stays valid: long enough for a slow 50 GB upload, short enough not to pile up. */
const TICKET_TTL_MS = 24 * 60 * 60 * 1000;
/**
 * An upload URL that received nothing for this long is given up and its temp file removed: a client that was
 * interrupted asks the batch endpoint again and gets a fresh URL, so nothing is lost but disk.
 */
export const TICKET_IDLE_MS = 60 * 60 * 1000;
/** Bytes of a multipart completion body per part (`{"partNumber":12345,"etag":"\"<32 hex>\""}` and slack). */
const COMPLETE_BYTES_PER_PART = 128;
/** Largest object accepted (the Hub's hard limit is 200 GB per file). */
export const MAX_LFS_OBJECT = 200_000_000_000;
/** Objects per batch call; the JS client sends at most 100, Python 256. */
export const MAX_BATCH_OBJECTS = 1000;

interface Ticket {
  readonly oid: string;
  readonly size: number;
  readonly expires: number;
  readonly chunkSize: number | undefined;
  /** Multipart parts by number (1…n); a basic upload is one segment, number 1, over the whole object. */
  readonly segments: Map<number, Segment>;
  /** Handed out to a client that asked for resumable uploads: later such batch calls for the oid get it again. */
  readonly resumable: boolean;
  /** Last time bytes arrived for it, or a batch call handed it out again. */
  touched: number;
  /** Set once the object is stored: a retry after a lost answer then succeeds instead of finding no URL. */
  stored: boolean;
}

/** What an upload URL did, counted so tests can prove a re-push sent nothing. */
export interface LfsStats {
  /** Objects newly stored (basic PUTs and completed multipart uploads). */
  objectsStored: number;
  /** Every basic PUT and part PUT received, successful or not. */
  puts: number;
  /** Bytes received in PUT bodies. */
  bytesReceived: number;
  /** Uploads refused because the bytes did not hash to the announced oid or size. */
  rejected: number;
  /** PUTs that continued a segment at a byte offset other than 0 (a resumed upload). */
  resumed: number;
}

/** One entry of a batch answer, in the shape @huggingface/hub expects (hub-protocol.md §2, row 6). */
export interface BatchObject {
  oid: string;
  size: number;
  actions?: { upload: { href: string; header?: Record<string, string> } };
  error?: { code: number; message: string };
}

/**
 * Content-addressed LFS storage of the local Hub. The batch call hands out capability URLs (the client sends no
 * Authorization on uploads, like signed S3 URLs); every upload is hashed while it streams to a temp file and only
 * renamed into `lfs/objects/` when its sha256 and size match the oid it was announced with.
 */
export class LfsStore {
  readonly stats: LfsStats = { objectsStored: 0, puts: 0, bytesReceived: 0, rejected: 0, resumed: 0 };
  private readonly tickets = new Map<string, Ticket>();
  /** oid → the resumable ticket a new resumable batch call for it is given. */
  private readonly resumableByOid = new Map<string, string>();

  constructor(
    readonly dataDir: string,
    private readonly chunkSize: number = DEFAULT_CHUNK_SIZE,
  ) {}

  objectPath(oid: string): string {
    return join(this.dataDir, "lfs", "objects", oid.slice(0, 2), oid.slice(2, 4), oid);
  }

  async has(oid: string, size: number): Promise<boolean> {
    return (await this.size(oid)) === size;
  }

  /** Size of a stored object, or undefined. */
  async size(oid: string): Promise<number | undefined> {
    if (!/^[0-9a-f]{64}$/.test(oid)) return undefined;
    const s = await stat(this.objectPath(oid)).catch(() => undefined);
    return s?.isFile() ? s.size : undefined;
  }

  /**
   * Removes every temp file: upload URLs live in memory only, so after a restart no one can finish them. Called
   * once when the server starts; expired and idle tickets lose their temp files as they go (see expireTickets).
   */
  async sweepTemp(): Promise<void> {
    await rm(join(this.dataDir, "lfs", "tmp"), { recursive: true, force: true });
  }

  /** Moves a file whose sha256 and size the caller computed into the store (xet reconstructions). */
  async adopt(tmp: string, sha256: string, size: number): Promise<void> {
    if ((await this.size(sha256)) === size) {
      await rm(tmp, { force: true });
      return;
    }
    const dest = this.objectPath(sha256);
    await mkdir(join(dest, ".."), { recursive: true });
    await rename(tmp, dest);
    this.stats.objectsStored++;
  }

  /** Removes a temp file made by {@link tempFile}. */
  async discard(tmp: string): Promise<void> {
    await rm(tmp, { force: true });
  }

  /** A fresh temp file path under lfs/tmp. */
  async tempFile(prefix: string): Promise<string> {
    return this.tmpPath(`${prefix}-${randomBytes(8).toString("hex")}`);
  }

  /**
   * Answers one batch object: stored → no actions; otherwise a basic or multipart upload URL. With `resumable`
   * (the client sent X-Megahub-Resume), an unfinished resumable ticket for the same object is handed out again,
   * so what an interrupted push sent is kept: the client asks each URL what it holds (GET) and sends the rest.
   * Official clients never ask, and get a fresh ticket each time, as before.
   */
  async batchObject(oid: unknown, size: unknown, baseUrl: string, resumable = false): Promise<BatchObject> {
    if (typeof oid !== "string" || !/^[0-9a-f]{64}$/.test(oid)) {
      return { oid: String(oid), size: Number(size), error: { code: 422, message: "oid must be a sha256 hex digest" } };
    }
    if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0 || size > MAX_LFS_OBJECT) {
      return { oid, size: Number(size), error: { code: 422, message: `size must be an integer up to ${MAX_LFS_OBJECT}` } };
    }
    if (await this.has(oid, size)) return { oid, size };
    await this.expireTickets();
    const multipart = size > this.chunkSize;
    const chunkSize = multipart ? this.chunkSize : undefined;
    const reuse = resumable ? this.resumableByOid.get(oid) : undefined;
    const old = reuse !== undefined ? this.tickets.get(reuse) : undefined;
    if (reuse !== undefined && old !== undefined && !old.stored && old.size === size && old.chunkSize === chunkSize) {
      old.touched = Date.now();
      return this.answer(reuse, old, baseUrl);
    }
    const id = randomBytes(20).toString("hex");
    const segments = new Map<number, Segment>();
    const step = chunkSize ?? Math.max(size, 1);
    for (let i = 1, at = 0; at < size || i === 1; i++, at += step) segments.set(i, new Segment(at, Math.min(step, size - at)));
    const ticket: Ticket = { oid, size, expires: Date.now() + TICKET_TTL_MS, chunkSize, segments, resumable, touched: Date.now(), stored: false };
    this.tickets.set(id, ticket);
    if (resumable) this.resumableByOid.set(oid, id);
    return this.answer(id, ticket, baseUrl);
  }

  private answer(id: string, ticket: Ticket, baseUrl: string): BatchObject {
    const { oid, size } = ticket;
    const href = `${baseUrl}/__megahub/lfs/${id}`;
    if (ticket.chunkSize === undefined) return { oid, size, actions: { upload: { href } } };
    const header: Record<string, string> = { chunk_size: String(ticket.chunkSize) };
    for (const n of ticket.segments.keys()) header[String(n).padStart(5, "0")] = `${href}/part/${n}`;
    return { oid, size, actions: { upload: { href: `${href}/complete`, header } } };
  }

  /**
   * Handles `PUT /__megahub/lfs/<ticket>`, `PUT …/part/<n>` and `POST …/complete`, plus megahub's `GET` of the
   * first two (what the segment holds, see SegmentStatus). Returns the headers, and a body for a GET.
   */
  async handleUpload(
    method: string,
    rest: readonly string[],
    req: IncomingMessage,
    cutAfter?: number,
  ): Promise<{ headers: Record<string, string>; body?: SegmentStatus }> {
    const [id, kind, n] = rest;
    const ticket = id !== undefined ? this.tickets.get(id) : undefined;
    if (id === undefined || ticket === undefined || ticket.expires < Date.now()) {
      req.resume();
      throw new HttpError(404, "unknown or expired upload URL; ask the batch endpoint for a new one");
    }
    ticket.touched = Date.now();
    if (method === "POST" && kind === "complete" && rest.length === 2 && ticket.chunkSize !== undefined) {
      if (!(ticket.stored && (await this.has(ticket.oid, ticket.size)))) await this.complete(id, ticket, req);
      else req.resume();
      return { headers: {} };
    }
    const isPart = kind === "part" && n !== undefined && rest.length === 3 && ticket.chunkSize !== undefined;
    if (!isPart && (kind !== undefined || ticket.chunkSize !== undefined) || (method !== "PUT" && method !== "GET")) {
      req.resume();
      throw new HttpError(405, "this upload URL does not take that request");
    }
    const number = isPart ? (/^\d{1,6}$/.test(n) ? Number(n) : NaN) : 1;
    const segment = ticket.segments.get(number);
    if (segment === undefined) {
      req.resume();
      throw new HttpError(400, `part must be 1..${ticket.segments.size}`);
    }
    if (method === "GET") {
      req.resume();
      await segment.takeOver(); // a writer still going (a dead client's connection) would make the answer stale
      return { headers: { "Cache-Control": "no-store" }, body: segment.status() };
    }
    this.stats.puts++;
    if (ticket.stored && (await this.has(ticket.oid, ticket.size))) {
      // The client did not see our answer (connection lost) and sends again: the object is there, say so.
      req.resume();
      return { headers: isPart ? { ETag: etagOf(segment.digest ?? "stored") } : {} };
    }
    const offset = requestOffset(req, segment.length);
    if (offset > 0) this.stats.resumed++;
    let seen = 0;
    const onBytes = (k: number) => {
      this.stats.bytesReceived += k;
      seen += k;
      if (cutAfter !== undefined && seen >= cutAfter) req.destroy(); // an injected fault: the connection dies mid-body
    };
    const got = await segment.receive(await this.tmpPath(`${id}.upload`), req, offset, onBytes);
    if (!got.complete) {
      this.stats.rejected++;
      throw got.error;
    }
    if (isPart) return { headers: { ETag: etagOf(got.sha256) } };
    await this.store(id, ticket, await this.tmpPath(`${id}.upload`), segment.received, got.sha256);
    return { headers: {} };
  }

  private async complete(id: string, ticket: Ticket, req: IncomingMessage): Promise<void> {
    const count = Math.ceil(ticket.size / (ticket.chunkSize as number));
    // Bounded by the number of parts: an unbounded body here once took the server to 1.3 GB.
    const text = await readBody(req, 4096 + count * COMPLETE_BYTES_PER_PART);
    let body: { oid?: unknown; parts?: unknown };
    try {
      body = JSON.parse(text.toString("utf8")) as typeof body;
    } catch {
      throw new HttpError(400, "completion body is not JSON");
    }
    if (body.oid !== ticket.oid || !Array.isArray(body.parts)) throw new HttpError(400, "completion does not match the upload");
    const byNumber = new Map<unknown, unknown>();
    for (const p of body.parts as Array<{ partNumber?: unknown; etag?: unknown } | null>) {
      if (typeof p === "object" && p !== null) byNumber.set(p.partNumber, p.etag);
    }
    for (const [i, segment] of ticket.segments) {
      if (segment.digest === undefined || byNumber.get(i) !== etagOf(segment.digest)) {
        throw new HttpError(400, `part ${i} is missing or its ETag does not match`);
      }
      if (segment.busy) throw new HttpError(409, `part ${i} is being uploaded again; complete after it`);
    }
    const file = await this.tmpPath(`${id}.upload`);
    // Hashing a many-GB object sends nothing for minutes: the idle timeout must not cut the answer.
    req.socket?.setTimeout(0);
    const hash = createHash("sha256");
    let n = 0;
    for await (const c of createReadStream(file, { highWaterMark: 1 << 20 })) {
      hash.update(c as Buffer);
      n += (c as Buffer).length;
    }
    await this.store(id, ticket, file, n, hash.digest("hex"));
  }

  /** Checks size and sha256, then moves the temp file into the object store. */
  private async store(id: string, ticket: Ticket, tmp: string, size: number, sha256: string): Promise<void> {
    if (size !== ticket.size || sha256 !== ticket.oid) {
      await rm(tmp, { force: true });
      this.forget(id, ticket);
      throw this.reject(
        size !== ticket.size
          ? `upload has ${size} bytes, expected ${ticket.size}`
          : `sha256 of the upload is ${sha256}, not the announced oid ${ticket.oid}`,
      );
    }
    const dest = this.objectPath(ticket.oid);
    await mkdir(join(dest, ".."), { recursive: true });
    await rename(tmp, dest);
    ticket.stored = true;
    if (this.resumableByOid.get(ticket.oid) === id) this.resumableByOid.delete(ticket.oid);
    this.stats.objectsStored++;
  }

  private forget(id: string, ticket: Ticket): void {
    this.tickets.delete(id);
    if (this.resumableByOid.get(ticket.oid) === id) this.resumableByOid.delete(ticket.oid);
  }

  private reject(message: string): HttpError {
    this.stats.rejected++;
    return new HttpError(400, message);
  }

  private async tmpPath(name: string): Promise<string> {
    const dir = join(this.dataDir, "lfs", "tmp");
    await mkdir(dir, { recursive: true });
    return join(dir, name);
  }

  /**
   * Drops expired and idle tickets, removing the temp file of an unfinished upload (what a resumable ticket
   * kept for a later push is given up here too: the idle time bounds how long an interrupted push can resume).
   * Returns how many temp files were removed.
   */
  async expireTickets(now = Date.now(), idleMs = TICKET_IDLE_MS): Promise<number> {
    let removed = 0;
    for (const [id, t] of this.tickets) {
      if (t.expires >= now && now - t.touched < idleMs) continue;
      if ([...t.segments.values()].some((s) => s.busy)) continue; // bytes are arriving right now
      this.forget(id, t);
      if (t.stored) continue;
      const tmp = await this.tmpPath(`${id}.upload`);
      if (await stat(tmp).then(() => true, () => false)) {
        await rm(tmp, { force: true });
        removed++;
      }
    }
    return removed;
  }

  /** Open upload URLs, for tests. */
  get openTickets(): number {
    return this.tickets.size;
  }
}

/** A part's ETag: the first 128 bits of its sha256, quoted as S3 does. */
function etagOf(sha256: string): string {
  return `"${sha256.slice(0, 32)}"`;
}
