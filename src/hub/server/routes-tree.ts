import { createHash } from "node:crypto";
import { repoPathProblem } from "../repo-path.js";
import { HttpError, readBody, readJson, sendJson, type RequestContext } from "./http-util.js";
import type { HubState } from "./state.js";
import type { CommitRecord, RepoType, TreeEntry } from "./storage.js";

/** An entry of the tree API (row 13): files with optional `lfs`, and directories. */
interface ApiEntry {
  type: "file" | "directory";
  path: string;
  size: number;
  oid: string;
  lfs?: TreeEntry["lfs"];
  lastCommit?: { id: string; title: string; date: string };
}

/**
 * `GET /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]?recursive=&expand=&cursor=` — lists a folder of a revision,
 * paginated with an absolute `Link: <…>; rel="next"` URL (the client's parser accepts only absolute ones).
 * `expand=true` reports the revision's head as `lastCommit` (the local hub does not track per-file history).
 */
export async function treeRoute(
  ctx: RequestContext,
  state: HubState,
  type: RepoType,
  name: string,
  rev: string,
  path: string,
): Promise<void> {
  const repo = await state.store.mustGetRepo(type, name, ctx.principal);
  const commit = await state.store.getCommit(repo, await state.store.resolveRevision(repo, rev));
  if (path !== "" && repoPathProblem(path) !== undefined) throw new HttpError(400, "invalid path");
  const recursive = ctx.query.get("recursive") === "true";
  const entries = listEntries(commit, path, recursive);
  if (path !== "" && entries.length === 0) {
    throw new HttpError(404, `${path} is not a folder of this revision`, "EntryNotFound");
  }
  if (ctx.query.get("expand") === "true") {
    for (const e of entries) e.lastCommit = { id: commit.id, title: commit.summary, date: commit.at };
  }
  const cursor = Number(ctx.query.get("cursor") ?? "0");
  const start = Number.isSafeInteger(cursor) && cursor > 0 ? cursor : 0;
  const page = entries.slice(start, start + state.treePageSize);
  const headers: Record<string, string> = {};
  if (start + state.treePageSize < entries.length) {
    const q = new URLSearchParams(ctx.query);
    q.set("cursor", String(start + state.treePageSize));
    const self = ctx.req.url?.split("?")[0] ?? "";
    headers.Link = `<${ctx.baseUrl}${self}?${q.toString()}>; rel="next"`;
  }
  sendJson(ctx, 200, page, headers);
}

/** `POST /api/{type}s/{ns}/{name}/paths-info/{rev}` with `{paths, expand}` (row 14). */
export async function pathsInfoRoute(
  ctx: RequestContext,
  state: HubState,
  type: RepoType,
  name: string,
  rev: string,
): Promise<void> {
  const body = await readPathsBody(ctx);
  const repo = await state.store.mustGetRepo(type, name, ctx.principal);
  const commit = await state.store.getCommit(repo, await state.store.resolveRevision(repo, rev));
  if (!Array.isArray(body.paths)) throw new HttpError(400, '"paths" must be an array');
  if (body.paths.length > 10_000) throw new HttpError(400, "at most 10,000 paths per call");
  const out: ApiEntry[] = [];
  const dirs = directories(commit);
  for (const p of body.paths as unknown[]) {
    if (typeof p !== "string") continue;
    const file = commit.tree[p];
    if (file !== undefined) out.push(fileEntry(file));
    else if (dirs.has(p)) out.push(dirEntry(p));
  }
  if (body.expand === true || body.expand === "true" || body.expand === "True") {
    for (const e of out) e.lastCommit = { id: commit.id, title: commit.summary, date: commit.at };
  }
  sendJson(ctx, 200, out);
}

function listEntries(commit: CommitRecord, folder: string, recursive: boolean): ApiEntry[] {
  const prefix = folder === "" ? "" : `${folder}/`;
  const out: ApiEntry[] = [];
  const seenDirs = new Set<string>();
  for (const p of Object.keys(commit.tree).sort()) {
    if (!p.startsWith(prefix)) continue;
    const rest = p.slice(prefix.length).split("/");
    // Every folder between `folder` and the file, or only the first one when not recursive.
    const depth = recursive ? rest.length - 1 : Math.min(1, rest.length - 1);
    for (let i = 1; i <= depth; i++) {
      const dir = prefix + rest.slice(0, i).join("/");
      if (!seenDirs.has(dir)) {
        seenDirs.add(dir);
        out.push(dirEntry(dir));
      }
    }
    if (recursive || rest.length === 1) out.push(fileEntry(commit.tree[p] as TreeEntry));
  }
  return out;
}

function directories(commit: CommitRecord): Set<string> {
  const dirs = new Set<string>();
  for (const p of Object.keys(commit.tree)) {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
  }
  return dirs;
}

function fileEntry(e: TreeEntry): ApiEntry {
  return { type: "file", path: e.path, size: e.size, oid: e.oid, ...(e.lfs ? { lfs: e.lfs } : {}) };
}

function dirEntry(path: string): ApiEntry {
  return { type: "directory", path, size: 0, oid: createHash("sha1").update(`tree ${path}`).digest("hex") };
}

/**
 * The paths-info body: JSON from @huggingface/hub, form-encoded (`paths=a&paths=b&expand=False`) from Python's
 * `get_paths_info`, as the Hub accepts both.
 */
async function readPathsBody(ctx: RequestContext): Promise<Record<string, unknown>> {
  const type = ctx.req.headers["content-type"] ?? "";
  if (!type.startsWith("application/x-www-form-urlencoded")) return readJson(ctx.req, undefined, ctx.budget);
  const form = new URLSearchParams((await readBody(ctx.req, 16 * 1024 * 1024, ctx.budget)).toString("utf8"));
  return { paths: form.getAll("paths"), expand: form.get("expand") ?? false };
}
