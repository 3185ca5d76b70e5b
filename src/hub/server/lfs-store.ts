import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import type { IncomingMessage } from "node:http";
import { join } from "node:path";
import { BatchedWriter } from "../batched-writer.js";
import { HttpError, readBody } from "./http-util.js";

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
  readonly parts: Map<number, string>;
  /** Last time bytes arrived for it. */
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
  readonly stats: LfsStats = { objectsStored: 0, puts: 0, bytesReceived: 0, rejected: 0 };
  private readonly tickets = new Map<string, Ticket>();

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

  /** Answers one batch object: stored → no actions; otherwise a basic or multipart upload URL. */
  async batchObject(oid: unknown, size: unknown, baseUrl: string): Promise<BatchObject> {
    if (typeof oid !== "string" || !/^[0-9a-f]{64}$/.test(oid)) {
      return { oid: String(oid), size: Number(size), error: { code: 422, message: "oid must be a sha256 hex digest" } };
    }
    if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0 || size > MAX_LFS_OBJECT) {
      return { oid, size: Number(size), error: { code: 422, message: `size must be an integer up to ${MAX_LFS_OBJECT}` } };
    }
    if (await this.has(oid, size)) return { oid, size };
    await this.expireTickets();
    const id = randomBytes(20).toString("hex");
    const multipart = size > this.chunkSize;
    this.tickets.set(id, {
      oid,
      size,
      expires: Date.now() + TICKET_TTL_MS,
      chunkSize: multipart ? this.chunkSize : undefined,
      parts: new Map(),
      touched: Date.now(),
      stored: false,
    });
    const href = `${baseUrl}/__megahub/lfs/${id}`;
    if (!multipart) return { oid, size, actions: { upload: { href } } };
    const header: Record<string, string> = { chunk_size: String(this.chunkSize) };
    const n = Math.ceil(size / this.chunkSize);
    for (let i = 1; i <= n; i++) header[String(i).padStart(5, "0")] = `${href}/part/${i}`;
    return { oid, size, actions: { upload: { href: `${href}/complete`, header } } };
  }

  /** Handles `PUT /__megahub/lfs/<ticket>`, `PUT …/part/<n>` and `POST …/complete`. Returns headers to send. */
  async handleUpload(method: string, rest: readonly string[], req: IncomingMessage): Promise<Record<string, string>> {
    const [id, kind, n] = rest;
    const ticket = id !== undefined ? this.tickets.get(id) : undefined;
    if (id === undefined || ticket === undefined || ticket.expires < Date.now()) {
      req.resume();
      throw new HttpError(404, "unknown or expired upload URL; ask the batch endpoint for a new one");
    }
    ticket.touched = Date.now();
    if (ticket.stored && (await this.has(ticket.oid, ticket.size))) {
      // The client did not see our answer (connection lost) and sends again: the object is there, say so.
      req.resume();
      return kind === "part" ? { ETag: ticket.parts.get(Number(n)) ?? '"stored"' } : {};
    }
    if (method === "PUT" && kind === undefined && ticket.chunkSize === undefined) {
      await this.receiveWhole(id, ticket, req);
      return {};
    }
    if (method === "PUT" && kind === "part" && n !== undefined && ticket.chunkSize !== undefined) {
      return { ETag: await this.receivePart(id, ticket, Number(n), req) };
    }
    if (method === "POST" && kind === "complete" && ticket.chunkSize !== undefined) {
      await this.complete(id, ticket, req);
      return {};
    }
    req.resume();
    throw new HttpError(405, "this upload URL does not take that request");
  }

  private async receiveWhole(id: string, ticket: Ticket, req: IncomingMessage): Promise<void> {
    this.stats.puts++;
    const tmp = await this.tmpPath(`${id}-${randomBytes(4).toString("hex")}`);
    const hash = createHash("sha256");
    let n = 0;
    const fh = await open(tmp, "w");
    const out = new BatchedWriter(fh, null);
    try {
      // Past the announced size, bytes are read and dropped (not thrown on), so the client gets a clean 400.
      for await (const chunk of req) {
        const buf = chunk as Buffer;
        n += buf.length;
        this.stats.bytesReceived += buf.length;
        if (n > ticket.size) continue;
        hash.update(buf);
        await out.write(buf);
      }
      await out.flush();
    } catch (e) {
      await fh.close();
      await rm(tmp, { force: true });
      throw e;
    }
    await fh.close();
    await this.store(id, ticket, tmp, n, hash.digest("hex"));
  }

  private async receivePart(id: string, ticket: Ticket, part: number, req: IncomingMessage): Promise<string> {
    this.stats.puts++;
    const chunkSize = ticket.chunkSize as number;
    const count = Math.ceil(ticket.size / chunkSize);
    if (!Number.isInteger(part) || part < 1 || part > count) {
      req.resume();
      throw new HttpError(400, `part must be 1..${count}`);
    }
    const offset = (part - 1) * chunkSize;
    const expected = Math.min(chunkSize, ticket.size - offset);
    const file = await this.tmpPath(`${id}.multipart`);
    await (await open(file, "a")).close(); // create once; parts then write in place, in any order
    const fh = await open(file, "r+");
    const out = new BatchedWriter(fh, offset);
    const hash = createHash("sha256");
    let n = 0;
    try {
      for await (const chunk of req) {
        const buf = chunk as Buffer;
        this.stats.bytesReceived += buf.length;
        // Never write past this part's range (it would corrupt the next part): count, drop, refuse below.
        if (n + buf.length <= expected) {
          hash.update(buf);
          await out.write(buf);
        }
        n += buf.length;
      }
      await out.flush();
    } finally {
      await fh.close();
    }
    if (n !== expected) throw this.reject(`part ${part} has ${n} bytes, expected ${expected}`);
    const etag = `"${hash.digest("hex").slice(0, 32)}"`;
    ticket.parts.set(part, etag);
    return etag;
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
    for (let i = 1; i <= count; i++) {
      const sent = { etag: byNumber.get(i) };
      if (ticket.parts.get(i) === undefined || sent?.etag !== ticket.parts.get(i)) {
        throw new HttpError(400, `part ${i} is missing or its ETag does not match`);
      }
    }
    const file = await this.tmpPath(`${id}.multipart`);
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
      this.tickets.delete(id);
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
    this.stats.objectsStored++;
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

  /** Drops expired and idle tickets, removing the temp file of an unfinished multipart upload. */
  async expireTickets(now = Date.now(), idleMs = TICKET_IDLE_MS): Promise<number> {
    let removed = 0;
    for (const [id, t] of this.tickets) {
      if (t.expires >= now && now - t.touched < idleMs) continue;
      this.tickets.delete(id);
      if (!t.stored && t.chunkSize !== undefined) {
        await rm(await this.tmpPath(`${id}.multipart`), { force: true });
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
