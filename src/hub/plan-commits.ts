/**
 * Splitting one push into several commits. The Hub refuses commits whose NDJSON body (regular files are embedded
 * as base64) passes ~100 MB, misbehaves past ~1000 files per commit, and rate-limits commits to 128 per hour
 * (hub-protocol.md §8). Fewer, bounded commits also make a long push resumable in visible steps: each landed
 * commit is skipped by the next run.
 */

/** Bounds of one commit; see {@link DEFAULT_COMMIT_LIMITS}. */
export interface CommitLimits {
  /** Files per commit. Python's upload_folder starts at 256. @default 256 */
  maxFiles: number;
  /** Raw bytes of regular (non-LFS) files per commit; ×4/3 once base64-encoded. @default 50_000_000 */
  maxRegularBytes: number;
  /** LFS bytes per commit, so a multi-hundred-GB push lands in steps. @default 20_000_000_000 */
  maxLfsBytes: number;
}

/** Limits below the Hub's: ~100 MB commit bodies, ~1000 files, and a 20 GB "recommended" size per step. */
export const DEFAULT_COMMIT_LIMITS: CommitLimits = {
  maxFiles: 256,
  maxRegularBytes: 50_000_000,
  maxLfsBytes: 20_000_000_000,
};

/** The Hub stores files of 10 MB and more through LFS whatever their type. */
export const LFS_SIZE_THRESHOLD = 10 * 1024 * 1024;

/** Suffixes the Hub's default `.gitattributes` routes to LFS. */
export const LFS_SUFFIXES = [
  ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".onnx_data", ".model", ".msgpack", ".npy",
  ".npz", ".pb", ".tflite", ".ot", ".arrow", ".parquet", ".gguf", ".tar", ".zip", ".gz", ".zst", ".7z",
  ".pkl", ".pickle", ".joblib", ".wasm", ".bz2", ".xz", ".tgz", ".rar", ".mlmodel", ".tfevents",
] as const;

/** A guess at the upload mode, used for planning only: the Hub's preupload answer decides the real mode. */
export function likelyLfs(path: string, size: number): boolean {
  const lower = path.toLowerCase();
  return size >= LFS_SIZE_THRESHOLD || LFS_SUFFIXES.some((s) => lower.endsWith(s));
}

/** Files that describe the weights go last, so a repo that shows a model card also has its weights. */
const LAST = ["config.json", "megahub.json", "README.md"];

function rank(path: string, lfs: boolean): number {
  const i = LAST.indexOf(path);
  return i >= 0 ? 2 + i : lfs ? 0 : 1;
}

/**
 * Groups files into commits under `limits`: LFS files first, then regular files, then config, manifest and card.
 * A single file larger than a byte limit gets a commit of its own. Pure, so the dry run shows the same plan.
 */
export function planCommits<T extends { readonly path: string; readonly size: number }>(
  files: readonly T[],
  limits: CommitLimits = DEFAULT_COMMIT_LIMITS,
): T[][] {
  const ordered = [...files].sort((a, b) => {
    const d = rank(a.path, likelyLfs(a.path, a.size)) - rank(b.path, likelyLfs(b.path, b.size));
    return d !== 0 ? d : a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
  });
  const commits: T[][] = [];
  let current: T[] = [];
  let regular = 0;
  let lfs = 0;
  for (const f of ordered) {
    const isLfs = likelyLfs(f.path, f.size);
    const over =
      current.length >= limits.maxFiles ||
      (isLfs ? lfs + f.size > limits.maxLfsBytes : regular + f.size > limits.maxRegularBytes);
    if (over && current.length > 0) {
      commits.push(current);
      current = [];
      regular = lfs = 0;
    }
    current.push(f);
    if (isLfs) lfs += f.size;
    else regular += f.size;
  }
  if (current.length > 0) commits.push(current);
  return commits;
}
