import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { MegahubError } from "../errors.js";
import { repoPathProblem } from "./repo-path.js";

/** A file of the folder being pushed: its repo path and where it lives on disk. */
export interface LocalFile {
  /** `/`-separated path inside the repo. */
  readonly path: string;
  readonly absPath: string;
  readonly size: number;
}

/**
 * Hidden entries that are never pushed: VCS and cache folders, and megahub's own staging leftovers
 * (`.<name>.tmp-…`). `.gitattributes` and other dot files at the top are pushed — the Hub uses them.
 */
function isSkipped(name: string, isDir: boolean): boolean {
  if (isDir) return name.startsWith(".");
  return name.includes(".tmp-") || name === ".DS_Store";
}

/**
 * Lists every file under `dir` (following symlinks to files, skipping symlinked folders to avoid cycles) in a
 * stable order. Lists the files itself rather than handing @huggingface/hub a folder URL, which would put them
 * under `<folder name>/` in the repo and ignore `maxFolderDepth` (hub-protocol.md §1.1).
 */
export async function listLocalFiles(dir: string): Promise<LocalFile[]> {
  const out: LocalFile[] = [];
  const walk = async (at: string): Promise<void> => {
    const entries = await readdir(at, { withFileTypes: true });
    for (const e of entries) {
      const abs = join(at, e.name);
      let isFile = e.isFile();
      let isDir = e.isDirectory();
      if (e.isSymbolicLink()) {
        const s = await stat(abs).catch(() => undefined);
        isFile = s?.isFile() ?? false;
        isDir = false;
      }
      if (isSkipped(e.name, isDir)) continue;
      if (isDir) {
        await walk(abs);
      } else if (isFile) {
        const path = relative(dir, abs).split(sep).join("/");
        const problem = repoPathProblem(path);
        if (problem !== undefined) {
          throw new MegahubError("USAGE", `cannot push this file: ${problem}`, { file: abs });
        }
        out.push({ path, absPath: abs, size: (await stat(abs)).size });
      }
    }
  };
  try {
    await walk(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ENOTDIR") {
      throw new MegahubError("USAGE", "not a directory", { file: dir });
    }
    throw e;
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Which content hash: sha256 (the LFS oid) or the git blob sha1 (the tree oid of regular files). */
export type HashKind = "sha256" | "gitSha1";

/** Streams a file once through the hash the Hub's entry for it needs. */
export async function hashFile(absPath: string, size: number, kind: HashKind): Promise<string> {
  const hash = kind === "sha256" ? createHash("sha256") : createHash("sha1").update(`blob ${size}\0`);
  for await (const chunk of createReadStream(absPath, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** The git blob id of in-memory content, as the Hub reports for regular files. */
export function gitBlobSha1(bytes: Uint8Array): string {
  return createHash("sha1").update(`blob ${bytes.byteLength}\0`).update(bytes).digest("hex");
}
