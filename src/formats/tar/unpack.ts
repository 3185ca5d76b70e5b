import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extract as tarExtract } from "tar-stream";
import { formatError, isMegahubError, MegahubError } from "../../errors.js";
import { repoPathProblem } from "../../hub/repo-path.js";
import { assertWritableTarget, StagedDir } from "../../io/atomic.js";
import { FileSource } from "../../io/byte-source.js";
import { indexTar } from "./index.js";
import { PACK_MANIFEST, type PackManifest } from "./pack.js";

/** A member's byte stream, as tar-stream yields it. */
type Entry = AsyncIterable<unknown>;

/** A manifest larger than this is not one megahub wrote (a million files is ~150 MB of JSON; be generous). */
const MAX_MANIFEST_BYTES = 256 * 1024 * 1024;

/** What {@link unpackTar} extracted and verified. */
export interface UnpackResult {
  out: string;
  files: number;
  bytes: number;
}

/**
 * Unpacks a tar made by {@link packDir} into a new folder, streaming. Every member name is checked before use
 * (no absolute paths, `..`, backslashes or `.git`), links and devices are refused, and every file's sha256 and
 * size must match the tar's own manifest — so an altered or truncated archive is reported, naming the file.
 * Work happens in a staged sibling folder that becomes `outDir` only when all checks pass.
 */
export async function unpackTar(
  tarFile: string,
  outDir: string,
  onProgress?: (done: number, total: number) => void,
): Promise<UnpackResult> {
  const source = resolve(tarFile);
  const total = (await stat(source).catch(() => undefined))?.size;
  if (total === undefined) throw new MegahubError("USAGE", "no such file", { file: source });
  const staged = await StagedDir.create(resolve(outDir));
  const seen = new Map<string, { bytes: number; sha256: string }>();
  let manifest: PackManifest | undefined;
  let consumed = 0;
  try {
    const extract = tarExtract();
    const tap = new Transform({
      transform(chunk: Buffer, _enc, next) {
        consumed += chunk.length;
        onProgress?.(consumed, total);
        next(null, chunk);
      },
    });
    const fed = pipeline(createReadStream(source, { highWaterMark: 1 << 20 }), tap, extract);
    fed.catch(() => undefined); // a read error also ends the loop below, which reports it
    for await (const entry of extract) {
      const name = (entry.header.name ?? "").replace(/^\.\//, "").replace(/\/+$/, "");
      const type = entry.header.type ?? "file";
      const problem = name === "" ? undefined : repoPathProblem(name);
      if (problem !== undefined) {
        throw formatError(`refusing member ${JSON.stringify(name.slice(0, 200))}: ${problem}`, { file: source });
      }
      if (type === "directory") {
        if (name !== "") await mkdir(join(staged.path, name), { recursive: true });
        for await (const _ of entry) {
          // drain: folder members have no body, but the stream must end before the next member
        }
      } else if (type !== "file" && type !== "contiguous-file") {
        throw formatError(`refusing ${type} member ${JSON.stringify(name)}: only files and folders are unpacked`, {
          file: source,
        });
      } else if (name === PACK_MANIFEST) {
        manifest = parseManifest(await readAll(entry, MAX_MANIFEST_BYTES, source), source);
      } else {
        if (seen.has(name)) throw formatError(`member ${JSON.stringify(name)} appears twice`, { file: source });
        seen.set(name, await writeEntry(entry, join(staged.path, name)));
      }
    }
    await fed;
    if (manifest === undefined) {
      throw formatError(`no ${PACK_MANIFEST} member: not a megahub pack, nothing to verify against`, { file: source });
    }
    verify(manifest, seen, source);
    await staged.commit();
  } catch (e) {
    await staged.abort();
    if (isMegahubError(e)) throw e;
    throw formatError(`cannot read the tar: ${(e as Error).message}`, { file: source });
  }
  let bytes = 0;
  for (const f of seen.values()) bytes += f.bytes;
  return { out: staged.target, files: seen.size, bytes };
}

/** What {@link unpackTar} would write. */
export interface UnpackPlan extends UnpackResult {
  /** The files it would write, in tar order, with their sizes. */
  members: Array<{ path: string; bytes: number }>;
}

/**
 * Plans {@link unpackTar} (`unpack --dry-run`) from the tar's headers and manifest alone: the same name, type and
 * manifest checks, sizes against the manifest, and the same refusal of an existing --out. File contents are not
 * read, so their sha256 is checked by the real run only.
 */
export async function planUnpack(tarFile: string, outDir: string): Promise<UnpackPlan> {
  const source = resolve(tarFile);
  if ((await stat(source).catch(() => undefined)) === undefined) throw new MegahubError("USAGE", "no such file", { file: source });
  const out = resolve(outDir);
  await assertWritableTarget(out);
  const tar = await FileSource.open(source);
  try {
    const members: Array<{ path: string; bytes: number }> = [];
    const sizes = new Map<string, number>();
    let manifest: PackManifest | undefined;
    for (const m of await indexTar(tar)) {
      const name = m.name.replace(/\/+$/, "");
      const problem = name === "" ? undefined : repoPathProblem(name);
      if (problem !== undefined) throw formatError(`refusing member ${JSON.stringify(name.slice(0, 200))}: ${problem}`, { file: source });
      if (m.type === "other") throw formatError(`refusing member ${JSON.stringify(name)}: only files and folders are unpacked`, { file: source });
      if (m.type === "directory") continue;
      if (name === PACK_MANIFEST) {
        if (m.size > MAX_MANIFEST_BYTES) throw formatError(`${PACK_MANIFEST} is larger than ${MAX_MANIFEST_BYTES} bytes`, { file: source });
        const bytes = await m.source.read(0, m.size);
        manifest = parseManifest(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), source);
      } else {
        if (sizes.has(name)) throw formatError(`member ${JSON.stringify(name)} appears twice`, { file: source });
        sizes.set(name, m.size);
        members.push({ path: name, bytes: m.size });
      }
    }
    if (manifest === undefined) {
      throw formatError(`no ${PACK_MANIFEST} member: not a megahub pack, nothing to verify against`, { file: source });
    }
    for (const [name, want] of Object.entries(manifest.files)) {
      const got = sizes.get(name);
      if (got === undefined) throw formatError(`${name} is listed in the manifest but missing from the tar`, { file: source });
      if (got !== want.bytes) throw formatError(`${name} has ${got} bytes, the manifest says ${want.bytes}: the tar was altered or damaged`, { file: source });
    }
    for (const x of members) {
      if (!Object.hasOwn(manifest.files, x.path)) throw formatError(`${x.path} is in the tar but not in its manifest`, { file: source });
    }
    return { out, files: members.length, bytes: members.reduce((n, x) => n + x.bytes, 0), members };
  } finally {
    await tar.close();
  }
}

async function writeEntry(entry: Entry, dest: string): Promise<{ bytes: number; sha256: string }> {
  await mkdir(dirname(dest), { recursive: true });
  // "wx": never follow or overwrite something already there (a folder member cannot plant a symlink: refused).
  const fh = await open(dest, "wx");
  const hash = createHash("sha256");
  let bytes = 0;
  try {
    for await (const c of entry) {
      const chunk = c as Buffer;
      hash.update(chunk);
      bytes += chunk.length;
      await fh.write(chunk);
    }
  } finally {
    await fh.close();
  }
  return { bytes, sha256: hash.digest("hex") };
}

function verify(manifest: PackManifest, seen: ReadonlyMap<string, { bytes: number; sha256: string }>, file: string): void {
  for (const [name, want] of Object.entries(manifest.files)) {
    const got = seen.get(name);
    if (got === undefined) throw formatError(`${name} is listed in the manifest but missing from the tar`, { file });
    if (got.bytes !== want.bytes || got.sha256 !== want.sha256) {
      throw formatError(
        `${name} does not match the manifest (sha256 ${got.sha256.slice(0, 16)}…, ${got.bytes} bytes; ` +
          `expected ${want.sha256.slice(0, 16)}…, ${want.bytes} bytes): the tar was altered or damaged`,
        { file },
      );
    }
  }
  for (const name of seen.keys()) {
    if (!Object.hasOwn(manifest.files, name)) throw formatError(`${name} is in the tar but not in its manifest`, { file });
  }
}

async function readAll(entry: Entry, limit: number, file: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of entry) {
    const chunk = c as Buffer;
    n += chunk.length;
    if (n > limit) throw formatError(`${PACK_MANIFEST} is larger than ${limit} bytes`, { file });
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function parseManifest(bytes: Buffer, file: string): PackManifest {
  let m: unknown;
  try {
    m = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw formatError(`${PACK_MANIFEST} is not valid JSON`, { file });
  }
  const files = (m as { files?: unknown }).files;
  if ((m as { format?: unknown }).format !== "megahub-pack/1" || typeof files !== "object" || files === null) {
    throw formatError(`${PACK_MANIFEST} is not a megahub-pack/1 manifest`, { file });
  }
  for (const [name, f] of Object.entries(files as Record<string, { bytes?: unknown; sha256?: unknown }>)) {
    if (typeof f.bytes !== "number" || typeof f.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(f.sha256)) {
      throw formatError(`${PACK_MANIFEST} has a bad entry for ${JSON.stringify(name)}`, { file });
    }
  }
  return m as PackManifest;
}
