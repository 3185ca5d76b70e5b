import { createHash } from "node:crypto";
import type { TokenGrant } from "./auth.js";
import type { FaultInjector } from "./faults.js";
import type { BodyBudget } from "./http-util.js";
import type { LfsStore } from "./lfs-store.js";
import type { CommitRecord, RepoRecord, RepoStore, RepoType } from "./storage.js";
import type { XetStore } from "./xet-store.js";

/** Counters of the local Hub, for tests and the `hub serve` log. */
export interface HubStats {
  requests: number;
  commits: number;
}

/** What every route handler shares. */
export interface HubState {
  readonly store: RepoStore;
  readonly lfs: LfsStore;
  readonly xet: XetStore;
  readonly grants: readonly TokenGrant[];
  readonly faults: FaultInjector;
  readonly stats: HubStats;
  readonly budget: BodyBudget;
  /** Entries per page of the tree API (the Hub pages at 1000). */
  readonly treePageSize: number;
  /** Whether batch calls that ask for resumable upload URLs (X-Megahub-Resume) get them. */
  readonly resumableUploads: boolean;
}

const TYPES = new Map<string, RepoType>([
  ["models", "model"],
  ["datasets", "dataset"],
  ["spaces", "space"],
]);

/** URL spelling (`models`, `datasets`, `spaces`) → repo type; a Map, so `constructor` or `__proto__` are no type. */
export function repoTypeOf(segment: string | undefined): RepoType | undefined {
  return segment === undefined ? undefined : TYPES.get(segment);
}

/** URL prefix of a repo's web pages and files: none for models, `datasets/` or `spaces/` otherwise. */
export function repoUrlPrefix(type: RepoType): string {
  return type === "model" ? "" : `${type}s/`;
}

/** What the repo object may carry beyond the basics, read from the revision's files by the caller. */
export interface RepoExtras {
  /** YAML metadata of README.md, or undefined when it has none. */
  cardData?: Record<string, unknown> | undefined;
  /** A few keys of config.json, as the Hub's `config` field. */
  config?: Record<string, unknown> | undefined;
}

/**
 * The repo object of `GET /api/models/{id}[/revision/{rev}]` (rows 2 and 15) and of the listing. `blobs` adds
 * size, blobId and lfs to siblings (`files_metadata=True`); `expand`, when given, keeps only the fields named
 * (plus `_id` and `id`), as the Hub does.
 */
export function repoInfo(
  repo: RepoRecord,
  commit: CommitRecord,
  options: { blobs?: boolean; expand?: readonly string[]; extras?: RepoExtras } = {},
): Record<string, unknown> {
  const card = options.extras?.cardData;
  const files = Object.keys(commit.tree).sort();
  const tags = new Set<string>();
  for (const t of Array.isArray(card?.tags) ? card.tags : []) if (typeof t === "string") tags.add(t);
  if (typeof card?.library_name === "string") tags.add(card.library_name);
  if (files.some((f) => f.endsWith(".safetensors"))) tags.add("safetensors");
  if (typeof card?.license === "string") tags.add(`license:${card.license}`);
  const full: Record<string, unknown> = {
    _id: createHash("sha1").update(`${repo.type}/${repo.name}`).digest("hex").slice(0, 24),
    id: repo.name,
    ...(repo.type === "model" ? { modelId: repo.name } : {}),
    author: repo.name.split("/")[0],
    sha: commit.id,
    lastModified: commit.at,
    createdAt: repo.createdAt,
    private: repo.private,
    gated: false,
    disabled: false,
    downloads: 0,
    likes: 0,
    tags: [...tags],
    pipeline_tag: typeof card?.pipeline_tag === "string" ? card.pipeline_tag : null,
    library_name: typeof card?.library_name === "string" ? card.library_name : null,
    ...(card !== undefined ? { cardData: card } : {}),
    ...(options.extras?.config !== undefined ? { config: options.extras.config } : {}),
    siblings: files.map((rfilename) => {
      const e = commit.tree[rfilename];
      if (!options.blobs || e === undefined) return { rfilename };
      return {
        rfilename,
        size: e.size,
        blobId: e.oid,
        ...(e.lfs ? { lfs: { sha256: e.lfs.oid, size: e.lfs.size, pointerSize: e.lfs.pointerSize } } : {}),
      };
    }),
    usedStorage: Object.values(commit.tree).reduce((n, e) => n + e.size, 0),
  };
  if (options.expand === undefined || options.expand.length === 0) return full;
  const out: Record<string, unknown> = { _id: full._id, id: full.id };
  for (const k of options.expand) if (Object.hasOwn(full, k)) out[k] = full[k];
  return out;
}
