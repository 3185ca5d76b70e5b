import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { pack as tarPack } from "tar-stream";
import { MegahubError } from "../../errors.js";
import { listLocalFiles, type LocalFile } from "../../hub/local-files.js";

/** The member, last in every megahub tar, that lists each file's size and sha256. */
export const PACK_MANIFEST = ".megahub-pack.json";

/** Contents of {@link PACK_MANIFEST}. */
export interface PackManifest {
  format: "megahub-pack/1";
  files: Record<string, { bytes: number; sha256: string }>;
}

/** What {@link packDir} wrote. */
export interface PackResult {
  out: string;
  files: number;
  /** Bytes of file content (not counting tar headers). */
  bytes: number;
}

/** What {@link packDir} would write: the checks of a real run, nothing written. */
export interface PackPlan extends PackResult {
  /** The folder's files in tar order, with their sizes (the manifest member follows them). */
  members: Array<{ path: string; bytes: number }>;
}

/** Plans {@link packDir} (`pack --dry-run`): refuses what the real run refuses, reads no file contents. */
export async function planPack(dir: string, outFile: string): Promise<PackPlan> {
  const { out, files, total } = await checkPack(dir, outFile);
  return { out, files: files.length, bytes: total, members: files.map((f) => ({ path: f.path, bytes: f.size })) };
}

async function checkPack(dir: string, outFile: string): Promise<{ out: string; files: LocalFile[]; total: number }> {
  const root = resolve(dir);
  const out = resolve(outFile);
  if (await stat(out).then(() => true, () => false)) {
    throw new MegahubError("OUTPUT", "output already exists; choose a new --out", { file: out });
  }
  const rel = relative(root, out);
  if (rel !== "" && !rel.startsWith("..") && !rel.startsWith(sep)) {
    throw new MegahubError("USAGE", "the tar cannot be written inside the folder being packed", { file: out });
  }
  const files = await listLocalFiles(root);
  if (files.some((f) => f.path === PACK_MANIFEST)) {
    throw new MegahubError("USAGE", `the folder already holds ${PACK_MANIFEST}; it is megahub's own member name`, {
      file: join(root, PACK_MANIFEST),
    });
  }
  return { out, files, total: files.reduce((n, f) => n + f.size, 0) };
}

/**
 * Packs a folder into an uncompressed tar: each file streamed once from disk (hashed on the way), then
 * {@link PACK_MANIFEST} with every sha256, so `unpack` can prove nothing was altered. Uncompressed on purpose:
 * `inspect`/`convert` read members in place as byte ranges (indexTar), and weights do not compress anyway.
 * The tar is written under a temporary name and renamed when complete.
 */
export async function packDir(
  dir: string,
  outFile: string,
  onProgress?: (done: number, total: number) => void,
): Promise<PackResult> {
  const { out, files, total } = await checkPack(dir, outFile);
  const tmp = join(dirname(out), `.${basename(out)}.tmp-${randomBytes(4).toString("hex")}`);
  const tar = tarPack();
  const written = pipeline(tar, createWriteStream(tmp));
  const manifest: PackManifest = { format: "megahub-pack/1", files: {} };
  let done = 0;
  try {
    for (const f of files) {
      const s = await stat(f.absPath);
      if (s.size !== f.size) throw new MegahubError("OUTPUT", "file changed size while packing", { file: f.absPath });
      const hash = createHash("sha256");
      const entry = tar.entry({ name: f.path, size: f.size, mode: 0o644, mtime: s.mtime, type: "file" });
      const tap = new Transform({
        transform(chunk: Buffer, _enc, next) {
          hash.update(chunk);
          done += chunk.length;
          onProgress?.(done, total);
          next(null, chunk);
        },
      });
      await pipeline(createReadStream(f.absPath, { highWaterMark: 1 << 20 }), tap, entry);
      manifest.files[f.path] = { bytes: f.size, sha256: hash.digest("hex") };
    }
    const body = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`);
    tar.entry({ name: PACK_MANIFEST, size: body.length, mode: 0o644, mtime: new Date(), type: "file" }, body);
    tar.finalize();
    await written;
    await rename(tmp, out);
  } catch (e) {
    tar.destroy();
    await written.catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  }
  onProgress?.(total, total);
  return { out, files: files.length, bytes: total };
}
