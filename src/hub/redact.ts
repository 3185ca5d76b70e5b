import { HubApiError } from "@huggingface/hub";
import { isMegahubError, MegahubError } from "../errors.js";

/**
 * Secrets that can reach an error message: the user's token (never sent in URLs, but servers echo headers in
 * error bodies), signed upload URLs (S3 signatures in the query, megahub's own LFS tickets in the path), and the
 * `Authorization` header. They are masked before anything is printed or logged.
 */
const TOKEN_PATTERN = /hf_[A-Za-z0-9_-]{4,}/g;
const LFS_TICKET_PATTERN = /(\/__megahub\/lfs\/)[0-9a-f]{16,}/g;
const SIGNED_QUERY_PATTERN = /(https?:\/\/[^\s?"']+)\?(?=[^\s"']*(?:signature|x-amz-|token|sig=|key=))[^\s"']*/gi;
const BEARER_PATTERN = /(Bearer\s+)[^\s"']+/gi;

/** Masks tokens, bearer values, signed-URL queries and LFS upload tickets, plus any extra `secrets` given. */
export function redact(text: string, secrets: readonly (string | undefined)[] = []): string {
  let out = text;
  for (const s of secrets) {
    if (s !== undefined && s.length >= 4) {
      out = out.split(s).join("hf_***");
    }
  }
  return out
    .replace(TOKEN_PATTERN, "hf_***")
    .replace(BEARER_PATTERN, "$1***")
    .replace(LFS_TICKET_PATTERN, "$1***")
    .replace(SIGNED_QUERY_PATTERN, "$1?***");
}

/** Keeps a one-line message one line, and short: server bodies can hold HTML pages or stack traces. */
function oneLine(text: string, max = 400): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > max ? `${flat.slice(0, max)}…` : flat;
}

/**
 * Turns anything a Hub call threw into one clear, redacted MegahubError("HUB"). `doing` says what megahub was
 * doing ("creating repo x/y"); status-specific hints tell the user what to change.
 */
export function toHubError(e: unknown, doing: string, secrets: readonly (string | undefined)[] = []): MegahubError {
  if (isMegahubError(e)) {
    return e.message.includes("hf_") ? new MegahubError(e.code, redact(e.message, secrets)) : e;
  }
  if (e instanceof HubApiError) {
    const hint = statusHint(e.statusCode);
    // HubApiError's message ends with ". URL: … Request ID: …": the URL is useful, but redacted.
    const detail = oneLine(redact(e.message, secrets));
    return new MegahubError("HUB", `${doing}: the Hub answered ${e.statusCode}: ${detail}${hint ? ` (${hint})` : ""}`);
  }
  if (e instanceof Error && e.name === "AbortError") {
    return new MegahubError("HUB", `${doing}: aborted`);
  }
  if (e instanceof Error) {
    const cause = (e as { cause?: unknown }).cause;
    const code = cause instanceof Error ? ((cause as NodeJS.ErrnoException).code ?? cause.message) : undefined;
    const detail = code !== undefined ? `${e.message} (${code})` : e.message;
    return new MegahubError("HUB", `${doing}: ${oneLine(redact(detail, secrets))}`);
  }
  return new MegahubError("HUB", `${doing}: ${oneLine(redact(String(e), secrets))}`);
}

function statusHint(status: number): string | undefined {
  switch (status) {
    case 401:
      return "the token is missing or not valid for this Hub: pass --token, set HF_TOKEN or log in";
    case 403:
      return "the token has no write access to this repo";
    case 404:
      return "no such repo or revision, or it is private and the token cannot see it";
    case 412:
      return "the branch moved while pushing; run the same command again to resume";
    case 413:
      return "the request was too large for the Hub";
    case 429:
      return "rate-limited by the Hub even after retries; wait and run again, already stored files are skipped";
    default:
      return status >= 500 ? "the Hub failed even after retries; run again, already stored files are skipped" : undefined;
  }
}
