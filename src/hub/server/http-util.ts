import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Principal } from "./auth.js";

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
  /** The user of the request's Bearer token; undefined without one (an unknown token is refused before routing). */
  readonly principal: Principal | undefined;
  /** Bytes of request bodies the server may hold in memory at once, shared by all requests. */
  readonly budget: BodyBudget;
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
    // The Hub repeats the message in X-Error-Message; huggingface_hub tells errors apart by it.
    "X-Error-Message": e.message.slice(0, 500).replace(/[^\x20-\x7e]/g, "?"),
    ...(e.errorCode !== undefined ? { "X-Error-Code": e.errorCode } : {}),
    ...e.headers,
  });
}

/**
 * Bytes of buffered request bodies across all requests: without a shared bound, 200 concurrent 16 MB JSON
 * bodies would hold 3 GB. A request that would go over waits for room (bodies are read as they come, so
 * waiting is only back-pressure on that socket).
 */
export class BodyBudget {
  private used = 0;
  private readonly waiters: Array<() => void> = [];

  constructor(readonly total: number) {}

  async take(n: number): Promise<void> {
    while (this.used + n > this.total) await new Promise<void>((r) => this.waiters.push(r));
    this.used += n;
  }

  give(n: number): void {
    this.used -= n;
    for (const w of this.waiters.splice(0)) w();
  }
}

/**
 * Reads a whole request body, refusing more than `limit` bytes with 413 before buffering them. With a budget,
 * `factor` × the declared length (or `limit` when none is declared, capped at 1 MiB) is reserved for the time of
 * the read: JSON callers pass 3 for the buffer, its string and the parsed value. A declared length is read into
 * one buffer of that size, so the body is never held twice.
 */
export async function readBody(req: IncomingMessage, limit: number, budget?: BodyBudget, factor = 1): Promise<Buffer> {
  return withBody(req, limit, budget, factor, (b) => b);
}

async function withBody<T>(req: IncomingMessage, limit: number, budget: BodyBudget | undefined, factor: number, use: (b: Buffer) => T): Promise<T> {
  const header = req.headers["content-length"];
  const declared = header !== undefined ? Number(header) : undefined;
  if (declared !== undefined && declared > limit) {
    req.resume();
    throw new HttpError(413, `request body of ${declared} bytes is over the ${limit}-byte limit`);
  }
  const known = declared !== undefined && Number.isSafeInteger(declared) && declared >= 0;
  // A body larger than the whole budget waits until it has the budget to itself (limits still refuse above).
  const reserve = Math.min((known ? declared : Math.min(limit, 1 << 20)) * factor, budget?.total ?? Infinity);
  if (budget !== undefined) await budget.take(reserve);
  try {
    const into = known ? Buffer.allocUnsafe(declared) : undefined;
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const chunk of req) {
      const c = chunk as Buffer;
      if (n + c.length > limit || (into !== undefined && n + c.length > into.length)) {
        req.resume();
        throw new HttpError(413, `request body is over the ${limit}-byte limit`);
      }
      if (into !== undefined) c.copy(into, n);
      else chunks.push(c);
      n += c.length;
    }
    return use(into !== undefined ? into.subarray(0, n) : Buffer.concat(chunks));
  } finally {
    budget?.give(reserve);
  }
}

/** Parses a JSON object body; a non-object answers 400. */
export async function readJson(
  req: IncomingMessage,
  limit = 16 * 1024 * 1024,
  budget?: BodyBudget,
): Promise<Record<string, unknown>> {
  // Parsed inside the reservation: the string and the value cost about as much again as the bytes.
  const value = await withBody(req, limit, budget, 3, (body): unknown => {
    try {
      return JSON.parse(body.toString("utf8"));
    } catch {
      throw new HttpError(400, "request body is not valid JSON");
    }
  });
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

/** A fresh `hf_…` token, accepted by @huggingface/hub's `hf_` prefix check. */
export function randomToken(): string {
  return `hf_${randomBytes(24).toString("base64url").replace(/[-_]/g, "x")}`;
}

/** An `X-Request-Id`, which @huggingface/hub puts into its error messages. */
export function requestId(): string {
  return randomBytes(8).toString("hex");
}

/** A string field of a JSON body, or 400. */
export function stringField(body: Record<string, unknown>, name: string): string {
  const v = body[name];
  if (typeof v !== "string" || v === "") throw new HttpError(400, `"${name}" must be a non-empty string`);
  return v;
}
