/**
 * When and how long to wait before retrying a Hub request. @huggingface/hub has no retry of its own on the commit
 * and upload paths (hub-protocol.md §1.1), so megahub's injected fetch applies this policy to every request.
 */

/** Retry bounds of the injected fetch. */
export interface RetryPolicy {
  /** Retries after the first attempt. @default 6 */
  maxRetries: number;
  /** First backoff step in ms; doubles each attempt. @default 500 */
  baseDelayMs: number;
  /** Cap of one computed backoff step. @default 30_000 */
  maxDelayMs: number;
  /**
   * Longest `Retry-After` megahub waits for. Rate limits on the Hub are per 5 minutes or per hour; waiting longer
   * than this gives the user the error (with "run again") instead of a silent hour-long pause. @default 300_000
   */
  maxRetryAfterMs: number;
}

/** Up to 6 retries over ~30 s of backoff, plus any `Retry-After` up to 5 minutes. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxRetries: 6,
  baseDelayMs: 500,
  maxDelayMs: 30_000,
  maxRetryAfterMs: 300_000,
};

/** 408, 429 and 5xx except 501 (not implemented will not start working). */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status !== 501);
}

/**
 * Errors that mean the request may not have reached the server or the connection died: worth another try. An
 * abort is the caller's decision and never retried.
 */
export function isRetryableError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  if (e.name === "AbortError") return false;
  // undici's fetch wraps socket errors as TypeError("fetch failed", { cause }).
  const cause = (e as { cause?: unknown }).cause;
  const code = cause instanceof Error ? (cause as NodeJS.ErrnoException).code : (e as NodeJS.ErrnoException).code;
  if (typeof code === "string") {
    return /^(ECONNRESET|ECONNREFUSED|ECONNABORTED|EPIPE|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|EAI_AGAIN|UND_ERR_(SOCKET|CLOSED|CONNECT_TIMEOUT|HEADERS_TIMEOUT|BODY_TIMEOUT))$/.test(
      code,
    );
  }
  return e instanceof TypeError && e.message === "fetch failed";
}

/**
 * Parses `Retry-After` (delta-seconds or an HTTP date) into ms, or undefined when absent or unparseable.
 * `now` is injectable for tests.
 */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) {
    return Math.round(Number(v) * 1000);
  }
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * Exponential backoff with "equal jitter": half the step is fixed, half random. Jitter spreads the retries of the
 * five parallel uploads the client runs, so they do not hit a recovering server in lockstep.
 */
export function backoffDelay(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const step = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
  return Math.round(step / 2 + random() * (step / 2));
}
