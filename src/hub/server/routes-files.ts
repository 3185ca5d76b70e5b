import { createReadStream } from "node:fs";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { repoPathProblem } from "../repo-path.js";
import { HttpError, sendJson, type RequestContext } from "./http-util.js";
import type { HubState } from "./state.js";
import type { RepoType } from "./storage.js";
import { lfsPointer } from "./upload-mode.js";

/**
 * `GET|HEAD /{[type]s/}{ns}/{name}/{resolve|raw}/{rev}/{path}` (rows 11 and 12). `resolve` serves the content,
 * `raw` the LFS pointer for LFS files. Single byte ranges are honoured (206 + Content-Range), which is how
 * @huggingface/hub learns a size (`Range: bytes=0-0`) and how `megahub pull` resumes. The Content-Type is never
 * the xet file-info type, so the client stays on plain HTTP.
 */
export async function fileRoute(
  ctx: RequestContext,
  state: HubState,
  type: RepoType,
  name: string,
  kind: "resolve" | "raw",
  rev: string,
  path: string,
  truncateAfter: number | undefined,
): Promise<void> {
  const problem = repoPathProblem(path);
  if (problem !== undefined) throw new HttpError(400, `invalid path: ${problem}`);
  const repo = await state.store.mustGetRepo(type, name, ctx.principal);
  const commitId = await state.store.resolveRevision(repo, rev);
  const entry = (await state.store.getCommit(repo, commitId)).tree[path];
  if (entry === undefined) throw new HttpError(404, `Entry not found: ${path}`, "EntryNotFound");

  let file: string | undefined;
  let inline: Buffer | undefined;
  let etag: string;
  if (entry.lfs !== undefined && kind === "resolve") {
    file = state.lfs.objectPath(entry.lfs.oid);
    etag = entry.lfs.oid;
  } else if (entry.lfs !== undefined) {
    inline = Buffer.from(lfsPointer(entry.lfs.oid, entry.lfs.size));
    etag = entry.oid;
  } else {
    file = state.store.blobPath(entry.oid);
    etag = entry.oid;
  }
  const size = inline?.length ?? entry.size;
  const headers: Record<string, string | number> = {
    "Content-Type": "application/octet-stream",
    "Accept-Ranges": "bytes",
    ETag: `"${etag}"`,
    "X-Repo-Commit": commitId,
    "X-Request-Id": ctx.requestId,
  };
  if (entry.lfs !== undefined) {
    headers["X-Linked-Size"] = entry.lfs.size;
    headers["X-Linked-ETag"] = `"${entry.lfs.oid}"`;
  }
  const range = parseRange(ctx.req.headers.range, size);
  if (range === "unsatisfiable") {
    if (size === 0) {
      // An empty file has no byte 0; answer 200 with the size so the client's `bytes=0-0` probe still learns it.
      ctx.res.writeHead(200, { ...headers, "Content-Length": 0, "Content-Range": "bytes */0" }).end();
      return;
    }
    sendJson(ctx, 416, { error: "range not satisfiable" }, { "Content-Range": `bytes */${size}` });
    return;
  }
  const [start, end] = range ?? [0, size - 1];
  const length = size === 0 ? 0 : end - start + 1;
  ctx.res.writeHead(range ? 206 : 200, {
    ...headers,
    "Content-Length": length,
    ...(range ? { "Content-Range": `bytes ${start}-${end}/${size}` } : {}),
  });
  if (ctx.method === "HEAD" || length === 0) {
    ctx.res.end();
    return;
  }
  if (inline !== undefined) {
    ctx.res.end(inline.subarray(start, end + 1));
    return;
  }
  const source = createReadStream(file as string, { start, end, highWaterMark: 1 << 20 });
  if (truncateAfter === undefined) {
    await pipeline(source, ctx.res);
    return;
  }
  // Fault injection: send `truncateAfter` bytes, then kill the connection mid-body.
  let sent = 0;
  const cut = new Transform({
    transform(chunk: Buffer, _enc, done) {
      const room = truncateAfter - sent;
      if (room <= 0) return done();
      sent += Math.min(room, chunk.length);
      done(null, chunk.subarray(0, room));
      if (sent >= truncateAfter) setImmediate(() => ctx.req.socket?.destroy());
    },
  });
  await pipeline(source, cut, ctx.res).catch(() => undefined);
}

/**
 * One `bytes=` range as [start, end] inclusive; undefined when absent or not a single range (then the whole file
 * is sent, which RFC 9110 allows); "unsatisfiable" when it starts past the end.
 */
export function parseRange(header: string | undefined, size: number): [number, number] | undefined | "unsatisfiable" {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return undefined;
  if (m[1] === "") {
    const n = Number(m[2]);
    if (n === 0) return "unsatisfiable";
    return [Math.max(0, size - n), size - 1];
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size) return "unsatisfiable";
  if (end < start) return undefined;
  return [start, end];
}
