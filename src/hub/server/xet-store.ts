import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readFile, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { writeFileAtomic } from "../../io/atomic.js";
import { bearerToken, BodyBudget, HttpError, readBody } from "./http-util.js";
import type { IncomingMessage } from "node:http";
import type { LfsStore } from "./lfs-store.js";
import { expandChunk, shardFiles, xorbChunks, type ShardFile } from "./xet-format.js";

/**
 * The Xet write path of the local hub. huggingface_hub ≥ 1.x with hf_xet installed uploads every LFS file through
 * Xet and has no LFS fallback (`is_xet_available()` looks only at the client; huggingface_hub #4507, #4786), so
 * the official client can upload here only if the server speaks Xet's CAS protocol (xet-core's
 * openapi/cas.openapi.yaml): `GET /api/{type}s/{repo}/xet-write-token/{rev}` hands out a short-lived CAS token
 * and URL; the client then POSTs xorbs (`/v1/xorbs/default/{hash}`) and a shard (`/v1/shards`) listing how each
 * file is rebuilt from xorb chunks. On the shard the server rebuilds every file, hashes it and files it in the
 * LFS store under its sha256 — the oid the commit's `lfsFile` names — so downloads stay plain HTTP (no
 * `X-Xet-Hash` is ever sent, so clients never ask for a Xet read path).
 *
 * Xorb hashes (BLAKE3 Merkle trees) are not recomputed: what a commit can reference is only ever a rebuilt file
 * whose sha256 the server computed itself, so a wrong xorb yields a file no commit names, never a wrong file.
 */

/** Largest xorb accepted (xet-core caps xorbs at 64 MiB of chunks; the serialized form adds headers). */
const MAX_XORB_BYTES = 80 * 1024 * 1024;
/** Largest shard accepted. */
const MAX_SHARD_BYTES = 64 * 1024 * 1024;
/** How long a CAS token lives; hf_xet refreshes it through the same URL before it runs out. */
const CAS_TOKEN_TTL_S = 3600;

interface CasGrant {
  readonly repoKey: string;
  readonly exp: number;
}

/** What the CAS did, for tests. */
export interface XetStats {
  xorbsStored: number;
  shards: number;
  filesRebuilt: number;
}

export class XetStore {
  readonly stats: XetStats = { xorbsStored: 0, shards: 0, filesRebuilt: 0 };
  private readonly grants = new Map<string, CasGrant>();

  constructor(
    readonly dataDir: string,
    private readonly lfs: LfsStore,
    private readonly budget: BodyBudget,
  ) {}

  /** A write token for one repo, in the shape hf_xet reads from the token-refresh URL. */
  issueToken(repoKey: string, casUrl: string): { accessToken: string; exp: number; casUrl: string } {
    const now = Math.floor(Date.now() / 1000);
    for (const [t, g] of this.grants) if (g.exp < now) this.grants.delete(t);
    const accessToken = `xet_${randomBytes(24).toString("hex")}`;
    const exp = now + CAS_TOKEN_TTL_S;
    this.grants.set(accessToken, { repoKey, exp });
    return { accessToken, exp, casUrl };
  }

  private xorbPath(hash: string): string {
    return join(this.dataDir, "xet", "xorbs", hash.slice(0, 2), hash);
  }

  /** Routes `…/__megahub/cas/{rest}`; returns the JSON to answer (status 200) or throws an HttpError. */
  async handle(method: string, rest: readonly string[], req: IncomingMessage): Promise<unknown> {
    const grant = this.grantOf(req);
    const [version, kind, prefix, hash] = rest;
    if (grant === undefined) {
      req.resume();
      throw new HttpError(401, "missing or expired xet access token");
    }
    if (version === "v1" && kind === "xorbs" && prefix === "default" && hash !== undefined && rest.length === 4) {
      if (!/^[0-9a-f]{64}$/.test(hash)) throw new HttpError(400, "malformed xorb hash");
      if (method === "POST") return this.putXorb(hash, req);
      if (method === "HEAD" || method === "GET") {
        req.resume();
        if ((await stat(this.xorbPath(hash)).catch(() => undefined)) === undefined) throw new HttpError(404, "xorb not found");
        return {};
      }
    }
    if (version === "v1" && kind === "shards" && rest.length === 2 && method === "POST") return this.putShard(req);
    if (version === "v1" && kind === "chunks" && method === "GET") {
      // Global deduplication: the local hub keeps no chunk index, which clients read as "nothing to reuse".
      throw new HttpError(404, "chunk not tracked by global deduplication");
    }
    req.resume();
    // Includes /v2/shards: hf_xet falls back to /v1/shards on 404.
    throw new HttpError(404, `no CAS route for ${method} /${rest.join("/").slice(0, 100)}`);
  }

  private grantOf(req: IncomingMessage): CasGrant | undefined {
    const t = bearerToken(req);
    const g = t !== undefined ? this.grants.get(t) : undefined;
    return g !== undefined && g.exp >= Math.floor(Date.now() / 1000) ? g : undefined;
  }

  private async putXorb(hash: string, req: IncomingMessage): Promise<{ was_inserted: boolean }> {
    const body = await readBody(req, MAX_XORB_BYTES, this.budget);
    // Expanding every chunk once proves the xorb can be read back before anything refers to it.
    for (const c of xorbChunks(body)) expandChunk(body, c);
    const path = this.xorbPath(hash);
    if ((await stat(path).catch(() => undefined)) !== undefined) return { was_inserted: false };
    await mkdir(dirname(path), { recursive: true });
    await writeFileAtomic(path, body);
    this.stats.xorbsStored++;
    return { was_inserted: true };
  }

  private async putShard(req: IncomingMessage): Promise<{ result: number }> {
    const files = shardFiles(await readBody(req, MAX_SHARD_BYTES, this.budget));
    // Rebuilding a large file takes minutes with no bytes on the socket: the idle timeout must not cut it.
    req.socket?.setTimeout(0);
    for (const f of files) await this.rebuild(f);
    this.stats.shards++;
    return { result: 1 };
  }

  /** Writes a file from its xorb chunks to a temp file, hashing as it goes, and files it under its sha256. */
  private async rebuild(file: ShardFile): Promise<void> {
    const tmp = await this.lfs.tempFile("xet");
    const fh = await open(tmp, "w");
    const hash = createHash("sha256");
    let size = 0;
    try {
      let cached: { hash: string; bytes: Buffer } | undefined;
      for (const term of file.terms) {
        if (cached?.hash !== term.xorb) {
          const bytes = await readFile(this.xorbPath(term.xorb)).catch(() => undefined);
          if (bytes === undefined) throw new HttpError(400, `shard refers to xorb ${term.xorb}, which was never uploaded`);
          cached = { hash: term.xorb, bytes };
        }
        const chunks = xorbChunks(cached.bytes);
        if (term.end > chunks.length) throw new HttpError(400, `shard refers to chunks past the end of xorb ${term.xorb}`);
        let termBytes = 0;
        for (let i = term.start; i < term.end; i++) {
          const data = expandChunk(cached.bytes, chunks[i] as (typeof chunks)[number]);
          hash.update(data);
          await fh.write(data);
          termBytes += data.length;
        }
        if (termBytes !== term.bytes) throw new HttpError(400, `shard term of xorb ${term.xorb} is ${term.bytes} bytes, chunks hold ${termBytes}`);
        size += termBytes;
      }
      await fh.close();
    } catch (e) {
      await fh.close().catch(() => undefined);
      await this.lfs.discard(tmp);
      throw e;
    }
    const sha256 = hash.digest("hex");
    if (file.sha256 !== undefined && file.sha256 !== sha256) {
      await this.lfs.discard(tmp);
      throw new HttpError(400, `shard says the file's sha256 is ${file.sha256}, its chunks hash to ${sha256}`);
    }
    await this.lfs.adopt(tmp, sha256, size);
    this.stats.filesRebuilt++;
  }
}
