import { setTimeout as delay } from "node:timers/promises";
import { Agent, fetch as undiciFetch, type RequestInit as UndiciRequestInit } from "undici";
import { requestWithBlobBody } from "./blob-request.js";
import { redact } from "./redact.js";
import { isLfsBatch, ResumableUploads } from "./upload-resume.js";
import {
  backoffDelay,
  DEFAULT_RETRY_POLICY,
  isRetryableError,
  isRetryableStatus,
  parseRetryAfter,
  type RetryPolicy,
} from "./retry.js";

/** One retry about to happen, for the reporter (`url` already redacted). */
export interface RetryEvent {
  readonly method: string;
  readonly url: string;
  /** 1 for the first retry. */
  readonly attempt: number;
  /** `"HTTP 503"` or the connection error code. */
  readonly reason: string;
  readonly delayMs: number;
}

/** Options of {@link createHubFetch}; all optional. */
export interface HubFetchOptions {
  retry?: Partial<RetryPolicy>;
  /**
   * Called as request-body bytes leave (LFS PUTs, multipart parts). `path` is the repo path when the client said
   * which file the body belongs to. A failed attempt reports its bytes back as a negative delta, so totals stay
   * true across retries.
   */
  onUploadBytes?: (path: string | undefined, delta: number) => void;
  onRetry?: (event: RetryEvent) => void;
  /** Injectable for tests that check the waits without waiting. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  random?: () => number;
  /** Parallel sockets per origin. The client runs 5 uploads × 5 parts at most. @default 32 */
  connections?: number;
  /** Time allowed for response headers; the Hub can take minutes to answer a big commit. @default 900_000 */
  headersTimeoutMs?: number;
  /** Longest silence while a body streams: catches transfers "stuck at 99%". @default 120_000 */
  bodyTimeoutMs?: number;
  /** Extra strings to mask in retry events (the token). */
  secrets?: readonly string[];
  /**
   * After a lost answer to an LFS upload (a basic PUT or a multipart `/complete`), the retry meets an upload URL
   * the server already used up (404). This asks the Hub whether it stored the object (by oid, or by the repo
   * path of the file being uploaded); when it did, the upload counts as done instead of failing the push.
   */
  confirmStored?: (upload: { oid?: string | undefined; path?: string | undefined }) => Promise<boolean>;
  /**
   * Ask LFS batch calls for resumable upload URLs and send only the bytes the server lacks (see
   * upload-resume.ts); servers without the extension get plain uploads. @default true
   */
  resumeUploads?: boolean;
}

/** A fetch for @huggingface/hub plus what it counted. Call `close()` to release the sockets. */
export interface HubFetch {
  readonly fetch: typeof fetch;
  readonly stats: { requests: number; retries: number; confirmedStored: number; bytesSkipped: number };
  close(): Promise<void>;
}

/**
 * Builds the fetch megahub injects into every @huggingface/hub call: undici 7 with one keep-alive Agent (one TLS
 * handshake per socket, not per request), retries with backoff and jitter on connection errors, 408/429/5xx
 * (honouring `Retry-After`), and byte counting of upload bodies — the client's own byte progress only works in
 * browsers (hub-protocol.md §1.1).
 *
 * Bodies that can be sent again (strings, bytes, Blobs) are retried for every method, POST included: the Hub's
 * preupload and LFS batch calls are idempotent, and a commit replayed after a lost response is detected by
 * pushFolder (the branch head moved) and checked against the remote tree. Blob bodies (LFS objects and parts)
 * go through undici's `request`, which streams them with backpressure (see requestWithBlobBody).
 */
export function createHubFetch(options: HubFetchOptions = {}): HubFetch {
  const policy: RetryPolicy = { ...DEFAULT_RETRY_POLICY, ...options.retry };
  const sleep = options.sleep ?? ((ms: number, signal?: AbortSignal) => delay(ms, undefined, { signal }));
  const random = options.random ?? Math.random;
  const agent = new Agent({
    connections: options.connections ?? 32,
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 600_000,
    headersTimeout: options.headersTimeoutMs ?? 900_000,
    bodyTimeout: options.bodyTimeoutMs ?? 120_000,
  });
  const stats = { requests: 0, retries: 0, confirmedStored: 0, bytesSkipped: 0 };
  const secrets = options.secrets ?? [];
  const resumable = options.resumeUploads === false ? undefined : new ResumableUploads(agent);

  const hubFetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    if (input instanceof Request) {
      // @huggingface/hub only passes URLs; a Request object has a one-shot body we could not replay anyway.
      return fetch(input, init);
    }
    const url = String(input);
    const method = (init?.method ?? "GET").toUpperCase();
    const body = init?.body;
    const replayable =
      body === undefined ||
      body === null ||
      typeof body === "string" ||
      body instanceof Blob ||
      body instanceof ArrayBuffer ||
      ArrayBuffer.isView(body) ||
      body instanceof URLSearchParams;
    const path = progressPath(init);
    const upload = uploadOf(method, body, init);
    const batch = resumable !== undefined && isLfsBatch(method, url);
    const sendInit = batch ? resumable.batchInit(init) : init;
    let answerLost = false;
    for (let attempt = 0; ; attempt++) {
      let sent = 0;
      const rollback = () => {
        if (sent > 0) options.onUploadBytes?.(path, -sent);
        sent = 0;
      };
      const count = (n: number) => {
        sent += n;
        options.onUploadBytes?.(path, n);
      };
      stats.requests++;
      let res: Response;
      try {
        res =
          body instanceof Blob
            ? method === "PUT" && resumable?.has(url)
              ? await resumable.send(url, init ?? {}, body, count)
              : await requestWithBlobBody(url, init ?? {}, body, agent, count)
            : ((await undiciFetch(url, { ...(sendInit as UndiciRequestInit), dispatcher: agent })) as unknown as Response);
      } catch (e) {
        rollback();
        answerLost = true;
        if (!replayable || attempt >= policy.maxRetries || init?.signal?.aborted || !isRetryableError(e)) {
          throw e;
        }
        const wait = backoffDelay(attempt, policy, random);
        report(method, url, attempt, errorReason(e), wait);
        await sleep(wait, init?.signal ?? undefined);
        continue;
      }
      if ((res.status === 404 || res.status === 410) && answerLost && upload !== undefined && options.confirmStored) {
        if (await options.confirmStored(upload).catch(() => false)) {
          await res.body?.cancel().catch(() => undefined);
          stats.confirmedStored++;
          return new Response(null, { status: 200, headers: { ETag: '"confirmed-stored"' } });
        }
      }
      if (!isRetryableStatus(res.status) || !replayable || attempt >= policy.maxRetries) {
        if (resumable !== undefined) stats.bytesSkipped = resumable.bytesSkipped;
        return batch ? resumable.noteBatch(res) : res;
      }
      const retryAfter = parseRetryAfter(res.headers.get("retry-after"));
      if (retryAfter !== undefined && retryAfter > policy.maxRetryAfterMs) {
        return res; // the caller turns this into "rate-limited, run again later"
      }
      rollback();
      await res.body?.cancel().catch(() => undefined); // free the socket for reuse
      const wait = retryAfter ?? backoffDelay(attempt, policy, random);
      report(method, url, attempt, `HTTP ${res.status}`, wait);
      await sleep(wait, init?.signal ?? undefined);
    }
  };

  function report(method: string, url: string, attempt: number, reason: string, delayMs: number): void {
    stats.retries++;
    options.onRetry?.({ method, url: redact(url, secrets), attempt: attempt + 1, reason, delayMs });
  }

  return {
    fetch: hubFetch as typeof fetch,
    stats,
    close: () => agent.close(),
  };
}

/** The LFS object a request uploads whole: a basic PUT (progress hint without a part) or a multipart `/complete`. */
function uploadOf(method: string, body: unknown, init: RequestInit | undefined): { oid?: string; path?: string } | undefined {
  const hint = (init as { progressHint?: { path?: unknown; part?: unknown } } | undefined)?.progressHint;
  if (method === "PUT" && body instanceof Blob && typeof hint?.path === "string" && hint.part === undefined) return { path: hint.path };
  if (method === "POST" && typeof body === "string" && body.startsWith("{")) {
    try {
      const j = JSON.parse(body) as { oid?: unknown; parts?: unknown };
      if (typeof j.oid === "string" && Array.isArray(j.parts)) return { oid: j.oid };
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** @huggingface/hub passes `progressHint: { path }` in the init of LFS uploads; it is not part of RequestInit. */
function progressPath(init: RequestInit | undefined): string | undefined {
  const hint = (init as { progressHint?: { path?: unknown } } | undefined)?.progressHint;
  return typeof hint?.path === "string" ? hint.path : undefined;
}

function errorReason(e: unknown): string {
  const cause = e instanceof Error ? (e as { cause?: unknown }).cause : undefined;
  const code = cause instanceof Error ? (cause as NodeJS.ErrnoException).code : undefined;
  return code ?? (e instanceof Error ? e.message : String(e));
}
