import { randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { MegahubError } from "../errors.js";

/**
 * Staging paths this process is writing: a signal handler removes them before exiting (a Ctrl-C must not leave
 * a half-written model of tens of GB behind). Names carry the pid, so a later run can tell a dead run's leftovers.
 */
const active = new Set<string>();

export function activeStagingPaths(): string[] {
  return [...active];
}

/** Where notices about removed leftovers go (the CLI's reporter); silent by default for library use. */
let notice: ((line: string) => void) | undefined;

export function onStagingNotice(fn: ((line: string) => void) | undefined): void {
  notice = fn;
}

const STAGING = /^\.(.+)\.tmp-(\d+)-[0-9a-f]{6}$/;

function stagingName(target: string): string {
  return join(dirname(target), `.${basename(target)}.tmp-${process.pid}-${randomBytes(3).toString("hex")}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by someone else
  }
}

/** Removes staging folders and files in `dir` left by megahub runs whose process is gone (SIGKILL, power loss). */
export async function removeStaleStaging(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of names) {
    const m = STAGING.exec(name);
    const pid = Number(m?.[2]);
    if (!m || pid === process.pid || alive(pid)) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  if (removed.length > 0) notice?.(`removed ${removed.length} staging leftover(s) of megahub runs that ended without cleaning up: ${removed.join(", ")}`);
  return removed;
}

/** Writes a file under a temporary name in the same directory and renames it into place. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = stagingName(path);
  active.add(tmp);
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  } finally {
    active.delete(tmp);
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
    await mkdirp(dirname(target));
    await removeStaleStaging(dirname(target));
    const path = stagingName(target);
    active.add(path);
    await mkdir(path);
    return new StagedDir(target, path);
  }

  async commit(): Promise<void> {
    await assertWritableTarget(this.target);
    await rm(this.target, { recursive: true, force: true }); // only an empty dir can be here
    await rename(this.path, this.target);
    active.delete(this.path);
  }

  async abort(): Promise<void> {
    await rm(this.path, { recursive: true, force: true });
    active.delete(this.path);
  }
}

/**
 * mkdir -p, one level at a time. Node's `mkdir(…, { recursive: true })` never returns under /proc (it retries the
 * ENOENT that the kernel answers there), so `--out /proc/x` would hang instead of failing.
 */
export async function mkdirp(dir: string): Promise<void> {
  const missing: string[] = [];
  let at = dir;
  for (;;) {
    const s = await stat(at).catch((e: NodeJS.ErrnoException) => (e.code === "ENOENT" ? undefined : Promise.reject(e)));
    if (s !== undefined) {
      if (!s.isDirectory()) throw new MegahubError("OUTPUT", "is a file, not a folder", { file: at });
      break;
    }
    missing.push(at);
    const up = dirname(at);
    if (up === at) break;
    at = up;
  }
  for (const d of missing.reverse()) {
    await mkdir(d).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "EEXIST") throw e;
    });
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
