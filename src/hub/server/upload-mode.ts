import { LFS_SIZE_THRESHOLD, LFS_SUFFIXES } from "../plan-commits.js";
import { HttpError } from "./http-util.js";

/**
 * The preupload decision, modelled on the Hub (hub-protocol.md §2): LFS when the file is 10 MB or more, when its
 * first 512 bytes contain a NUL (binary), or when `.gitattributes` routes its path to LFS. The Hub refuses binary
 * content committed as a regular file, so the client must follow this answer.
 */
export function uploadMode(
  path: string,
  size: number,
  sample: Uint8Array,
  lfsPatterns: readonly GlobPattern[],
  work: WorkBudget = new WorkBudget(),
): "lfs" | "regular" {
  if (size >= LFS_SIZE_THRESHOLD || sample.includes(0)) return "lfs";
  return lfsPatterns.some((p) => globMatch(p, path, work)) ? "lfs" : "regular";
}

/** The `.gitattributes` a new repo starts with: the Hub's default LFS suffixes. */
export const DEFAULT_GITATTRIBUTES = `${LFS_SUFFIXES.map((s) => `*${s} filter=lfs diff=lfs merge=lfs -text`).join("\n")}\n`;

/** Patterns read from one `.gitattributes`, at most; more are ignored (no real repo has this many). */
export const MAX_LFS_PATTERNS = 2000;
/** Longest pattern considered; git's own paths are bounded by the repo path limit. */
const MAX_PATTERN_LENGTH = 1024;

/** Matcher steps one request may spend on `.gitattributes` patterns before it is refused. */
export class WorkBudget {
  constructor(private left = 50_000_000) {}

  spend(n: number): void {
    this.left -= n;
    if (this.left < 0) {
      throw new HttpError(400, "the repo's .gitattributes has too many or too complex LFS patterns to evaluate");
    }
  }
}

/**
 * A glob compiled to tokens for a linear-time matcher (no regular expressions, so no backtracking blow-up):
 * `lit` one character, `one` (`?`) one character but `/`, `star` (`*`) a run without `/`, `any` (`**`) any
 * run, `dirs` (`**\/`) zero or more whole folders.
 */
export interface GlobPattern {
  readonly anchored: boolean;
  readonly tokens: ReadonlyArray<{ kind: "lit"; c: string } | { kind: "one" | "star" | "any" | "dirs" }>;
}

/**
 * Patterns of `.gitattributes` lines that set `filter=lfs`. Supports what `.gitattributes` files on the Hub use:
 * `*` within a segment, `**` across segments, `?`, and patterns without `/` matching the basename anywhere.
 */
export function lfsPatterns(gitattributes: string): GlobPattern[] {
  const out: GlobPattern[] = [];
  for (const line of gitattributes.split("\n")) {
    if (out.length >= MAX_LFS_PATTERNS) break;
    const t = line.trim();
    if (t === "" || t.startsWith("#")) continue;
    const [pattern, ...attrs] = t.split(/\s+/);
    if (pattern === undefined || pattern.length > MAX_PATTERN_LENGTH || !attrs.includes("filter=lfs")) continue;
    out.push(compileGlob(pattern));
  }
  return out;
}

export function compileGlob(glob: string): GlobPattern {
  // As git: a pattern with a slash matches the whole path (a leading `**/` then matches any folders, or none);
  // one without matches the basename at any depth.
  const anchored = glob.includes("/");
  const body = glob.replace(/^\//, "");
  const tokens: Array<GlobPattern["tokens"][number]> = [];
  for (let i = 0; i < body.length; i++) {
    const c = body[i] as string;
    if (c === "*" && body[i + 1] === "*") {
      while (body[i + 1] === "*") i++;
      if (body[i + 1] === "/") {
        tokens.push({ kind: "dirs" });
        i++;
      } else {
        tokens.push({ kind: "any" });
      }
    } else if (c === "*") {
      if (tokens.at(-1)?.kind !== "star") tokens.push({ kind: "star" });
    } else if (c === "?") {
      tokens.push({ kind: "one" });
    } else {
      tokens.push({ kind: "lit", c });
    }
  }
  return { anchored, tokens };
}

/**
 * Whether `path` matches: a set-of-states simulation, O(path length × pattern length), charged to `work`. A
 * pattern without `/` is matched against the basename, as git does.
 */
export function globMatch(p: GlobPattern, path: string, work: WorkBudget = new WorkBudget()): boolean {
  const subject = p.anchored ? path : path.slice(path.lastIndexOf("/") + 1);
  const n = p.tokens.length;
  work.spend((subject.length + 1) * (n + 1));
  let cur = new Uint8Array(n + 1);
  let next = new Uint8Array(n + 1);
  // A state is 1 when entered, 2 when staying inside `dirs` mid-folder: only an entered `dirs` (at a folder
  // boundary) may match zero folders.
  const close = (set: Uint8Array) => {
    for (let s = 0; s < n; s++) {
      const k = p.tokens[s]?.kind;
      if (set[s] === 1 && k === "dirs") set[s + 1] = 1;
      else if (set[s] && (k === "star" || k === "any")) set[s + 1] = 1;
    }
  };
  cur[0] = 1;
  close(cur);
  for (const ch of subject) {
    next.fill(0);
    let alive = false;
    for (let s = 0; s < n; s++) {
      if (!cur[s]) continue;
      const t = p.tokens[s] as GlobPattern["tokens"][number];
      if (t.kind === "lit" ? t.c === ch : t.kind === "one" ? ch !== "/" : false) next[s + 1] = 1;
      else if (t.kind === "star" && ch !== "/") next[s] = 1;
      else if (t.kind === "any") next[s] = 1;
      else if (t.kind === "dirs") {
        if (!next[s]) next[s] = 2;
        if (ch === "/") next[s + 1] = 1;
      }
    }
    close(next);
    for (let s = 0; s <= n; s++) if (next[s]) alive = true;
    if (!alive) return false;
    [cur, next] = [next, cur];
  }
  return cur[n] === 1;
}

/** The text of a git LFS pointer file, which the Hub's tree `oid` and `raw/` endpoint refer to. */
export function lfsPointer(oid: string, size: number): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize ${size}\n`;
}
