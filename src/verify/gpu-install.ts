import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { chmod, mkdtemp, open, readdir, rename, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { createGunzip } from "node:zlib";
import { extract as tarExtract } from "tar-stream";
import { MegahubError } from "../errors.js";
import { writeFileAtomic } from "../io/atomic.js";
import { ELF_MACHINE, readElfInfo, readOrtVersionString } from "./elf.js";
import { CUDA_PROVIDER_PACKAGE, locateOrt, ORT_VERSION, PROVIDER_FILES, type OrtInstall } from "./ort-locate.js";

/**
 * `megahub gpu install`: puts ORT's CUDA provider files beside ORT's core, from the pinned npm package (fetched with
 * npm itself, so the user's registry, proxy and auth settings apply, and checked against the pinned integrity), or
 * from a folder or .tgz that holds them, for machines without a network. Files are staged under temporary names in
 * the core's folder, checked (ELF, machine, the CUDA provider's ORT version equals the core's) and only then renamed
 * into place, so a failed install leaves what was there.
 */
export interface GpuInstallOptions {
  /** A folder or .tgz holding the two provider files (any depth); default: the npm package. */
  from?: string;
  env?: NodeJS.ProcessEnv;
  onProgress?: (line: string) => void;
}

export interface InstalledFile {
  name: string;
  path: string;
  bytes: number;
  sha256: string;
}

export interface GpuInstallResult {
  source: string;
  ortVersion: string;
  binDir: string;
  files: InstalledFile[];
}

/** Written beside the providers: what was installed from where, for `megahub doctor`. */
export const INSTALL_RECORD = "megahub-gpu.json";

const WANTED = [PROVIDER_FILES.shared, PROVIDER_FILES.cuda] as const;

/** What `gpu install --dry-run` says: where the files would come from and go, after the checks that need no download. */
export interface GpuInstallPlan {
  source: string;
  ortVersion: string;
  binDir: string;
  /** The files that would be written, and whether each replaces one already there. */
  files: { name: string; path: string; replaces: boolean }[];
}

/** The checks of an install that read nothing large (platform, the core's version, --from exists), and its targets. */
export async function planCudaProvider(options: Omit<GpuInstallOptions, "onProgress"> = {}): Promise<GpuInstallPlan> {
  const { install, coreVersion } = await checkTarget(options);
  if (options.from !== undefined && !(await stat(options.from).catch(() => undefined))) throw new MegahubError("USAGE", `--from ${options.from}: no such file or folder`);
  const source = options.from ?? `npm:${CUDA_PROVIDER_PACKAGE.name}@${CUDA_PROVIDER_PACKAGE.version}`;
  const files = [];
  for (const name of WANTED) {
    const path = join(install.binDir, name);
    files.push({ name, path, replaces: (await stat(path).catch(() => undefined)) !== undefined });
  }
  return { source, ortVersion: coreVersion, binDir: install.binDir, files };
}

async function checkTarget(options: Pick<GpuInstallOptions, "from" | "env">): Promise<{ install: OrtInstall; coreVersion: string }> {
  const env = options.env ?? process.env;
  if (process.platform !== "linux" || process.arch !== "x64") {
    throw new MegahubError("UNSUPPORTED", `ORT's CUDA provider package is for linux x64; this is ${process.platform} ${process.arch}`);
  }
  const install = locateOrt(env);
  const coreVersion = (await readOrtVersionString(install.core).catch(() => undefined)) ?? install.version;
  if (options.from === undefined && coreVersion !== CUDA_PROVIDER_PACKAGE.ortVersion) {
    throw new MegahubError(
      "DEVICE",
      `${CUDA_PROVIDER_PACKAGE.name}@${CUDA_PROVIDER_PACKAGE.version} carries ORT ${CUDA_PROVIDER_PACKAGE.ortVersion}'s provider but the ` +
        `core at ${install.core} is ${coreVersion}: run npm install onnxruntime-node@${ORT_VERSION} (megahub is pinned to it), or pass ` +
        `--from with a provider of ${coreVersion}`,
    );
  }
  return { install, coreVersion };
}

export async function installCudaProvider(options: GpuInstallOptions = {}): Promise<GpuInstallResult> {
  const env = options.env ?? process.env;
  const say = options.onProgress ?? (() => undefined);
  const { install, coreVersion } = await checkTarget(options);
  const work = await mkdtemp(join(tmpdir(), "megahub-gpu-"));
  const staged = new Map<string, string>();
  try {
    let source: string;
    if (options.from === undefined) {
      source = `npm:${CUDA_PROVIDER_PACKAGE.name}@${CUDA_PROVIDER_PACKAGE.version}`;
      say(`fetching ${source} with npm pack (about 180 MB)`);
      const tgz = await npmPack(work, env);
      await extractFromTgz(tgz, install, staged);
    } else {
      source = options.from;
      const st = await stat(options.from).catch(() => undefined);
      if (!st) throw new MegahubError("USAGE", `--from ${options.from}: no such file or folder`);
      if (st.isDirectory()) await copyFromDir(options.from, install, staged);
      else await extractFromTgz(options.from, install, staged);
    }
    const missing = WANTED.filter((n) => !staged.has(n));
    if (missing.length > 0) {
      throw new MegahubError("USAGE", `${source}: holds no ${missing.join(" and ")} (the two files ORT's CUDA provider is made of)`, { file: source });
    }
    await checkStaged(staged, coreVersion, source);
    const files: InstalledFile[] = [];
    for (const name of WANTED) {
      const tmp = staged.get(name) as string;
      const path = join(install.binDir, name);
      const { bytes, digest: sha256 } = await hashFile(tmp);
      await chmod(tmp, 0o755);
      await rename(tmp, path);
      staged.delete(name);
      files.push({ name, path, bytes, sha256 });
      say(`installed ${path} (${(bytes / 1e6).toFixed(1)} MB)`);
    }
    const record = { source, ortVersion: coreVersion, installedAt: new Date().toISOString(), files: files.map(({ path: _p, ...f }) => f) };
    await writeFileAtomic(join(install.binDir, INSTALL_RECORD), `${JSON.stringify(record, null, 2)}\n`);
    return { source, ortVersion: coreVersion, binDir: install.binDir, files };
  } finally {
    for (const tmp of staged.values()) await rm(tmp, { force: true });
    await rm(work, { recursive: true, force: true });
  }
}

/** A temporary name in the core's folder, so the final rename stays on one filesystem. */
function stageName(install: OrtInstall, name: string): string {
  return join(install.binDir, `.${name}.tmp-${process.pid}-${randomBytes(3).toString("hex")}`);
}

async function npmPack(dir: string, env: NodeJS.ProcessEnv): Promise<string> {
  const spec = `${CUDA_PROVIDER_PACKAGE.name}@${CUDA_PROVIDER_PACKAGE.version}`;
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  let out: string;
  try {
    ({ stdout: out } = await promisify(execFile)(npm, ["pack", spec, "--json", "--pack-destination", dir], {
      env,
      cwd: dir,
      maxBuffer: 1 << 24,
    }));
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    const why = (err.stderr ?? err.message).split("\n").find((l) => /ERR|error/i.test(l)) ?? err.message.split("\n")[0];
    throw new MegahubError(
      "DEVICE",
      `npm pack ${spec} failed (${why?.trim()}); on a machine without the npm registry, fetch it elsewhere (npm pack ${spec}) ` +
        "and run megahub gpu install --from <that .tgz>",
    );
  }
  const [info] = JSON.parse(out) as { filename?: string; integrity?: string }[];
  if (!info?.filename) throw new MegahubError("DEVICE", `npm pack ${spec} printed no file name`);
  const tgz = join(dir, basename(info.filename));
  const integrity = `sha512-${(await hashFile(tgz, "sha512", "base64")).digest}`;
  if (integrity !== CUDA_PROVIDER_PACKAGE.integrity) {
    throw new MegahubError("DEVICE", `${spec}: tarball integrity ${integrity} is not the pinned ${CUDA_PROVIDER_PACKAGE.integrity}`, { file: tgz });
  }
  return tgz;
}

async function extractFromTgz(tgz: string, install: OrtInstall, staged: Map<string, string>): Promise<void> {
  const fh = await open(tgz, "r");
  const magic = Buffer.alloc(2);
  await fh.read(magic, 0, 2, 0);
  await fh.close();
  if (magic[0] !== 0x1f || magic[1] !== 0x8b) {
    throw new MegahubError("USAGE", "--from: neither a folder nor a gzip'd tar (.tgz): no gzip magic", { file: tgz });
  }
  const extract = tarExtract();
  const fed = pipeline(createReadStream(tgz, { highWaterMark: 1 << 20 }), createGunzip(), extract);
  fed.catch(() => undefined); // a read or gunzip error also ends the loop below, which reports it
  try {
    for await (const entry of extract) {
      const name = basename(entry.header.name ?? "");
      const type = entry.header.type ?? "file";
      if (!(WANTED as readonly string[]).includes(name) || (type !== "file" && type !== "contiguous-file")) {
        entry.resume();
        continue;
      }
      if (staged.has(name)) {
        throw new MegahubError("USAGE", `holds ${name} twice (${entry.header.name}); pass --from the folder of the one to use`, { file: tgz });
      }
      const tmp = stageName(install, name);
      staged.set(name, tmp);
      await pipeline(entry, createWriteStream(tmp, { flags: "wx" }));
    }
    await fed;
  } catch (e) {
    if (e instanceof MegahubError) throw e;
    throw new MegahubError("FORMAT", `cannot read this .tgz: ${(e as Error).message}`, { file: tgz });
  }
}

async function copyFromDir(dir: string, install: OrtInstall, staged: Map<string, string>): Promise<void> {
  const found = new Map<string, string[]>();
  const walk = async (d: string, depth: number): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if ((e.isFile() || e.isSymbolicLink()) && (WANTED as readonly string[]).includes(e.name)) found.set(e.name, [...(found.get(e.name) ?? []), p]);
      else if (e.isDirectory() && depth < 6) await walk(p, depth + 1);
    }
  };
  await walk(dir, 0);
  for (const [name, paths] of found) {
    if (paths.length > 1) throw new MegahubError("USAGE", `--from ${dir}: ${name} is there ${paths.length} times (${paths.join(", ")}); pass the folder of one`);
    const tmp = stageName(install, name);
    staged.set(name, tmp);
    await pipeline(createReadStream(paths[0] as string), createWriteStream(tmp, { flags: "wx" }));
  }
}

/** Refuses files that ORT would not load, or would load and then crash on (another ORT version's provider). */
async function checkStaged(staged: ReadonlyMap<string, string>, coreVersion: string, source: string): Promise<void> {
  const machine = ELF_MACHINE[process.arch];
  for (const name of WANTED) {
    const tmp = staged.get(name) as string;
    let info;
    try {
      info = await readElfInfo(tmp);
    } catch (e) {
      throw new MegahubError("FORMAT", `${name} from ${source} is not a shared library: ${(e as Error).message.replace(`${tmp}: `, "")}`);
    }
    if (info.type !== 3 || info.machine !== machine) {
      throw new MegahubError("FORMAT", `${name} from ${source} is ELF type ${info.type} for machine ${info.machine}, expected a shared object for ${process.arch} (${machine})`);
    }
  }
  const version = await readOrtVersionString(staged.get(PROVIDER_FILES.cuda) as string);
  if (version !== coreVersion) {
    throw new MegahubError(
      "DEVICE",
      `${PROVIDER_FILES.cuda} from ${source} is ORT ${version ?? "of no recognisable version"} but the core is ${coreVersion}: ` +
        "ORT crashes rather than fails on a mismatched provider, so it was not installed",
    );
  }
}

async function hashFile(path: string, algorithm = "sha256", encoding: "hex" | "base64" = "hex"): Promise<{ bytes: number; digest: string }> {
  const h = createHash(algorithm);
  let bytes = 0;
  await pipeline(
    createReadStream(path),
    new Transform({
      transform(chunk: Buffer, _enc, cb) {
        h.update(chunk);
        bytes += chunk.length;
        cb();
      },
    }),
  );
  return { bytes, digest: h.digest(encoding) };
}
