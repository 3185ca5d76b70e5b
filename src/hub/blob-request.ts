import { Readable } from "node:stream";
import type { ReadableStream as NodeWebReadableStream } from "node:stream/web";
import { request, Response as UndiciResponse, type Dispatcher } from "undici";
import { DiskBlob } from "./disk-blob.js";

/**
 * Sends a request whose body is a Blob (LFS uploads and multipart parts) with undici's `request` instead of its
 * `fetch`, and wraps the answer as a fetch Response. undici 7's fetch reads a request body as fast as the disk
 * gives it, whatever the socket takes: a 200 MB upload held ~200 MB of buffers (measured); `request` keeps it
 * to a few MB. These URLs are S3-style signed PUT/POST targets that answer directly, so no redirect handling
 * is lost.
 */
export async function requestWithBlobBody(
  url: string,
  init: RequestInit,
  blob: Blob,
  dispatcher: Dispatcher,
  onChunk: ((n: number) => void) | undefined,
): Promise<Response> {
  const headers: Record<string, string> = {};
  new Headers(init.headers).forEach((v, k) => {
    headers[k] = v;
  });
  headers["content-length"] = String(blob.size);
  const source = blob instanceof DiskBlob ? blob.nodeStream() : Readable.fromWeb(blob.stream() as NodeWebReadableStream<Uint8Array>);
  const res = await request(url, {
    method: (init.method ?? "PUT") as Dispatcher.HttpMethod,
    headers,
    body: Readable.from(counted(source, onChunk), { objectMode: false }),
    dispatcher,
    ...(init.signal ? { signal: init.signal } : {}),
  });
  const out: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(res.headers)) {
    if (Array.isArray(v)) for (const x of v) out.push([k, x]);
    else if (v !== undefined) out.push([k, v]);
  }
  const noBody = res.statusCode === 204 || res.statusCode === 205 || res.statusCode === 304;
  // Upload answers are small (empty, an ETag, or a JSON error): read them whole. Wrapping the Node stream with
  // Readable.toWeb instead crashes on Node 20 when the retry loop cancels it ("Controller is already closed").
  const bytes = noBody ? undefined : new Uint8Array(await res.body.arrayBuffer());
  if (noBody) await res.body.dump();
  const response = new UndiciResponse(bytes ?? null, {
    status: res.statusCode,
    statusText: res.statusText,
    headers: out,
  });
  // HubApiError reports `response.url`; a constructed Response has none, so give it the request's.
  Object.defineProperty(response, "url", { value: url });
  return response as unknown as Response;
}

async function* counted(source: Readable, onChunk: ((n: number) => void) | undefined): AsyncGenerator<Uint8Array> {
  for await (const chunk of source) {
    const c = chunk as Uint8Array;
    onChunk?.(c.byteLength);
    yield c;
  }
}
