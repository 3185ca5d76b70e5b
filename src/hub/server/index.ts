import { mkdir } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { resolve } from "node:path";
import { MegahubError } from "../../errors.js";
import { FaultInjector, type FaultRule } from "./faults.js";
import { checkGrants, findGrant, type TokenGrant } from "./auth.js";
import { bearerToken, BodyBudget, HttpError, randomToken, requestId, sendError, type RequestContext } from "./http-util.js";
import { DEFAULT_CHUNK_SIZE, LfsStore, type LfsStats } from "./lfs-store.js";
import { route } from "./router.js";
import type { HubStats, HubState } from "./state.js";
import { RepoStore } from "./storage.js";
import { XetStore, type XetStats } from "./xet-store.js";

export type { Fault, FaultRule } from "./faults.js"; // for callers that inject faults
export type { TokenGrant } from "./auth.js";

/** Bytes of request bodies held in memory at once, all requests together (see BodyBudget). */
const BODY_BUDGET = 64 * 1024 * 1024;

/** Options of {@link startLocalHub}. */
export interface LocalHubOptions {
  /** Where repos and objects live; created if missing. */
  dataDir: string;
  /**
   * The write token (`hf_…`) of user `local`, who owns the `local` namespace; a random one is made when absent and
   * returned in {@link LocalHub.token}.
   */
  token?: string | undefined;
  /** More tokens: other users, read-only tokens, organisations (see TokenGrant). */
  users?: readonly TokenGrant[] | undefined;
  /** A socket that sends or receives nothing for this long is closed. @default 300000 (5 min) */
  idleTimeoutMs?: number | undefined;
  /**
   * Longest time to receive one request (headers and body). No request body is larger than a multipart part, a
   * xorb or a 100 MB commit, so this bounds slow-loris clients without cutting real uploads. @default 600000
   */
  requestTimeoutMs?: number | undefined;
  /** @default 0 (a free port) */
  port?: number | undefined;
  /** Interface to bind. Only loopback by default: the server has a single token and no TLS. @default "127.0.0.1" */
  host?: string | undefined;
  /** Multipart part size for LFS uploads larger than it. @default 64 MiB */
  chunkSize?: number | undefined;
  /**
   * Resumable LFS uploads for megahub's client: a batch call that asks (X-Megahub-Resume) gets the upload URLs of
   * an unfinished upload of the same object again, and each URL tells what it holds, so an interrupted push sends
   * only the missing bytes. Off, the server answers as the Hub does (tests of the plain fallback). @default true
   */
  resumableUploads?: boolean | undefined;
  /** Entries per tree page. @default 1000 */
  treePageSize?: number | undefined;
  /** Faults to inject (tests, rehearsals); more can be added later through {@link LocalHub.faults}. */
  faults?: readonly FaultRule[] | undefined;
  /** Called after each request with a redacted line, e.g. for `hub serve` logging. */
  onRequest?: ((line: RequestLogEntry) => void) | undefined;
}

/** One served request, as kept in {@link LocalHub.log} and passed to `onRequest`. */
export interface RequestLogEntry {
  readonly method: string;
  /** Path without query; LFS upload tickets masked. */
  readonly path: string;
  readonly status: number;
  readonly range: string | undefined;
  readonly ms: number;
}

/** A running local Hub. */
export interface LocalHub {
  /** Base URL to pass as `hubUrl` / `--hub-url` (no trailing slash). */
  readonly url: string;
  /** The token writes need. */
  readonly token: string;
  /** Absolute storage folder. */
  readonly dataDir: string;
  readonly stats: HubStats & { lfs: LfsStats; xet: XetStats };
  readonly faults: FaultInjector;
  /** The last 10,000 requests. */
  readonly log: RequestLogEntry[];
  /**
   * Gives up upload URLs idle for `idleMs` (default: an hour; the server also does this every 5 minutes) and
   * removes their temp files; returns how many unfinished multipart uploads were removed.
   */
  expireUploads(idleMs?: number): Promise<number>;
  close(): Promise<void>;
}

const MAX_LOG = 10_000;

/**
 * Starts a Hugging Face Hub-compatible server on disk, good enough for the real @huggingface/hub client (whoAmI,
 * createRepo, commit/uploadFiles with LFS and multipart, listFiles, downloadFile, fileExists, modelInfo,
 * parseSafetensorsMetadata) and for `megahub push/pull`. Writes need the token; reads of public repos do not.
 *
 * @example
 * const hub = await startLocalHub({ dataDir: "/tmp/hub", port: 0 });
 * await pushFolder({ dir: "out/hf", repo: "local/openba", hubUrl: hub.url, accessToken: hub.token });
 * await hub.close();
 */
export async function startLocalHub(options: LocalHubOptions): Promise<LocalHub> {
  const token = options.token ?? randomToken();
  if (!/^hf_[A-Za-z0-9_-]+$/.test(token)) {
    throw new MegahubError("USAGE", 'the local hub token must look like "hf_…" (the Hub client refuses others)');
  }
  const grants = checkGrants([{ token, user: "local", role: "write" }, ...(options.users ?? [])]);
  const dataDir = resolve(options.dataDir);
  await mkdir(dataDir, { recursive: true });
  const host = options.host ?? "127.0.0.1";
  const faults = new FaultInjector();
  faults.add(...(options.faults ?? []));
  const stats: HubStats = { requests: 0, commits: 0 };
  const lfs = new LfsStore(dataDir, options.chunkSize ?? DEFAULT_CHUNK_SIZE);
  await lfs.sweepTemp();
  const budget = new BodyBudget(BODY_BUDGET);
  const xet = new XetStore(dataDir, lfs, budget);
  const state: HubState = {
    store: new RepoStore(dataDir),
    lfs,
    xet,
    grants,
    faults,
    stats,
    budget,
    treePageSize: options.treePageSize ?? 1000,
    resumableUploads: options.resumableUploads !== false,
  };
  // Upload URLs nobody finishes lose their temp files within the idle time (plus this period).
  const sweeper = setInterval(() => void lfs.expireTickets().catch(() => undefined), 5 * 60 * 1000);
  sweeper.unref();
  const log: RequestLogEntry[] = [];
  let baseUrl = "";
  const requestTimeout = options.requestTimeoutMs ?? 600_000;
  // Node checks request timeouts only every `connectionsCheckingInterval` (30 s by default).
  const server = createServer({ connectionsCheckingInterval: Math.min(30_000, Math.max(100, requestTimeout / 4)) }, (req, res) => {
    void handle(req, res, state, baseUrl, (entry) => {
      log.push(entry);
      if (log.length > MAX_LOG) log.splice(0, log.length - MAX_LOG);
      options.onRequest?.(entry);
    });
  });
  // Every request body is bounded (a part, a xorb, a commit), so a finite request timeout never cuts a real
  // upload; the idle timeout closes sockets that stall mid-body or mid-download.
  server.requestTimeout = requestTimeout;
  server.headersTimeout = Math.min(60_000, server.requestTimeout);
  server.timeout = options.idleTimeoutMs ?? 300_000;
  server.keepAliveTimeout = 30_000;
  await listen(server, options.port ?? 0, host);
  const port = (server.address() as AddressInfo).port;
  const shownHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;
  baseUrl = `http://${shownHost}:${port}`;
  return {
    url: baseUrl,
    token,
    dataDir,
    stats: Object.assign(stats, { lfs: lfs.stats, xet: xet.stats }),
    faults,
    log,
    expireUploads: (idleMs) => lfs.expireTickets(Date.now(), idleMs),
    close: () =>
      new Promise<void>((done) => {
        clearInterval(sweeper);
        server.close(() => done());
        server.closeAllConnections();
      }),
  };
}

async function handle(
  req: IncomingMessage,
  res: ServerResponse,
  state: HubState,
  baseUrl: string,
  record: (e: RequestLogEntry) => void,
): Promise<void> {
  const t0 = performance.now();
  const method = (req.method ?? "GET").toUpperCase();
  const [rawPath = "/", rawQuery = ""] = (req.url ?? "/").split("?", 2);
  const shownPath = rawPath.replace(/(\/__megahub\/lfs\/)[0-9a-f]+/, "$1***").slice(0, 300);
  state.stats.requests++;
  res.on("close", () =>
    record({ method, path: shownPath, status: res.statusCode, range: req.headers.range, ms: performance.now() - t0 }),
  );
  const fault = state.faults.take(method, rawPath);
  if (fault?.kind === "drop") {
    req.socket?.destroy();
    return;
  }
  const ctx: RequestContext = {
    req,
    res,
    method,
    segments: [],
    query: new URLSearchParams(rawQuery),
    principal: findGrant(bearerToken(req), state.grants),
    budget: state.budget,
    baseUrl,
    requestId: requestId(),
    dropResponse: fault?.kind === "drop-response",
  };
  try {
    if (fault?.kind === "status") {
      req.resume();
      await new Promise((r) => (req.complete ? r(undefined) : req.on("end", r).on("error", r)));
      const headers = fault.retryAfter !== undefined ? { "Retry-After": String(fault.retryAfter) } : undefined;
      throw new HttpError(fault.status, `injected fault: ${fault.status}`, undefined, headers);
    }
    (ctx as { segments: readonly string[] }).segments = decodeSegments(rawPath);
    // An unknown token is refused everywhere, as the Hub does; upload URLs and the CAS carry their own capability.
    if (ctx.principal === undefined && req.headers.authorization !== undefined && ctx.segments[0] !== "__megahub" && ctx.segments[0] !== "v1") {
      req.resume();
      throw new HttpError(401, "Invalid credentials in Authorization header");
    }
    await route(ctx, state, fault?.kind === "truncate" || fault?.kind === "cut" ? fault.afterBytes : undefined);
  } catch (e) {
    if (res.headersSent || res.destroyed || req.socket?.destroyed !== false) {
      res.destroy();
      return;
    }
    if (e instanceof HttpError) {
      sendError(ctx, e);
    } else {
      // Unexpected: answer 500 without internals (paths of the data dir stay private).
      process.emitWarning(`local hub: ${(e as Error).message}`);
      sendError(ctx, new HttpError(500, "internal error in the local hub"));
    }
  }
}

/**
 * Splits and percent-decodes the path. Dot segments are kept (not resolved as `new URL` would), so `..` reaches
 * the name checks and is refused instead of silently pointing somewhere else.
 */
function decodeSegments(rawPath: string): string[] {
  const parts = rawPath.split("/").slice(1);
  if (parts.at(-1) === "") parts.pop();
  try {
    return parts.map((p) => decodeURIComponent(p));
  } catch {
    throw new HttpError(400, "malformed percent-encoding in the path");
  }
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((done, fail) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      fail(new MegahubError("USAGE", `cannot listen on ${host}:${port} (${e.code ?? e.message})`)),
    );
    server.listen(port, host, () => done());
  });
}
