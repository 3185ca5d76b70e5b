import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { MegahubError } from "../errors.js";

/** Writes a file under a temporary name in the same directory and renames it into place. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${randomBytes(4).toString("hex")}`);
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/**
 * An output directory that appears only when complete: work happens in a hidden sibling, `commit()` renames it
 * to the target, `abort()` removes it. An existing non-empty target is refused, so nothing a user has is lost.
 */
export class StagedDir {
  private constructor(
    readonly target: string,
    readonly path: string,
  ) {}

  static async create(target: string): Promise<StagedDir> {
    await assertWritableTarget(target);
    await mkdir(dirname(target), { recursive: true });
    const path = join(dirname(target), `.${basename(target)}.tmp-${process.pid}-${randomBytes(3).toString("hex")}`);
    await mkdir(path, { recursive: true });
    return new StagedDir(target, path);
  }

  async commit(): Promise<void> {
    await assertWritableTarget(this.target);
    await rm(this.target, { recursive: true, force: true }); // only an empty dir can be here
    await rename(this.path, this.target);
  }

  abort(): Promise<void> {
    return rm(this.path, { recursive: true, force: true });
  }
}

export async function assertWritableTarget(target: string): Promise<void> {
  try {
    const s = await stat(target);
    if (!s.isDirectory() || (await readdir(target)).length > 0) {
      throw new MegahubError("OUTPUT", "output already exists and is not empty; choose a new --out", { file: target });
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}
