import { createHash } from "node:crypto";
import type { FaultInjector } from "./faults.js";
import type { LfsStore } from "./lfs-store.js";
import type { CommitRecord, RepoRecord, RepoStore, RepoType } from "./storage.js";

/** Counters of the local Hub, for tests and the `hub serve` log. */
export interface HubStats {
  requests: number;
  commits: number;
}

/** What every route handler shares. */
export interface HubState {
  readonly store: RepoStore;
  readonly lfs: LfsStore;
  readonly tokens: readonly string[];
  readonly faults: FaultInjector;
  readonly stats: HubStats;
  /** Entries per page of the tree API (the Hub pages at 1000). */
  readonly treePageSize: number;
}

/** URL spelling (`models`, `datasets`, `spaces`) → repo type. */
export const REPO_TYPES: Readonly<Record<string, RepoType>> = { models: "model", datasets: "dataset", spaces: "space" };

/** URL prefix of a repo's web pages and files: none for models, `datasets/` or `spaces/` otherwise. */
export function repoUrlPrefix(type: RepoType): string {
  return type === "model" ? "" : `${type}s/`;
}

/** The repo object of `GET /api/models/{id}` and `…/revision/{rev}` (rows 2 and 15). */
export function repoInfo(repo: RepoRecord, commit: CommitRecord): Record<string, unknown> {
  return {
    _id: createHash("sha1").update(`${repo.type}/${repo.name}`).digest("hex").slice(0, 24),
    id: repo.name,
    modelId: repo.name,
    author: repo.name.split("/")[0],
    sha: commit.id,
    private: repo.private,
    gated: false,
    disabled: false,
    downloads: 0,
    likes: 0,
    tags: [],
    pipeline_tag: null,
    createdAt: repo.createdAt,
    lastModified: commit.at,
    siblings: Object.keys(commit.tree)
      .sort()
      .map((rfilename) => ({ rfilename })),
  };
}
