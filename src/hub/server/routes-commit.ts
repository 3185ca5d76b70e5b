import { readFile } from "node:fs/promises";
import { repoPathProblem } from "../repo-path.js";
import { RESUME_HEADER } from "../upload-resume.js";
import { requireWrite } from "./auth.js";
import { HttpError, readBody, readJson, sendJson, type RequestContext } from "./http-util.js";
import { MAX_BATCH_OBJECTS } from "./lfs-store.js";
import { repoUrlPrefix, type HubState } from "./state.js";
import type { CommitOp, RepoRecord, RepoType } from "./storage.js";
import { DEFAULT_GITATTRIBUTES, lfsPatterns, uploadMode, WorkBudget } from "./upload-mode.js";

/** Largest `.gitattributes` read for the preupload decision. */
const MAX_GITATTRIBUTES = 1 << 20;

/** The Hub refuses commit bodies of about 100 MB (regular files travel base64 in them); so does the local hub. */
export const MAX_COMMIT_BYTES = 100 * 1024 * 1024;
/** Files per preupload call: the Hub's limit is 256, the JS client sends 100. */
const MAX_PREUPLOAD_FILES = 256;

/** `POST /api/{type}s/{ns}/{name}/preupload/{rev}` (row 5). `shouldIgnore` is always sent: Python indexes it. */
export async function preuploadRoute(
  ctx: RequestContext,
  state: HubState,
  type: RepoType,
  name: string,
  rev: string,
): Promise<void> {
  const body = await readJson(ctx.req, undefined, ctx.budget);
  requireWrite(ctx, name.split("/")[0] as string);
  const repo = await state.store.mustGetRepo(type, name, ctx.principal);
  const head = await state.store.getCommit(repo, await state.store.resolveRevision(repo, rev));
  if (!Array.isArray(body.files) || body.files.length > MAX_PREUPLOAD_FILES) {
    throw new HttpError(400, `"files" must be an array of at most ${MAX_PREUPLOAD_FILES} entries`);
  }
  const stored = head.tree[".gitattributes"];
  const attrs =
    typeof body.gitAttributes === "string"
      ? body.gitAttributes
      : stored !== undefined && stored.lfs === undefined && stored.size <= MAX_GITATTRIBUTES
        ? await readFile(state.store.blobPath(stored.oid), "utf8")
        : DEFAULT_GITATTRIBUTES;
  const patterns = lfsPatterns(attrs.slice(0, MAX_GITATTRIBUTES));
  // One budget for the whole request: a crafted .gitattributes costs this request a 400, not the server its time.
  const work = new WorkBudget();
  const files = (body.files as Array<{ path?: unknown; size?: unknown; sample?: unknown } | null>).map((f) => {
    if (typeof f !== "object" || f === null) throw new HttpError(400, "each file must be an object");
    if (typeof f.path !== "string" || repoPathProblem(f.path) !== undefined) {
      throw new HttpError(400, `invalid path ${JSON.stringify(String(f.path).slice(0, 200))}`);
    }
    const size = typeof f.size === "number" ? f.size : 0;
    const sample = Buffer.from(typeof f.sample === "string" ? f.sample : "", "base64");
    const existing = head.tree[f.path];
    return {
      path: f.path,
      uploadMode: uploadMode(f.path, size, sample, patterns, work),
      shouldIgnore: false,
      ...(existing !== undefined ? { oid: existing.oid } : {}),
    };
  });
  sendJson(ctx, 200, { files, commitOid: head.id });
}

/**
 * `POST /{[type]s/}{ns}/{name}.git/info/lfs/objects/batch` (row 6). Answers `transfer: "basic"` — never "xet" —
 * so @huggingface/hub falls back to basic/multipart uploads; stored objects come back without `actions`.
 */
export async function lfsBatchRoute(ctx: RequestContext, state: HubState, type: RepoType, name: string): Promise<void> {
  const body = await readJson(ctx.req, undefined, ctx.budget);
  requireWrite(ctx, name.split("/")[0] as string);
  await state.store.mustGetRepo(type, name, ctx.principal);
  if (body.operation !== "upload") throw new HttpError(400, 'the local hub only serves operation "upload"');
  if (!Array.isArray(body.objects) || body.objects.length > MAX_BATCH_OBJECTS) {
    throw new HttpError(400, `"objects" must be an array of at most ${MAX_BATCH_OBJECTS} entries`);
  }
  // megahub's opt-in (a header, which servers that do not know it ignore): upload URLs it can resume.
  const resumable = state.resumableUploads && ctx.req.headers[RESUME_HEADER] === "1";
  const objects = await Promise.all(
    (body.objects as Array<{ oid?: unknown; size?: unknown } | null>).map((o) =>
      state.lfs.batchObject(o?.oid, o?.size, ctx.baseUrl, resumable),
    ),
  );
  sendJson(ctx, 200, { transfer: "basic", objects }, {
    "Content-Type": "application/vnd.git-lfs+json",
    ...(resumable ? { [RESUME_HEADER]: "1" } : {}),
  });
}

/**
 * `POST /api/{type}s/{ns}/{name}/commit/{rev}` (row 10): NDJSON, header line first. Regular files must be text
 * (the Hub rejects binary content committed as regular), LFS files must reference uploaded objects, and a stale
 * `parentCommit` answers 412. The commit is applied whole or not at all.
 */
export async function commitRoute(
  ctx: RequestContext,
  state: HubState,
  type: RepoType,
  name: string,
  rev: string,
): Promise<void> {
  requireWrite(ctx, name.split("/")[0] as string);
  if (ctx.query.has("create_pr")) {
    ctx.req.resume();
    throw new HttpError(400, "the local hub does not support pull requests; push to a branch instead");
  }
  const body = await readBody(ctx.req, MAX_COMMIT_BYTES, ctx.budget);
  const repo: RepoRecord = await state.store.mustGetRepo(type, name, ctx.principal);
  const lines = body.toString("utf8").split("\n").filter((l) => l.trim() !== "");
  const [first, ...rest] = lines.map(parseLine);
  if (first?.key !== "header") throw new HttpError(400, "the first NDJSON line must be the header");
  const header = {
    summary: typeof first.value.summary === "string" && first.value.summary !== "" ? first.value.summary : "Upload files",
    description: typeof first.value.description === "string" ? first.value.description : "",
    parentCommit: typeof first.value.parentCommit === "string" ? first.value.parentCommit : undefined,
    author: ctx.principal?.user,
  };
  const ops = rest.map(toOp);
  const commit = await state.store.commit(
    repo,
    rev,
    header,
    ops,
    (oid, size) => state.lfs.has(oid, size),
    (oid) => state.lfs.size(oid),
  );
  state.stats.commits++;
  sendJson(ctx, 200, {
    success: true,
    commitOid: commit.id,
    commitUrl: `${ctx.baseUrl}/${repoUrlPrefix(type)}${name}/commit/${commit.id}`,
    hookOutput: "",
  });
}

function parseLine(line: string): { key: string; value: Record<string, unknown> } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    throw new HttpError(400, "a commit line is not valid JSON");
  }
  const p = parsed as { key?: unknown; value?: unknown };
  if (typeof p.key !== "string" || typeof p.value !== "object" || p.value === null) {
    throw new HttpError(400, 'each commit line must be {"key": …, "value": {…}}');
  }
  return { key: p.key, value: p.value as Record<string, unknown> };
}

function toOp(line: { key: string; value: Record<string, unknown> }): CommitOp {
  const path = line.value.path;
  if (typeof path !== "string") throw new HttpError(400, `${line.key} needs a path`);
  switch (line.key) {
    case "file": {
      if (line.value.encoding !== "base64" || typeof line.value.content !== "string") {
        throw new HttpError(400, `${path}: file content must be base64`);
      }
      const content = Buffer.from(line.value.content, "base64");
      if (content.includes(0)) {
        throw new HttpError(400, `Your push was rejected because it contains binary files (${path}); upload it through LFS`);
      }
      return { kind: "file", path, content };
    }
    case "lfsFile": {
      const { oid, size, algo } = line.value;
      if (algo !== undefined && algo !== "sha256") throw new HttpError(400, `${path}: only sha256 LFS objects`);
      // Python's copies send the oid alone; the size then comes from the stored object.
      if (typeof oid !== "string" || !/^[0-9a-f]{64}$/.test(oid) || (size !== undefined && !Number.isSafeInteger(size))) {
        throw new HttpError(400, `${path}: lfsFile needs a sha256 oid and an integer size`);
      }
      return { kind: "lfs", path, oid, size: size as number | undefined };
    }
    case "deletedFile":
      return { kind: "delete", path };
    case "deletedFolder":
      return { kind: "deleteFolder", path: path.replace(/\/+$/, "") };
    default:
      throw new HttpError(400, `unknown commit operation ${JSON.stringify(line.key)}`);
  }
}

/**
 * `GET /api/{type}s/{ns}/{name}/xet-write-token/{rev}`: a CAS token for hf_xet, in the body (hf_xet reads
 * `{accessToken, exp, casUrl}`) and in the `X-Xet-*` headers huggingface_hub reads. Needs write access, like
 * the commit it prepares.
 */
export async function xetWriteTokenRoute(ctx: RequestContext, state: HubState, type: RepoType, name: string, rev: string): Promise<void> {
  ctx.req.resume();
  requireWrite(ctx, name.split("/")[0] as string);
  const repo = await state.store.mustGetRepo(type, name, ctx.principal);
  if (!ctx.query.has("create_pr")) await state.store.resolveRevision(repo, rev);
  const t = state.xet.issueToken(`${type}/${name}`, `${ctx.baseUrl}/__megahub/cas`);
  sendJson(ctx, 200, t, {
    "X-Xet-Cas-Url": t.casUrl,
    "X-Xet-Access-Token": t.accessToken,
    "X-Xet-Token-Expiration": String(t.exp),
  });
}
