import { MegahubError } from "../errors.js";

/**
 * Names that travel between machines — repo ids, file paths inside a repo, branch names, tar member names — are
 * untrusted on both sides: a server must not let `../` escape its data directory, and a client must not let a
 * hostile server (or archive) write outside `--out`. Every such name passes through one of these checks.
 */

/** Longest path accepted inside a repo; the Hub's own limit is of this order and no model needs more. */
export const MAX_REPO_PATH_LENGTH = 1024;

/** One namespace or repo-name segment, as the Hub allows them (letters, digits, `-`, `_`, `.`; 96 chars). */
const REPO_SEGMENT = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_-])?$/;

/** A branch name (or commit sha) megahub accepts; slashes allowed for `refs/pr/1`-style names. */
const REVISION = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$/;

/**
 * Returns `"ns/name"` when `repo` is a valid model repo id, or throws a USAGE error that says what is wrong.
 * Rejects `..`, `.git` suffixes and anything that is not exactly two segments.
 */
export function checkRepoId(repo: string): string {
  const parts = repo.split("/");
  const ok =
    parts.length === 2 &&
    parts.every((p) => REPO_SEGMENT.test(p) && !p.includes("..") && !p.toLowerCase().endsWith(".git"));
  if (!ok) {
    throw new MegahubError(
      "USAGE",
      `repo id ${JSON.stringify(repo)} is not of the form "namespace/name" (letters, digits, "-", "_", "." only)`,
    );
  }
  return repo;
}

/** True when `rev` is a branch name or commit id megahub will put into a URL or a file name. */
export function isSafeRevision(rev: string): boolean {
  return REVISION.test(rev) && !rev.split("/").some((s) => s === "" || s === "." || s === "..");
}

/**
 * Why a repo-relative path is unsafe, or undefined when it is safe: relative, `/`-separated, no empty, `.` or
 * `..` segments, no backslashes, NUL or control characters, no `.git` directory, and not too long.
 */
export function repoPathProblem(path: string): string | undefined {
  if (path.length === 0) return "the path is empty";
  if (path.length > MAX_REPO_PATH_LENGTH) return `the path is longer than ${MAX_REPO_PATH_LENGTH} characters`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\\]/.test(path)) return "the path contains a backslash or a control character";
  if (path.startsWith("/") || /^[A-Za-z]:/.test(path)) return "the path is absolute";
  for (const seg of path.split("/")) {
    if (seg === "" || seg === "." || seg === "..") return "the path has an empty, '.' or '..' segment";
    if (seg.toLowerCase() === ".git") return "the path goes into a .git directory";
  }
  return undefined;
}

/** Throws a FORMAT error (naming `where`) when {@link repoPathProblem} finds one; returns the path otherwise. */
export function checkRepoPath(path: string, where: string): string {
  const problem = repoPathProblem(path);
  if (problem !== undefined) {
    throw new MegahubError("FORMAT", `refusing path ${JSON.stringify(path.slice(0, 200))}: ${problem}`, {
      file: where,
    });
  }
  return path;
}

/** Percent-encodes each segment of a repo path for a URL, keeping the `/` separators. */
export function encodeRepoPath(path: string): string {
  return path.split("/").map(encodeURIComponent).join("/");
}
