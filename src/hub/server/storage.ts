import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../../io/atomic.js";
import { gitBlobSha1 } from "../local-files.js";
import { checkRepoId, isSafeRevision, repoPathProblem } from "../repo-path.js";
import { ownsNamespace, type Principal } from "./auth.js";
import { HttpError } from "./http-util.js";
import { DEFAULT_GITATTRIBUTES, lfsPointer } from "./upload-mode.js";

/** The Hub's repo kinds; the local hub stores all three alike. */
export type RepoType = "model" | "dataset" | "space";

/** A file in a commit's tree, in the shape the Hub's tree API returns. */
export interface TreeEntry {
  path: string;
  size: number;
  /** Git blob id: of the content for regular files, of the pointer for LFS files. */
  oid: string;
  lfs?: { oid: string; size: number; pointerSize: number };
}

/** A commit on disk: its id, parents, message and the whole tree it produced. */
export interface CommitRecord {
  id: string;
  parents: string[];
  summary: string;
  description: string;
  at: string;
  /** User whose token made the commit (absent in the initial commit and in data of older versions). */
  author?: string;
  tree: Record<string, TreeEntry>;
}

/** `repo.json`: visibility and branch heads. */
export interface RepoRecord {
  type: RepoType;
  /** `"ns/name"`. */
  name: string;
  private: boolean;
  createdAt: string;
  /** Branch → commit id. */
  refs: Record<string, string>;
  /** Tag → commit id and message. */
  tags?: Record<string, { commit: string; message: string }>;
}

/** One operation of an NDJSON commit, validated. */
export type CommitOp =
  | { kind: "file"; path: string; content: Buffer }
  | { kind: "lfs"; path: string; oid: string; size: number | undefined }
  | { kind: "delete"; path: string }
  | { kind: "deleteFolder"; path: string };

/**
 * The local Hub's repositories on disk. Regular file contents are stored once by git blob id under `blobs/`, LFS
 * objects by sha256 under `lfs/objects/` (see LfsStore); a repo is `repo.json` (refs) plus one JSON file per
 * commit holding its whole tree. A commit is written first and the branch moved after, by an atomic rename, so a
 * reader sees either the old or the new tree — never a partial commit. Writes to one repo are serialized.
 *
 * No user-supplied name becomes a file name without passing {@link checkRepoId} or being a hex digest.
 */
export class RepoStore {
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(readonly dataDir: string) {}

  /** Validates `ns/name` (400 otherwise) and returns the repo's directory. */
  repoDir(type: RepoType, name: string): string {
    try {
      checkRepoId(name);
    } catch {
      throw new HttpError(400, `invalid repo name ${JSON.stringify(name.slice(0, 200))}`);
    }
    return join(this.dataDir, "repos", `${type}s`, name);
  }

  async getRepo(type: RepoType, name: string): Promise<RepoRecord | undefined> {
    try {
      const repo = JSON.parse(await readFile(join(this.repoDir(type, name), "repo.json"), "utf8")) as RepoRecord;
      // Null-prototype maps: a branch named `constructor` or `__proto__` must find nothing, not Object's members.
      return { ...repo, refs: dict(repo.refs), tags: dict(repo.tags ?? {}) };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
  }

  /** The repo, or 404 `RepoNotFound` (also for a private repo the caller may not see). */
  async mustGetRepo(type: RepoType, name: string, principal: Principal | undefined): Promise<RepoRecord> {
    const repo = await this.getRepo(type, name);
    if (repo === undefined || (repo.private && !ownsNamespace(principal, name.split("/")[0] ?? ""))) {
      throw new HttpError(404, "Repository not found", "RepoNotFound");
    }
    return repo;
  }

  /** Creates a repo with an initial commit holding the default `.gitattributes`, as the Hub does; 409 if taken. */
  async createRepo(type: RepoType, name: string, isPrivate: boolean): Promise<RepoRecord> {
    const dir = this.repoDir(type, name);
    return this.withLock(dir, async () => {
      if ((await this.getRepo(type, name)) !== undefined) {
        throw new HttpError(409, `You already created this ${type} repo`);
      }
      await mkdir(join(dir, "commits"), { recursive: true });
      const content = Buffer.from(DEFAULT_GITATTRIBUTES);
      const oid = await this.putBlob(content);
      const initial = await this.writeCommit(dir, [], "initial commit", "", {
        ".gitattributes": { path: ".gitattributes", size: content.length, oid },
      });
      const repo: RepoRecord = { type, name, private: isPrivate, createdAt: initial.at, refs: { main: initial.id } };
      await writeFileAtomic(join(dir, "repo.json"), JSON.stringify(repo));
      return repo;
    });
  }

  async deleteRepo(type: RepoType, name: string): Promise<void> {
    const dir = this.repoDir(type, name);
    await this.withLock(dir, async () => {
      if ((await this.getRepo(type, name)) === undefined) throw new HttpError(404, "Repository not found", "RepoNotFound");
      await rm(dir, { recursive: true, force: true });
    });
  }

  /**
   * Commit id of a branch or tag name (also spelled `refs/heads/…`, `refs/tags/…`), `HEAD`, or a full commit id;
   * 404 `RevisionNotFound` otherwise, 400 for a name no ref can have.
   */
  async resolveRevision(repo: RepoRecord, rev: string): Promise<string> {
    if (rev.length > 256) throw new HttpError(400, "invalid revision");
    const name = rev === "HEAD" ? "main" : rev.replace(/^refs\/(heads|tags)\//, "");
    const id = own(repo.refs, name) ?? own(repo.tags ?? {}, name)?.commit;
    if (id !== undefined) return id;
    if (/^[0-9a-f]{40}$/.test(rev) && (await this.exists(join(this.repoDir(repo.type, repo.name), "commits", `${rev}.json`)))) {
      return rev;
    }
    throw new HttpError(404, `Invalid rev id: ${rev.slice(0, 100)}`, "RevisionNotFound");
  }

  async getCommit(repo: RepoRecord, id: string): Promise<CommitRecord> {
    if (!/^[0-9a-f]{40}$/.test(id)) throw new HttpError(404, "Invalid rev id", "RevisionNotFound");
    const file = join(this.repoDir(repo.type, repo.name), "commits", `${id}.json`);
    const commit = JSON.parse(await readFile(file, "utf8")) as CommitRecord;
    return { ...commit, tree: dict(commit.tree) };
  }

  /** Commits reachable from `rev` by first parents, newest first: `skip` of them, then up to `limit`. */
  async history(repo: RepoRecord, rev: string, skip: number, limit: number): Promise<{ commits: CommitRecord[]; more: boolean }> {
    let id: string | undefined = await this.resolveRevision(repo, rev);
    const commits: CommitRecord[] = [];
    for (let i = 0; id !== undefined && commits.length <= limit; i++) {
      const c = await this.getCommit(repo, id);
      if (i >= skip) commits.push(c);
      id = c.parents[0];
    }
    const more = commits.length > limit;
    return { commits: commits.slice(0, limit), more };
  }

  /** Every repo of a type, as stored (visibility is the caller's business). */
  async listRepos(type: RepoType): Promise<RepoRecord[]> {
    const root = join(this.dataDir, "repos", `${type}s`);
    const out: RepoRecord[] = [];
    for (const ns of await readdir(root).catch(() => [] as string[])) {
      for (const name of await readdir(join(root, ns)).catch(() => [] as string[])) {
        const repo = await this.getRepo(type, `${ns}/${name}`).catch(() => undefined);
        if (repo !== undefined) out.push(repo);
      }
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Creates `branch` at `from` (default main); 409 when it exists, unless `overwrite`. */
  async createBranch(repo: RepoRecord, branch: string, from: string | undefined, overwrite: boolean): Promise<void> {
    if (!isSafeRevision(branch) || /^[0-9a-f]{40}$/.test(branch)) throw new HttpError(400, "Invalid reference name");
    await this.updateRefs(repo, async (current) => {
      if (own(current.refs, branch) !== undefined && !overwrite) throw new HttpError(409, `Reference already exists: refs/heads/${branch}`);
      current.refs[branch] = await this.resolveRevision(current, from ?? "main");
    });
  }

  /** Deletes a branch other than main; 404 when there is none. */
  async deleteBranch(repo: RepoRecord, branch: string): Promise<void> {
    await this.updateRefs(repo, async (current) => {
      if (branch === "main") throw new HttpError(403, "You cannot delete the default branch");
      if (own(current.refs, branch) === undefined) throw new HttpError(404, `Invalid rev id: ${branch.slice(0, 100)}`, "RevisionNotFound");
      delete current.refs[branch];
    });
  }

  /** Tags `rev` as `tag`; 409 when the tag exists. */
  async createTag(repo: RepoRecord, tag: string, rev: string, message: string): Promise<void> {
    if (!isSafeRevision(tag) || /^[0-9a-f]{40}$/.test(tag)) throw new HttpError(400, "Invalid reference name");
    await this.updateRefs(repo, async (current) => {
      const tags = current.tags ?? dict<{ commit: string; message: string }>({});
      if (own(tags, tag) !== undefined) throw new HttpError(409, `Reference already exists: refs/tags/${tag}`);
      tags[tag] = { commit: await this.resolveRevision(current, rev), message };
      current.tags = tags;
    });
  }

  async deleteTag(repo: RepoRecord, tag: string): Promise<void> {
    await this.updateRefs(repo, async (current) => {
      if (own(current.tags ?? {}, tag) === undefined) throw new HttpError(404, `Invalid rev id: ${tag.slice(0, 100)}`, "RevisionNotFound");
      delete current.tags?.[tag];
    });
  }

  async setPrivate(type: RepoType, name: string, isPrivate: boolean): Promise<void> {
    const repo = await this.getRepo(type, name);
    if (repo === undefined) throw new HttpError(404, "Repository not found", "RepoNotFound");
    await this.updateRefs(repo, async (current) => {
      current.private = isPrivate;
    });
  }

  /** Re-reads repo.json under the repo's lock, lets `change` edit it, and writes it back atomically. */
  private async updateRefs(repo: RepoRecord, change: (current: RepoRecord) => Promise<void>): Promise<void> {
    const dir = this.repoDir(repo.type, repo.name);
    await this.withLock(dir, async () => {
      const current = await this.getRepo(repo.type, repo.name);
      if (current === undefined) throw new HttpError(404, "Repository not found", "RepoNotFound");
      await change(current);
      await writeFileAtomic(join(dir, "repo.json"), JSON.stringify(current));
    });
  }

  /**
   * Applies `ops` on top of `branch` as one new commit. `parentCommit`, when given, must be the branch head
   * (412 otherwise), which is how clients avoid overwriting a concurrent push.
   */
  async commit(
    repoRef: RepoRecord,
    branch: string,
    header: { summary: string; description: string; parentCommit: string | undefined; author?: string | undefined },
    ops: readonly CommitOp[],
    lfsHas: (oid: string, size: number) => Promise<boolean>,
    lfsSize: (oid: string) => Promise<number | undefined>,
  ): Promise<CommitRecord> {
    const dir = this.repoDir(repoRef.type, repoRef.name);
    return this.withLock(dir, async () => {
      const repo = await this.getRepo(repoRef.type, repoRef.name);
      if (repo === undefined) throw new HttpError(404, "Repository not found", "RepoNotFound");
      const headId = own(repo.refs, branch);
      if (headId === undefined) throw new HttpError(404, `Invalid rev id: ${branch}`, "RevisionNotFound");
      if (header.parentCommit !== undefined && header.parentCommit !== headId) {
        throw new HttpError(412, "A commit has happened since. Please refresh and try again.");
      }
      const tree = dict((await this.getCommit(repo, headId)).tree);
      for (const op of ops) {
        const problem = repoPathProblem(op.path);
        if (problem !== undefined) throw new HttpError(400, `invalid path ${JSON.stringify(op.path.slice(0, 200))}: ${problem}`);
        if (op.kind === "file") {
          tree[op.path] = { path: op.path, size: op.content.length, oid: await this.putBlob(op.content) };
        } else if (op.kind === "lfs") {
          // A copy (Python's CommitOperationCopy) names the oid only: the size is the stored object's.
          const size = op.size ?? (await lfsSize(op.oid));
          if (size === undefined || !(await lfsHas(op.oid, size))) {
            throw new HttpError(422, `LFS object ${op.oid} for ${op.path} was never uploaded`);
          }
          const pointer = Buffer.from(lfsPointer(op.oid, size));
          tree[op.path] = {
            path: op.path,
            size,
            oid: gitBlobSha1(pointer),
            lfs: { oid: op.oid, size, pointerSize: pointer.length },
          };
        } else if (op.kind === "delete") {
          if (tree[op.path] === undefined) throw new HttpError(404, `Entry not found: ${op.path}`, "EntryNotFound");
          delete tree[op.path];
        } else {
          for (const p of Object.keys(tree)) if (p.startsWith(`${op.path}/`)) delete tree[p];
        }
      }
      checkNoFileDirClash(tree);
      const commit = await this.writeCommit(dir, [headId], header.summary, header.description, tree, header.author);
      repo.refs[branch] = commit.id;
      await writeFileAtomic(join(dir, "repo.json"), JSON.stringify(repo));
      return commit;
    });
  }

  blobPath(oid: string): string {
    return join(this.dataDir, "blobs", oid.slice(0, 2), oid);
  }

  private async putBlob(content: Buffer): Promise<string> {
    const oid = gitBlobSha1(content);
    const path = this.blobPath(oid);
    if (!(await this.exists(path))) {
      await mkdir(join(this.dataDir, "blobs", oid.slice(0, 2)), { recursive: true });
      await writeFileAtomic(path, content);
    }
    return oid;
  }

  private async writeCommit(
    dir: string,
    parents: string[],
    summary: string,
    description: string,
    tree: Record<string, TreeEntry>,
    author?: string,
  ): Promise<CommitRecord> {
    const at = new Date().toISOString();
    // Like git, the id hashes the parents, tree and message; the nonce keeps two identical commits distinct.
    const id = createHash("sha1")
      .update(JSON.stringify({ parents, summary, at, tree, nonce: randomBytes(8).toString("hex") }))
      .digest("hex");
    const commit: CommitRecord = { id, parents, summary, description, at, ...(author !== undefined ? { author } : {}), tree };
    await writeFileAtomic(join(dir, "commits", `${id}.json`), JSON.stringify(commit));
    return commit;
  }

  private async exists(path: string): Promise<boolean> {
    return stat(path).then(
      () => true,
      () => false,
    );
  }

  /** Runs `fn` after every earlier `fn` for the same key has settled. */
  private withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.locks.set(key, settled);
    void settled.then(() => {
      if (this.locks.get(key) === settled) this.locks.delete(key);
    });
    return next;
  }
}

/** A path cannot be a file and a folder at once (`a` and `a/b`). */
function checkNoFileDirClash(tree: Record<string, TreeEntry>): void {
  for (const p of Object.keys(tree)) {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join("/");
      if (tree[prefix] !== undefined) throw new HttpError(400, `${p} conflicts with the file ${prefix}`);
    }
  }
}

/** A null-prototype copy of a JSON map, so that no key reaches Object.prototype. */
export function dict<T>(from: Record<string, T>): Record<string, T> {
  return Object.assign(Object.create(null) as Record<string, T>, from);
}

/** `map[key]` when it is the map's own entry. */
export function own<T>(map: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(map, key) ? map[key] : undefined;
}
