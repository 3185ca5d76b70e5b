import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import type { ReadableStream as NodeWebReadableStream } from "node:stream/web";
import { request, type Dispatcher } from "undici";
import { requestWithBlobBody } from "./blob-request.js";
import { DiskBlob } from "./disk-blob.js";

/**
 * megahub's resumable LFS uploads, an extension of the Hub's LFS batch + multipart protocol that `megahub hub
 * serve` speaks and other servers never see:
 *
 * 1. The batch call carries `X-Megahub-Resume: 1`. A server that knows the extension answers with the same header
 *    and hands out, for an object an earlier push left unfinished, that upload's URLs again. Any other server
 *    ignores an unknown request header, answers without it, and the push uploads as the official clients do.
 * 2. Before sending a body to such a URL (a basic upload or a multipart part), megahub asks it with a GET what it
 *    holds: `{length, received, sha256}` of the bytes from the segment's start. When the sha256 of its own first
 *    `received` bytes matches, it sends only the rest, with `X-Megahub-Offset: received`; a part fully held is
 *    sent as an empty body (the server answers its ETag). Otherwise it sends the whole body, as always.
 * 3. A server whose segment changed in between answers 409; megahub then sends the whole body.
 *
 * Why this and not Xet's chunk dedup: the LFS path is what megahub pushes through (it counts bytes, and works
 * against servers without Xet), the server already keeps an unfinished upload's temp file until it goes idle,
 * and a byte offset loses nothing of what arrived, where part-level resume would lose every part in flight (up
 * to 25 with the client's 5 × 5 parallel uploads). The whole object's sha256 is still checked at completion, and
 * the local hash check means a stale or foreign prefix is never trusted.
 */

/** Request (opt-in) and response (granted) header of the batch call. */
export const RESUME_HEADER = "x-megahub-resume";
/** Request header of a PUT that continues a segment at this byte offset. */
export const OFFSET_HEADER = "x-megahub-offset";
/** Response header of a 409: the bytes the segment holds. */
export const RECEIVED_HEADER = "x-megahub-received";

/** What a resumable upload URL answers to GET (see the server's lfs-segment.ts). */
export interface SegmentStatus {
  /** Bytes of the whole segment: a multipart part, or the whole object of a basic upload. */
  length: number;
  /** Bytes the server holds from the segment's start. */
  received: number;
  /** sha256 hex of those bytes. */
  sha256: string;
}

/** Longest status answer read: it is a few dozen bytes; a server sending more is not trusted with it. */
const MAX_STATUS_BYTES = 4096;

/** Whether a request is an LFS batch call (`…/.git/info/lfs/objects/batch`). */
export function isLfsBatch(method: string, url: string): boolean {
  return method === "POST" && /\.git\/info\/lfs\/objects\/batch$/.test(url.split("?", 1)[0] ?? "");
}

/** The upload URLs a server granted as resumable during one push, and how to send to them. */
export class ResumableUploads {
  private readonly urls = new Set<string>();
  /** Bytes not sent because the server already held them. */
  bytesSkipped = 0;

  constructor(private readonly dispatcher: Dispatcher) {}

  /** The batch call's init with the opt-in header added. */
  batchInit(init: RequestInit | undefined): RequestInit {
    const headers = new Headers(init?.headers);
    headers.set(RESUME_HEADER, "1");
    return { ...init, headers };
  }

  /**
   * Reads a batch answer; when the server granted resumable URLs, remembers them. Returns an equivalent Response
   * (the body had to be read) for the client to parse as usual.
   */
  async noteBatch(res: Response): Promise<Response> {
    if (!res.ok || res.headers.get(RESUME_HEADER) !== "1") return res;
    const text = await res.text();
    try {
      const json = JSON.parse(text) as { objects?: Array<{ actions?: { upload?: { href?: unknown; header?: Record<string, unknown> } } }> };
      for (const obj of Array.isArray(json.objects) ? json.objects : []) {
        const upload = obj?.actions?.upload;
        if (upload === undefined) continue;
        if (upload.header?.chunk_size === undefined) {
          if (typeof upload.href === "string") this.urls.add(upload.href);
        } else {
          for (const [k, v] of Object.entries(upload.header)) if (/^[0-9]+$/.test(k) && typeof v === "string") this.urls.add(v);
        }
      }
    } catch {
      // Not JSON: the client reports that itself.
    }
    const copy = new Response(text, { status: res.status, statusText: res.statusText, headers: res.headers });
    Object.defineProperty(copy, "url", { value: res.url });
    return copy;
  }

  has(url: string): boolean {
    return this.urls.has(url);
  }

  /** PUTs `blob` to a resumable URL, sending only what the server does not hold yet. */
  async send(url: string, init: RequestInit, blob: Blob, onChunk: (n: number) => void): Promise<Response> {
    const held = await this.heldPrefix(url, blob, init.signal ?? undefined);
    if (held > 0) {
      const headers = new Headers(init.headers);
      headers.set(OFFSET_HEADER, String(held));
      const res = await requestWithBlobBody(url, { ...init, headers }, blob.slice(held), this.dispatcher, onChunk);
      if (res.status !== 409) {
        if (res.ok) this.bytesSkipped += held;
        return res;
      }
      await res.body?.cancel().catch(() => undefined);
    }
    return requestWithBlobBody(url, init, blob, this.dispatcher, onChunk);
  }

  /** How many leading bytes of `blob` the server holds, checked against the local bytes; 0 when unsure. */
  private async heldPrefix(url: string, blob: Blob, signal: AbortSignal | undefined): Promise<number> {
    const res = await request(url, {
      method: "GET",
      headers: { accept: "application/json" },
      dispatcher: this.dispatcher,
      ...(signal ? { signal } : {}),
    });
    let text = "";
    for await (const chunk of res.body) {
      text += (chunk as Buffer).toString("utf8");
      if (text.length > MAX_STATUS_BYTES) {
        res.body.destroy();
        return 0;
      }
    }
    if (res.statusCode !== 200) return 0;
    let status: Partial<SegmentStatus>;
    try {
      status = JSON.parse(text) as Partial<SegmentStatus>;
    } catch {
      return 0;
    }
    const { length, received, sha256 } = status;
    if (length !== blob.size || typeof received !== "number" || !Number.isSafeInteger(received)) return 0;
    if (received <= 0 || received > blob.size || typeof sha256 !== "string") return 0;
    return (await sha256Of(blob.slice(0, received))) === sha256 ? received : 0;
  }
}

async function sha256Of(blob: Blob): Promise<string> {
  const hash = createHash("sha256");
  const source = blob instanceof DiskBlob ? blob.nodeStream() : Readable.fromWeb(blob.stream() as NodeWebReadableStream<Uint8Array>);
  for await (const chunk of source) hash.update(chunk as Uint8Array);
  return hash.digest("hex");
}
