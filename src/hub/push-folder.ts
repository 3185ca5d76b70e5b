import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { commitIter, createBranch, createRepo, HubApiError, whoAmI, type CommitOperation } from "@huggingface/hub";
import { MegahubError } from "../errors.js";
import { MANIFEST_FILE, readManifest } from "../plan/manifest.js";
import { resolveHubUrl } from "./config.js";
import { createHubFetch, type HubFetchOptions, type RetryEvent } from "./hub-fetch.js";
import { gitBlobSha1, hashFile, listLocalFiles, type HashKind } from "./local-files.js";
import { renderModelCard, type ModelCardOptions } from "./model-card.js";
import { DEFAULT_COMMIT_LIMITS, planCommits, type CommitLimits } from "./plan-commits.js";
import { DiskBlob } from "./disk-blob.js";
import { ByteProgress } from "./push-progress.js";
import { toHubError } from "./redact.js";
import { readRemoteState, type HubCallParams, type RemoteState } from "./remote-state.js";
import { checkRepoId, isSafeRevision } from "./repo-path.js";
import { checkLastVerification, planDeletes, selected } from "./push-select.js";
import { lfsObjectStored } from "./lfs-confirm.js";

/** Options of {@link pushFolder}. Only `dir`, `repo` and `accessToken` are required. */
export interface PushFolderOptions {
  /** The folder to push (a megahub output: safetensors, config, tokenizer, megahub.json …). */
  dir: string;
  /** `"namespace/name"`; created (private if asked) when missing. */
  repo: string;
  /** A write token (`hf_…`); else HF_TOKEN. Only a dry run may go without one. */
  accessToken?: string | undefined;
  /** @default HF_ENDPOINT, else https://huggingface.co */
  hubUrl?: string | undefined;
  /** Branch to commit to; created from main when missing. @default "main" */
  revision?: string | undefined;
  /** Visibility of a repo this push creates (an existing repo keeps its own). */
  private?: boolean | undefined;
  /** Commit title; multi-commit pushes get " (part i/n)". */
  message?: string | undefined;
  /** Plan and report only: compares with the Hub, uploads nothing, creates nothing. */
  dryRun?: boolean | undefined;
  /**
   * `auto` renders README.md from megahub.json unless the folder has one; `always` renders it over the folder's
   * own (the folder is not modified); `never` pushes the folder as it is. @default "auto"
   */
  card?: "auto" | "always" | "never" | undefined;
  /** License, base model, tags for the rendered card. */
  cardOptions?: Omit<ModelCardOptions, "repo" | "manifest"> | undefined;
  limits?: Partial<CommitLimits> | undefined;
  /** fnmatch patterns (`*` crosses `/`): push only matching files. */
  include?: readonly string[] | undefined;
  /** fnmatch patterns: never push matching files (and never delete matching repo files). */
  exclude?: readonly string[] | undefined;
  /** fnmatch patterns: remove matching repo files the folder lacks (as `hf upload --delete`). */
  delete?: readonly string[] | undefined;
  /**
   * Keep repo weight files the folder's weights supersede (an old model.safetensors beside new shards). Off by
   * default: they are removed with a notice, or transformers would load the stale file. @default false
   */
  keepSuperseded?: boolean | undefined;
  /** Push a folder whose last recorded verification failed. @default false */
  force?: boolean | undefined;
  /**
   * Upload through Xet when the Hub offers it. Off by default: the LFS path is what lets megahub count bytes,
   * skip objects the Hub already stores, and push to servers without Xet (hub-protocol.md §1.1). @default false
   */
  useXet?: boolean | undefined;
  /** Retry policy and test hooks of the injected fetch. */
  fetchOptions?: Omit<HubFetchOptions, "onUploadBytes" | "onRetry" | "secrets"> | undefined;
  onEvent?: ((event: PushEvent) => void) | undefined;
  abortSignal?: AbortSignal | undefined;
}

/** What a push reports while it runs. Progress comes from the injected fetch, so it is delivered by callback. */
export type PushEvent =
  | { type: "plan"; files: number; unchanged: number; upload: number; uploadBytes: number; commits: number }
  | { type: "delete"; paths: string[]; superseded: string[] }
  | { type: "hashing"; done: number; total: number }
  | { type: "upload"; done: number; total: number }
  | { type: "retry"; retry: RetryEvent }
  | { type: "commit"; index: number; of: number; oid: string; url: string; files: number; recovered: boolean };

/** What {@link pushFolder} did (or, on a dry run, would do). */
export interface PushResult {
  repo: string;
  revision: string;
  hubUrl: string;
  /** True when this run created the repo. */
  created: boolean;
  dryRun: boolean;
  /** `generated`, `existing` (the folder's README.md) or `none`. */
  card: "generated" | "existing" | "none";
  commits: Array<{ oid: string; url: string; files: string[] }>;
  /** Files new or changed on the Hub, in commit order (planned ones on a dry run). */
  uploaded: string[];
  /** Files the Hub already had byte-for-byte. */
  unchanged: number;
  /** Repo files removed (planned ones on a dry run), in the last commit. */
  deleted: string[];
  /** Of `deleted`, the weight files removed by default because the folder's weights supersede them. */
  superseded: string[];
  /** Dry run with a generated card: the README.md that would be pushed. */
  cardPreview?: string;
  /** Bytes of the new or changed files. */
  uploadBytes: number;
  /** Request-body bytes of successful requests (a failed attempt's are taken back; stored objects are not sent). */
  bytesSent: number;
  /** Bytes of unfinished uploads the Hub already held, not sent again (only `megahub hub serve` keeps them). */
  bytesResumed: number;
  retries: number;
}

/** Memoized content hash of a push item. */
type HashOf = (item: PushItem, kind: HashKind) => Promise<string>;

interface PushItem {
  readonly path: string;
  readonly size: number;
  readonly absPath?: string;
  readonly bytes?: Uint8Array;
}

/**
 * Pushes a folder to a Hub model repo the careful way: creates the repo (409 = exists), compares every file with
 * the revision's tree (sha256 of LFS files, git blob id of the others) and sends only what differs, in commits
 * under the Hub's limits, each with the previous head as parent. Re-running after any failure resumes: landed
 * commits are skipped by the comparison, LFS objects uploaded before the failure are skipped by the Hub's
 * batch answer, and of objects left half-sent, a server with megahub's resumable uploads gets only the missing
 * bytes (upload-resume.ts). All requests go through {@link createHubFetch} (keep-alive, retries, byte counting).
 *
 * @example
 * const r = await pushFolder({ dir: "out/hf", repo: "me/openba-pruned", accessToken: hub.token, hubUrl: hub.url });
 */
export async function pushFolder(options: PushFolderOptions): Promise<PushResult> {
  const repo = checkRepoId(options.repo);
  const revision = options.revision ?? "main";
  if (!isSafeRevision(revision)) {
    throw new MegahubError("USAGE", `revision ${JSON.stringify(revision)} is not a valid branch name`);
  }
  const hubUrl = resolveHubUrl(options.hubUrl);
  const dryRun = options.dryRun === true;
  // As huggingface.js callers expect: an explicit token, else HF_TOKEN (the CLI resolves the token file too).
  const token = options.accessToken ?? (process.env.HF_TOKEN?.trim() || undefined);
  if (token === undefined && !dryRun) {
    throw new MegahubError("USAGE", "pushing needs a write token: pass --token, set HF_TOKEN, or log in with `hf auth login`");
  }
  const dir = resolve(options.dir);
  checkLastVerification(await readManifest(dir).catch(() => undefined), options.force === true || dryRun, dir);
  const { items, card } = await collectItems(dir, repo, options);
  const limits: CommitLimits = { ...DEFAULT_COMMIT_LIMITS, ...options.limits };
  const emit = options.onEvent ?? (() => undefined);
  const progress = new ByteProgress(emit);
  const hub = createHubFetch({
    ...options.fetchOptions,
    secrets: token !== undefined ? [token] : [],
    onUploadBytes: (path, delta) => progress.sent(path, delta),
    onRetry: (retry) => emit({ type: "retry", retry }),
    confirmStored: (upload) => lfsObjectStored(call, items, hashes, hashOf, upload),
  });
  const call: HubCallParams = { repo, hubUrl, accessToken: token, fetch: hub.fetch };
  const secrets = [token];
  const hashes = await manifestHashes(dir);
  const hashOf: HashOf = async (item, kind) => {
    const key = `${kind}:${item.path}`;
    let h = hashes.get(key);
    if (h === undefined) {
      h = item.bytes
        ? kind === "sha256"
          ? createHash("sha256").update(item.bytes).digest("hex")
          : gitBlobSha1(item.bytes)
        : await hashFile(item.absPath as string, item.size, kind);
      hashes.set(key, h);
    }
    return h;
  };
  const result: PushResult = {
    repo, revision, hubUrl, created: false, dryRun, card, commits: [], uploaded: [], unchanged: 0,
    uploadBytes: 0, bytesSent: 0, bytesResumed: 0, retries: 0, deleted: [], superseded: [],
  };
  const readme = items.find((i) => i.path === "README.md" && i.bytes !== undefined);
  if (dryRun && readme?.bytes) result.cardPreview = new TextDecoder().decode(readme.bytes);
  try {
    if (!dryRun) {
      // Fail fast on a bad token, before hashing anything: a 401 at commit time would waste the whole upload.
      await step("checking the token", secrets, () => whoAmI({ hubUrl, fetch: hub.fetch, accessToken: token as string }));
    }
    let state = await step(`reading ${repo}@${revision}`, secrets, () => readRemoteState({ ...call, revision }));
    if (!dryRun && !state.repoExists) {
      result.created = await step(`creating repo ${repo}`, secrets, () => ensureRepo(call, options.private));
      state = await step(`reading ${repo}@${revision}`, secrets, () => readRemoteState({ ...call, revision }));
    }
    if (!dryRun && state.head === undefined) {
      await step(`creating branch ${revision}`, secrets, () =>
        createBranch({ repo: { type: "model", name: repo }, branch: revision, hubUrl, fetch: hub.fetch, ...auth(token) }),
      );
      state = await step(`reading ${repo}@${revision}`, secrets, () => readRemoteState({ ...call, revision }));
    }
    const changed: PushItem[] = [];
    for (const item of items) {
      if (await sameAsRemote(item, state, hashOf)) result.unchanged++;
      else changed.push(item);
    }
    const deletes = planDeletes(state.files.keys(), new Set(items.map((i) => i.path)), options);
    result.deleted = deletes.paths;
    result.superseded = deletes.superseded;
    if (deletes.paths.length > 0) emit({ type: "delete", paths: deletes.paths, superseded: deletes.superseded });
    const plan = planCommits(changed, limits);
    // Removals ride with the last commit (config and card), so the repo never lacks weights in between.
    if (plan.length === 0 && deletes.paths.length > 0) plan.push([]);
    result.uploaded = plan.flat().map((i) => i.path);
    result.uploadBytes = changed.reduce((n, i) => n + i.size, 0);
    emit({ type: "plan", files: items.length, unchanged: result.unchanged, upload: changed.length, uploadBytes: result.uploadBytes, commits: plan.length });
    if (dryRun || plan.length === 0) return result;

    progress.start(changed);
    let head = state.head;
    const title = options.message ?? `Upload ${basename(dir)} with megahub`;
    for (const [index, batch] of plan.entries()) {
      if (options.abortSignal?.aborted) {
        throw new MegahubError("HUB", `push aborted after ${index} of ${plan.length} commits; run it again to resume`);
      }
      const landed = await commitBatch(batch, index === plan.length - 1 ? deletes.paths : [], {
        call, revision, hashOf, progress, secrets,
        title: plan.length > 1 ? `${title} (part ${index + 1}/${plan.length})` : title,
        parentCommit: head,
        useXet: options.useXet === true,
        abortSignal: options.abortSignal,
      });
      for (const item of batch) progress.finish(item.path);
      head = landed.oid;
      result.commits.push({ oid: landed.oid, url: landed.url, files: batch.map((i) => i.path) });
      emit({ type: "commit", index: index + 1, of: plan.length, oid: landed.oid, url: landed.url, files: batch.length, recovered: landed.recovered });
    }
    return result;
  } finally {
    result.bytesSent = progress.bytesSent;
    result.bytesResumed = hub.stats.bytesSkipped;
    result.retries = hub.stats.retries;
    await hub.close();
  }
}

interface BatchContext {
  call: HubCallParams;
  revision: string;
  title: string;
  parentCommit: string | undefined;
  useXet: boolean;
  abortSignal: AbortSignal | undefined;
  progress: ByteProgress;
  secrets: readonly (string | undefined)[];
  hashOf: HashOf;
}

/** One commit of the plan through @huggingface/hub's commitIter, feeding its hashing/upload events to progress. */
async function commitBatch(
  batch: readonly PushItem[],
  deletes: readonly string[],
  ctx: BatchContext,
): Promise<{ oid: string; url: string; recovered: boolean }> {
  const { call, revision } = ctx;
  const operations: CommitOperation[] = [
    ...(await Promise.all(
      batch.map(async (item) => ({ operation: "addOrUpdate" as const, path: item.path, content: await contentOf(item) })),
    )),
    ...deletes.map((path) => ({ operation: "delete" as const, path })),
  ];
  let committing = false;
  try {
    const iter = commitIter({
      repo: { type: "model", name: call.repo },
      operations,
      title: ctx.title,
      branch: revision,
      ...(ctx.parentCommit !== undefined ? { parentCommit: ctx.parentCommit } : {}),
      hubUrl: call.hubUrl,
      fetch: call.fetch,
      useXet: ctx.useXet,
      ...auth(call.accessToken),
      ...(ctx.abortSignal ? { abortSignal: ctx.abortSignal } : {}),
    });
    let r = await iter.next();
    for (; !r.done; r = await iter.next()) {
      const ev = r.value;
      if (ev.event === "phase") committing = ev.phase === "committing";
      else if (ev.state === "hashing") ctx.progress.hashed(ev.path, ev.progress);
      else if (ev.state === "uploading" && ev.progress >= 1) ctx.progress.finish(ev.path);
    }
    if (!r.value) throw new MegahubError("HUB", "the Hub's commit answer has no commit id");
    return { oid: r.value.commit.oid, url: r.value.commit.url, recovered: false };
  } catch (e) {
    // A commit whose answer was lost (dropped connection, then the retry hit a moved head) may have landed:
    // trust the tree, not the error.
    const recovered = committing && !ctx.abortSignal?.aborted ? await landedAnyway(call, revision, batch, deletes, ctx.hashOf) : undefined;
    if (recovered === undefined) throw toHubError(e, `committing to ${call.repo}@${revision}`, ctx.secrets);
    return { oid: recovered, url: `${call.hubUrl}/${call.repo}/commit/${recovered}`, recovered: true };
  }
}

/**
 * The sha256 of output files megahub computed while writing them (megahub.json `files`), keyed as hashOf caches:
 * comparing with the Hub then costs no pass over the weights. Only entries whose file still has the recorded size
 * and was not modified after the manifest was written are trusted.
 */
async function manifestHashes(dir: string): Promise<Map<string, string>> {
  const known = new Map<string, string>();
  const manifest = await readManifest(dir).catch(() => undefined);
  const written = await stat(join(dir, MANIFEST_FILE)).catch(() => undefined);
  if (!manifest || !written) return known;
  for (const [path, f] of Object.entries(manifest.files ?? {})) {
    if (typeof f.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(f.sha256)) continue;
    const s = await stat(join(dir, ...path.split("/"))).catch(() => undefined);
    if (s?.isFile() && s.size === f.bytes && s.mtimeMs <= written.mtimeMs) known.set(`sha256:${path}`, f.sha256);
  }
  return known;
}

/** The folder's files, plus the rendered card when one is wanted. */
async function collectItems(
  dir: string,
  repo: string,
  options: PushFolderOptions,
): Promise<{ items: PushItem[]; card: PushResult["card"] }> {
  const files: PushItem[] = (await listLocalFiles(dir)).filter((f) => selected(f.path, options));
  const mode = options.card ?? "auto";
  const hasReadme = files.some((f) => f.path === "README.md");
  if (mode === "never" || (mode === "auto" && hasReadme)) {
    return { items: files, card: hasReadme ? "existing" : "none" };
  }
  const text = await renderModelCard({ ...options.cardOptions, repo, manifest: await readManifest(dir) });
  const bytes = new TextEncoder().encode(text);
  return { items: [...files.filter((f) => f.path !== "README.md"), { path: "README.md", size: bytes.byteLength, bytes }], card: "generated" };
}

async function contentOf(item: PushItem): Promise<Blob> {
  // A file-backed Blob: hashed and sent straight from disk, never held in memory.
  return item.bytes ? new Blob([item.bytes]) : DiskBlob.open(item.absPath as string);
}

async function sameAsRemote(
  item: PushItem,
  state: RemoteState,
  hashOf: HashOf,
): Promise<boolean> {
  const remote = state.files.get(item.path);
  if (!remote || remote.size !== item.size) return false;
  // Hash only what the Hub's entry can be compared with: one pass over the file, not two.
  return remote.lfsOid !== undefined
    ? remote.lfsOid === (await hashOf(item, "sha256"))
    : remote.oid === (await hashOf(item, "gitSha1"));
}

/** After a failed commit: if the branch now holds every file of the batch, the commit landed; returns the head. */
async function landedAnyway(
  call: HubCallParams,
  revision: string,
  batch: readonly PushItem[],
  deletes: readonly string[],
  hashOf: HashOf,
): Promise<string | undefined> {
  try {
    const state = await readRemoteState({ ...call, revision });
    if (deletes.some((p) => state.files.has(p))) return undefined;
    for (const item of batch) {
      if (!(await sameAsRemote(item, state, hashOf))) return undefined;
    }
    return state.head;
  } catch {
    return undefined;
  }
}

async function ensureRepo(call: HubCallParams, isPrivate: boolean | undefined): Promise<boolean> {
  try {
    await createRepo({
      repo: { type: "model", name: call.repo },
      hubUrl: call.hubUrl,
      fetch: call.fetch,
      accessToken: call.accessToken as string,
      ...(isPrivate !== undefined ? { visibility: isPrivate ? ("private" as const) : ("public" as const) } : {}),
    });
    return true;
  } catch (e) {
    if (e instanceof HubApiError && e.statusCode === 409) return false; // already exists: fine
    throw e;
  }
}

async function step<T>(doing: string, secrets: readonly (string | undefined)[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw toHubError(e, doing, secrets);
  }
}

function auth(token: string | undefined): { accessToken?: string } {
  return token !== undefined ? { accessToken: token } : {};
}
