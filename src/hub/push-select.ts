/**
 * What a push sends and removes: --include/--exclude patterns over the folder's files, the repo files the folder
 * no longer has that must go (--delete patterns, and by default the weight files a new layout supersedes, so
 * transformers never loads a stale model.safetensors beside new shards), and the gate that refuses a folder whose
 * last recorded verification failed.
 */
import { MegahubError } from "../errors.js";
import type { Manifest } from "../plan/manifest.js";

/**
 * fnmatch-style patterns as `hf upload` takes them: `*` matches any run of characters (`/` included), `?` one
 * character, `[abc]` a set. Matched without backtracking: a greedy two-pointer walk, linear in practice.
 */
export function globMatch(pattern: string, path: string): boolean {
  let p = 0;
  let s = 0;
  let starP = -1;
  let starS = 0;
  while (s < path.length) {
    const c = pattern[p];
    if (c === "*") {
      starP = p++;
      starS = s;
      continue;
    }
    if (c !== undefined && c !== "*" && matchOne(pattern, p, path[s] as string)) {
      p = nextToken(pattern, p);
      s++;
      continue;
    }
    if (starP < 0) return false;
    p = starP + 1;
    s = ++starS;
  }
  while (pattern[p] === "*") p++;
  return p === pattern.length;
}

function matchOne(pattern: string, p: number, ch: string): boolean {
  const c = pattern[p];
  if (c === "?") return true;
  if (c === "[") {
    const end = pattern.indexOf("]", p + 2);
    if (end < 0) return ch === "[";
    let body = pattern.slice(p + 1, end);
    const negate = body.startsWith("!");
    if (negate) body = body.slice(1);
    let hit = false;
    for (let i = 0; i < body.length; i++) {
      if (body[i + 1] === "-" && i + 2 < body.length) {
        if (ch >= (body[i] as string) && ch <= (body[i + 2] as string)) hit = true;
        i += 2;
      } else if (body[i] === ch) hit = true;
    }
    return hit !== negate;
  }
  return c === ch;
}

function nextToken(pattern: string, p: number): number {
  if (pattern[p] === "[") {
    const end = pattern.indexOf("]", p + 2);
    if (end >= 0) return end + 1;
  }
  return p + 1;
}

export interface Selection {
  include?: readonly string[] | undefined;
  exclude?: readonly string[] | undefined;
}

/** True when a path passes --include (any, when given) and no --exclude. */
export function selected(path: string, sel: Selection): boolean {
  if (sel.include && sel.include.length > 0 && !sel.include.some((g) => globMatch(g, path))) return false;
  return !(sel.exclude ?? []).some((g) => globMatch(g, path));
}

/** Files that hold or index a model's weights: the ones a new layout replaces. */
const WEIGHT_FILE = /(^|\/)(model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json|pytorch_model(-\d{5}-of-\d{5})?\.bin|pytorch_model\.bin\.index\.json)$/;

export function isWeightFile(path: string): boolean {
  return WEIGHT_FILE.test(path);
}

export interface DeletePlan {
  /** Repo files to remove, sorted. */
  paths: string[];
  /** Of those, the weight files removed by default because the folder's weights supersede them. */
  superseded: string[];
}

/**
 * The repo files to remove: those matching a --delete pattern, and (unless `keepSuperseded`) the weight files of
 * an older layout when the folder has weights of its own. Only files the folder lacks, inside the selection, and
 * never `.gitattributes`.
 */
export function planDeletes(
  remote: Iterable<string>,
  local: ReadonlySet<string>,
  options: Selection & { delete?: readonly string[] | undefined; keepSuperseded?: boolean | undefined },
): DeletePlan {
  const hasWeights = [...local].some(isWeightFile);
  const paths: string[] = [];
  const superseded: string[] = [];
  for (const path of remote) {
    if (local.has(path) || path === ".gitattributes" || !selected(path, options)) continue;
    const asked = (options.delete ?? []).some((g) => globMatch(g, path));
    const stale = options.keepSuperseded !== true && hasWeights && isWeightFile(path);
    if (asked || stale) paths.push(path);
    if (stale && !asked) superseded.push(path);
  }
  return { paths: paths.sort(), superseded: superseded.sort() };
}

/** Refuses a folder whose last recorded verification failed, unless forced. */
export function checkLastVerification(manifest: Manifest | undefined, force: boolean, dir: string): void {
  const last = manifest?.verification.at(-1);
  if (last === undefined || last.passed || force) return;
  throw new MegahubError(
    "VERIFY",
    `the last verification of this folder FAILED (${last.kind} ${last.reference}, ${last.at}); fix and verify it again, or push with --force to publish it anyway`,
    { file: dir },
  );
}
