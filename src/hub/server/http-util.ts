import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";

/**
 * An error the local Hub answers with: status, message, and the `X-Error-Code` the real Hub sends on 404s —
 * @huggingface/hub needs `EntryNotFound` to return null from downloadFile instead of throwing.
 */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errorCode?: string,
    readonly headers?: Record<string, string>,
  ) {
    super(message);
  }
}

/** Everything a route handler needs about one request. */
export interface RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly method: string;
  /** Percent-decoded path segments (dot segments kept, so they can be refused rather than resolved). */
  readonly segments: readonly string[];
  readonly query: URLSearchParams;
  /** True when the request carries a Bearer token the server accepts. */
  readonly authed: boolean;
  /** Origin the server hands out in upload URLs. */
  readonly baseUrl: string;
  readonly requestId: string;
  /** Set by fault injection: run the handler, then drop the connection instead of answering. */
  dropResponse: boolean;
}

/** Answers JSON (or drops the connection when fault injection asked for a lost response). */
export function sendJson(ctx: RequestContext, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (ctx.dropResponse) {
    ctx.req.socket?.destroy();
    return;
  }
  const text = JSON.stringify(body);
  ctx.res.writeHead(status, {
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": Buffer.byteLength(text),
    "X-Request-Id": ctx.requestId,
    ...headers,
  });
  ctx.res.end(text);
}

/** Answers `{error}` with the status, `X-Error-Code` and any extra headers of the error. */
export function sendError(ctx: RequestContext, e: HttpError): void {
  sendJson(ctx, e.status, { error: e.message }, {
    ...(e.errorCode !== undefined ? { "X-Error-Code": e.errorCode } : {}),
    ...e.headers,
  });
}

/** Reads a whole request body, refusing more than `limit` bytes with 413 before buffering them. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"] ?? "0");
  if (declared > limit) {
    req.resume();
    throw new HttpError(413, `request body of ${declared} bytes is over the ${limit}-byte limit`);
  }
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of req) {
    n += (chunk as Buffer).length;
    if (n > limit) {
      req.resume();
      throw new HttpError(413, `request body is over the ${limit}-byte limit`);
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Parses a JSON object body; a non-object answers 400. */
export async function readJson(req: IncomingMessage, limit = 16 * 1024 * 1024): Promise<Record<string, unknown>> {
  const body = await readBody(req, limit);
  let value: unknown;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    throw new HttpError(400, "request body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new HttpError(400, "request body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/** The Bearer token of a request, if any. */
export function bearerToken(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  const m = h !== undefined ? /^Bearer\s+(\S+)$/i.exec(h) : null;
  return m?.[1];
}

/** Constant-time membership test, so response timing does not reveal how much of a token matched. */
export function tokenAccepted(given: string | undefined, accepted: readonly string[]): boolean {
  if (given === undefined) return false;
  const g = createHash("sha256").update(given).digest();
  let ok = false;
  for (const t of accepted) {
    ok = timingSafeEqual(g, createHash("sha256").update(t).digest()) || ok;
  }
  return ok;
}

/** A fresh `hf_…` token, accepted by @huggingface/hub's `hf_` prefix check. */
export function randomToken(): string {
  return `hf_${randomBytes(24).toString("base64url").replace(/[-_]/g, "x")}`;
}

/** An `X-Request-Id`, which @huggingface/hub puts into its error messages. */
export function requestId(): string {
  return randomBytes(8).toString("hex");
}

/** Requires write access; the message never contains the token given. */
export function requireAuth(ctx: RequestContext): void {
  if (!ctx.authed) {
    throw new HttpError(
      401,
      ctx.req.headers.authorization === undefined
        ? "this operation needs a token (Authorization: Bearer hf_…)"
        : "invalid credentials in Authorization header",
    );
  }
}

/** A string field of a JSON body, or 400. */
export function stringField(body: Record<string, unknown>, name: string): string {
  const v = body[name];
  if (typeof v !== "string" || v === "") throw new HttpError(400, `"${name}" must be a non-empty string`);
  return v;
}
