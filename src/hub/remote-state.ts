import { HubApiError, listFiles } from "@huggingface/hub";
import { checkRepoPath } from "./repo-path.js";

/** One file as the Hub lists it. */
export interface RemoteFile {
  readonly path: string;
  readonly size: number;
  /** Git blob id (of the LFS pointer for LFS files). */
  readonly oid: string | undefined;
  /** sha256 of the content, for LFS files. */
  readonly lfsOid: string | undefined;
}

/** What a revision of a repo holds, read once before pushing or pulling. */
export interface RemoteState {
  readonly repoExists: boolean;
  /** The commit the revision points at; undefined when the repo or branch does not exist. */
  readonly head: string | undefined;
  readonly files: ReadonlyMap<string, RemoteFile>;
}

/** Shared parameters of every Hub call megahub makes. */
export interface HubCallParams {
  /** `"namespace/name"` of a model repo. */
  repo: string;
  hubUrl: string;
  accessToken?: string | undefined;
  /** The injected fetch (see createHubFetch). */
  fetch: typeof fetch;
}

/**
 * Resolves `revision` to a commit id through `GET /api/models/{repo}/revision/{rev}` (what `modelInfo` calls).
 * Pinning the commit first means a push or pull sees one consistent tree even if someone commits meanwhile.
 */
export async function resolveRevision(
  params: HubCallParams & { revision: string },
): Promise<{ repoExists: boolean; head: string | undefined }> {
  const url = `${params.hubUrl}/api/models/${params.repo}/revision/${encodeURIComponent(params.revision)}`;
  const res = await params.fetch(url, {
    headers: params.accessToken !== undefined ? { Authorization: `Bearer ${params.accessToken}` } : {},
  });
  if (res.status === 404 || res.status === 401) {
    const code = res.headers.get("x-error-code");
    await res.body?.cancel();
    return { repoExists: code === "RevisionNotFound", head: undefined };
  }
  if (!res.ok) {
    throw await apiError(res);
  }
  const info = (await res.json()) as { sha?: unknown };
  if (typeof info.sha !== "string" || !/^[0-9a-f]{40,64}$/.test(info.sha)) {
    throw new HubApiError(url, res.status, undefined, "the revision answer has no commit sha");
  }
  return { repoExists: true, head: info.sha };
}

/** Lists every file of `revision` (recursively), checking each path the server sends before anyone uses it. */
export async function readRemoteState(params: HubCallParams & { revision: string }): Promise<RemoteState> {
  const { repoExists, head } = await resolveRevision(params);
  const files = new Map<string, RemoteFile>();
  if (head === undefined) {
    return { repoExists, head, files };
  }
  for await (const entry of listFiles({
    repo: { type: "model", name: params.repo },
    revision: head,
    recursive: true,
    hubUrl: params.hubUrl,
    fetch: params.fetch,
    ...(params.accessToken !== undefined ? { accessToken: params.accessToken } : {}),
  })) {
    if (entry.type !== "file") continue;
    checkRepoPath(entry.path, `${params.repo}@${head}`);
    files.set(entry.path, { path: entry.path, size: entry.size, oid: entry.oid, lfsOid: entry.lfs?.oid });
  }
  return { repoExists, head, files };
}

/** A HubApiError from a response, with the server's JSON `error` as message, as @huggingface/hub builds them. */
export async function apiError(res: Response): Promise<HubApiError> {
  let message = `Api error with status ${res.status}`;
  const text = await res.text().catch(() => "");
  try {
    const json = JSON.parse(text) as { error?: unknown; message?: unknown };
    const m = json.error ?? json.message;
    if (typeof m === "string") message = m;
  } catch {
    if (text.trim() !== "") message = text.trim().slice(0, 300);
  }
  return new HubApiError(res.url, res.status, res.headers.get("x-request-id") ?? undefined, `${message}. URL: ${res.url}`);
}
