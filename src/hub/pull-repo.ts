import { createHash } from "node:crypto";
import { copyFile, mkdir, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { MegahubError } from "../errors.js";
import { assertWritableTarget, mkdirp } from "../io/atomic.js";
import { resolveHubUrl } from "./config.js";
import { downloadResumable } from "./download-resumable.js";
import { createHubFetch, type HubFetchOptions, type RetryEvent } from "./hub-fetch.js";
import { toHubError } from "./redact.js";
import { readRemoteState, type RemoteFile } from "./remote-state.js";
import { checkRepoId, encodeRepoPath, isSafeRevision } from "./repo-path.js";

/** Options of {@link pullRepo}. Only `repo` and `out` are required. */
export interface PullRepoOptions {
  /** `"namespace/name"` of a model repo. */
  repo: string;
  /** Folder to create; it must not exist or be empty. It appears only once every file is verified. */
  out: string;
  /** Branch, tag or commit. @default "main" */
  revision?: string | undefined;
  /** @default HF_ENDPOINT, else https://huggingface.co */
  hubUrl?: string | undefined;
  /** Needed for private repos only. */
  accessToken?: string | undefined;
  /** Files downloaded at once. @default 4 */
  concurrency?: number | undefined;
  /** List what would be downloaded and where; create and download nothing. @default false */
  dryRun?: boolean | undefined;
  /** Mid-body connection losses resumed per file within one run. @default 5 */
  maxResumes?: number | undefined;
  fetchOptions?: Omit<HubFetchOptions, "onUploadBytes" | "onRetry" | "secrets"> | undefined;
  onEvent?: ((event: PullEvent) => void) | undefined;
  abortSignal?: AbortSignal | undefined;
}

/** What a pull reports while it runs (byte progress, resumed files, retries). */
export type PullEvent =
  | { type: "plan"; commit: string; files: number; bytes: number; alreadyHere: number }
  | { type: "download"; done: number; total: number }
  | { type: "resume"; path: string; from: number }
  | { type: "retry"; retry: RetryEvent };

/** What {@link pullRepo} did. */
export interface PullResult {
  repo: string;
  revision: string;
  /** The commit the revision pointed at; every file comes from it. */
  commit: string;
  out: string;
  files: number;
  bytes: number;
  /** Bytes received in this run (less than `bytes` when resuming). */
  bytesDownloaded: number;
  /** Files continued from a partial download. */
  resumed: string[];
  retries: number;
  dryRun: boolean;
  /** Dry run: the files still to download (those a killed earlier run verified are left out), with their sizes. */
  planned?: Array<{ path: string; bytes: number }>;
}

/**
 * Downloads every file of a repo revision into `out`, the way a careful engineer would: the revision is pinned to
 * its commit first, each file is fetched with resumable Range requests into a staging folder next to `out`
 * (named after hub, repo and revision, so the next run finds it), checked against the Hub's sha256 (LFS) or git
 * blob id, and the folder is renamed into place only when all files are verified. Re-running after a failure
 * resumes: verified files are kept, partial ones continue from their last byte.
 *
 * @example
 * const r = await pullRepo({ repo: "local/openba", out: "pulled", hubUrl: hub.url });
 */
export async function pullRepo(options: PullRepoOptions): Promise<PullResult> {
  const repo = checkRepoId(options.repo);
  const revision = options.revision ?? "main";
  if (!isSafeRevision(revision)) throw new MegahubError("USAGE", `revision ${JSON.stringify(revision)} is not valid`);
  const hubUrl = resolveHubUrl(options.hubUrl);
  const token = options.accessToken;
  const target = resolve(options.out);
  await assertWritableTarget(target);
  const emit = options.onEvent ?? (() => undefined);
  const hub = createHubFetch({
    ...options.fetchOptions,
    secrets: token !== undefined ? [token] : [],
    onRetry: (retry) => emit({ type: "retry", retry }),
  });
  const secrets = [token];
  const key = createHash("sha256").update(`${hubUrl}\n${repo}\n${revision}`).digest("hex").slice(0, 12);
  const staging = join(dirname(target), `.${basename(target)}.tmp-pull-${key}`);
  const objects = join(staging, "objects");
  try {
    const state = await readRemoteState({ repo, hubUrl, accessToken: token, fetch: hub.fetch, revision }).catch((e) => {
      throw toHubError(e, `listing ${repo}@${revision}`, secrets);
    });
    if (!state.repoExists || state.head === undefined) {
      throw new MegahubError(
        "HUB",
        state.repoExists
          ? `${repo} has no revision ${JSON.stringify(revision)}`
          : `${repo} does not exist on ${hubUrl}, or it is private and needs a token`,
      );
    }
    const commit = state.head;
    const files = [...state.files.values()];
    const total = files.reduce((n, f) => n + f.size, 0);
    let done = 0;
    const dryRun = options.dryRun === true;
    const result: PullResult = {
      repo, revision, commit, out: target, files: files.length, bytes: total, bytesDownloaded: 0, resumed: [], retries: 0, dryRun,
    };
    const pending: RemoteFile[] = [];
    for (const f of files) {
      const s = await stat(join(objects, objectKey(f))).catch(() => undefined);
      if (s?.size === f.size) done += f.size; // verified in an earlier run
      else pending.push(f);
    }
    emit({ type: "plan", commit, files: files.length, bytes: total, alreadyHere: files.length - pending.length });
    if (dryRun) return { ...result, retries: hub.stats.retries, planned: pending.map((f) => ({ path: f.path, bytes: f.size })) };
    await mkdirp(objects); // not mkdir -p: that never returns under /proc
    emit({ type: "download", done, total });
    await runQueue(pending, options.concurrency ?? 4, async (f) => {
      const objKey = objectKey(f);
      const part = join(objects, `${objKey}.part`);
      let resumed = false;
      await downloadResumable({
        url: `${hubUrl}/${repo}/resolve/${encodeURIComponent(commit)}/${encodeRepoPath(f.path)}`,
        accessToken: token,
        fetch: hub.fetch,
        dest: part,
        size: f.size,
        sha256: f.lfsOid,
        gitSha1: f.lfsOid === undefined ? f.oid : undefined,
        path: f.path,
        maxResumes: options.maxResumes,
        abortSignal: options.abortSignal,
        onBytes: (delta, fromDisk) => {
          done += delta;
          if (!fromDisk) result.bytesDownloaded += delta;
          emit({ type: "download", done, total });
        },
        onResume: (from) => {
          if (!resumed) result.resumed.push(f.path);
          resumed = true;
          emit({ type: "resume", path: f.path, from });
        },
      }).catch((e) => {
        throw toHubError(e, `downloading ${f.path}`, secrets);
      });
      await rename(part, join(objects, objKey));
    });
    await assemble(staging, objects, files, target);
    result.retries = hub.stats.retries;
    return result;
  } finally {
    await hub.close();
  }
}

/**
 * Lays the verified objects out as the repo tree and renames it to `target` — the only step that makes `out`
 * visible. Two paths with the same content share one object, so the second is copied.
 */
async function assemble(staging: string, objects: string, files: readonly RemoteFile[], target: string): Promise<void> {
  const tree = join(staging, "tree");
  await rm(tree, { recursive: true, force: true });
  await mkdir(tree, { recursive: true });
  const uses = new Map<string, number>();
  for (const f of files) uses.set(objectKey(f), (uses.get(objectKey(f)) ?? 0) + 1);
  for (const f of files) {
    const dest = join(tree, ...f.path.split("/"));
    await mkdir(dirname(dest), { recursive: true });
    const k = objectKey(f);
    const left = (uses.get(k) ?? 1) - 1;
    uses.set(k, left);
    if (left > 0) await copyFile(join(objects, k), dest);
    else await rename(join(objects, k), dest);
  }
  await assertWritableTarget(target);
  await rm(target, { recursive: true, force: true }); // at most an empty folder here
  await rename(tree, target);
  await rm(staging, { recursive: true, force: true });
}

/** Partial and finished downloads are named by the content hash the Hub announced, so resuming is safe. */
function objectKey(f: RemoteFile): string {
  const k = f.lfsOid ?? f.oid;
  if (k !== undefined && /^[0-9a-f]{40,64}$/.test(k)) return k;
  // No usable hash from the server: fall back to a name derived from path and size (still never a raw path).
  return createHash("sha256").update(`${f.path}\n${f.size}`).digest("hex");
}

async function runQueue<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const item = items[next++] as T;
      try {
        await work(item);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
  if (failed !== undefined) throw failed;
}
