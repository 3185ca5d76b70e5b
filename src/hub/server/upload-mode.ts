import { LFS_SIZE_THRESHOLD, LFS_SUFFIXES } from "../plan-commits.js";

/**
 * The preupload decision, modelled on the Hub (hub-protocol.md §2): LFS when the file is 10 MB or more, when its
 * first 512 bytes contain a NUL (binary), or when `.gitattributes` routes its path to LFS. The Hub refuses binary
 * content committed as a regular file, so the client must follow this answer.
 */
export function uploadMode(
  path: string,
  size: number,
  sample: Uint8Array,
  lfsPatterns: readonly RegExp[],
): "lfs" | "regular" {
  if (size >= LFS_SIZE_THRESHOLD || sample.includes(0)) return "lfs";
  return lfsPatterns.some((re) => re.test(path)) ? "lfs" : "regular";
}

/** The `.gitattributes` a new repo starts with: the Hub's default LFS suffixes. */
export const DEFAULT_GITATTRIBUTES = `${LFS_SUFFIXES.map((s) => `*${s} filter=lfs diff=lfs merge=lfs -text`).join("\n")}\n`;

/**
 * Patterns of `.gitattributes` lines that set `filter=lfs`, as regexes over repo paths. Supports what
 * `.gitattributes` files on the Hub use: `*` within a segment, `**` across segments, `?`, and patterns without
 * `/` matching the basename anywhere.
 */
export function lfsPatterns(gitattributes: string): RegExp[] {
  const out: RegExp[] = [];
  for (const line of gitattributes.split("\n")) {
    const t = line.trim();
    if (t === "" || t.startsWith("#")) continue;
    const [pattern, ...attrs] = t.split(/\s+/);
    if (pattern === undefined || !attrs.includes("filter=lfs")) continue;
    out.push(globToRegExp(pattern));
  }
  return out;
}

function globToRegExp(glob: string): RegExp {
  const anchored = glob.includes("/") && !glob.startsWith("**/");
  const body = glob.replace(/^\//, "");
  let re = "";
  for (let i = 0; i < body.length; i++) {
    const c = body[i] as string;
    if (c === "*" && body[i + 1] === "*") {
      re += ".*";
      i++;
      if (body[i + 1] === "/") i++;
    } else if (c === "*") {
      re += "[^/]*";
    } else if (c === "?") {
      re += "[^/]";
    } else {
      re += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
  }
  return new RegExp(anchored ? `^${re}$` : `(^|/)${re}$`);
}

/** The text of a git LFS pointer file, which the Hub's tree `oid` and `raw/` endpoint refer to. */
export function lfsPointer(oid: string, size: number): string {
  return `version https://git-lfs.github.com/spec/v1\noid sha256:${oid}\nsize ${size}\n`;
}
