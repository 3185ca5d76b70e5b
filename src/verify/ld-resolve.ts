import { existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { ELF_MACHINE, readElfInfo, type ElfInfo } from "./elf.js";

/**
 * Where glibc's dynamic loader would find a shared library, worked out without loading anything — `ldd` without
 * running the loader, so it is safe on a library that would crash or hang. Order (ld.so(8)): DT_RPATH of the
 * requester (only when it has no DT_RUNPATH), LD_LIBRARY_PATH, DT_RUNPATH, /etc/ld.so.cache, the default dirs. A
 * candidate of the wrong machine is skipped, as the loader does.
 */
export type FoundVia = "RPATH" | "LD_LIBRARY_PATH" | "RUNPATH" | "ld.so.cache" | "default dirs";

export interface LoaderEnv {
  ldLibraryPath: string[];
  /** soname → path, for this machine's architecture. */
  cache: ReadonlyMap<string, string>;
  defaultDirs: string[];
  machine: number;
}

export interface LddEntry {
  name: string;
  /** The library that asked for it first (its file name). */
  neededBy: string;
  path?: string;
  via?: FoundVia;
  /** Set when the library was found but could not be read as ELF. */
  problem?: string;
}

const TRIPLET: Readonly<Record<string, string>> = { x64: "x86_64-linux-gnu", arm64: "aarch64-linux-gnu" };
/** ld.so.cache entry flags: the ELF-libc6 type byte and the per-architecture byte. */
const CACHE_ARCH_FLAGS: Readonly<Record<number, number>> = { 62: 0x0300, 183: 0x0a00 };

export async function loaderEnv(env: NodeJS.ProcessEnv = process.env): Promise<LoaderEnv> {
  const machine = ELF_MACHINE[process.arch] ?? 0;
  const triplet = TRIPLET[process.arch];
  return {
    // glibc ignores empty entries in practice ("" means the current dir, which no one means here).
    ldLibraryPath: (env.LD_LIBRARY_PATH ?? "").split(/[:;]/).filter(Boolean),
    cache: await readLdCache("/etc/ld.so.cache", machine).catch(() => new Map<string, string>()),
    defaultDirs: [...(triplet ? [`/lib/${triplet}`, `/usr/lib/${triplet}`] : []), "/lib64", "/usr/lib64", "/lib", "/usr/lib"],
    machine,
  };
}

/**
 * Reads the "glibc-ld.so.cache1.1" format (glibc ≥ 2.32 writes only this): a 48-byte header (nlibs at 20), then
 * 24-byte entries (flags, key, value, osversion, hwcap) whose string offsets count from the file's start.
 */
export async function readLdCache(file: string, machine: number): Promise<Map<string, string>> {
  const b = await readFile(file);
  const magic = "glibc-ld.so.cache1.1";
  const start = b.indexOf(magic);
  const out = new Map<string, string>();
  if (start < 0 || start + 48 > b.length) return out;
  const nlibs = b.readUInt32LE(start + 20);
  const want = CACHE_ARCH_FLAGS[machine];
  const str = (at: number) => b.toString("utf8", at, Math.max(at, b.indexOf(0, at)));
  for (let i = 0; i < nlibs; i++) {
    const e = start + 48 + i * 24;
    if (e + 24 > b.length) break;
    const flags = b.readInt32LE(e);
    if ((flags & 0xff) !== 0x03 || (want !== undefined && (flags & 0xff00) !== want)) continue;
    const name = str(b.readUInt32LE(e + 4));
    // The first entry wins, as in the loader (ldconfig sorts the preferred one first).
    if (!out.has(name)) out.set(name, str(b.readUInt32LE(e + 8)));
  }
  return out;
}

function expandOrigin(dir: string, requester: string): string {
  return dir.replace(/\$(ORIGIN\b|\{ORIGIN\})/g, dirname(requester));
}

async function usable(path: string, machine: number): Promise<boolean> {
  if (!existsSync(path)) return false;
  try {
    return (await readElfInfo(path)).machine === machine;
  } catch {
    return false;
  }
}

/** Where the loader would find `name` when `requester` (with its ELF info) asks for it. */
export async function resolveLibrary(
  name: string,
  requester: string,
  info: ElfInfo,
  le: LoaderEnv,
): Promise<{ path: string; via: FoundVia } | undefined> {
  if (name.includes("/")) return (await usable(name, le.machine)) ? { path: name, via: "default dirs" } : undefined;
  const tiers: [FoundVia, string[]][] = [
    ["RPATH", info.runpath.length === 0 ? info.rpath.map((d) => expandOrigin(d, requester)) : []],
    ["LD_LIBRARY_PATH", le.ldLibraryPath],
    ["RUNPATH", info.runpath.map((d) => expandOrigin(d, requester))],
  ];
  for (const [via, dirs] of tiers) {
    for (const d of dirs) {
      const p = join(d, name);
      if (await usable(p, le.machine)) return { path: p, via };
    }
  }
  const cached = le.cache.get(name);
  if (cached !== undefined && (await usable(cached, le.machine))) return { path: cached, via: "ld.so.cache" };
  for (const d of le.defaultDirs) {
    const p = join(d, name);
    if (await usable(p, le.machine)) return { path: p, via: "default dirs" };
  }
  return undefined;
}

/**
 * Every library `root` pulls in, breadth first and each once (as `ldd` lists them), with where it was found.
 * Libraries that cannot be found are listed with no path; their own needs are unknown.
 */
export async function lddTree(root: string, le: LoaderEnv): Promise<LddEntry[]> {
  const seen = new Map<string, LddEntry>();
  const queue: { path: string; info: ElfInfo }[] = [{ path: root, info: await readElfInfo(root) }];
  while (queue.length > 0) {
    const next = queue.shift();
    if (!next) break;
    for (const name of next.info.needed) {
      if (seen.has(name)) continue;
      const entry: LddEntry = { name, neededBy: next.path.split("/").pop() ?? next.path };
      seen.set(name, entry);
      const hit = await resolveLibrary(name, next.path, next.info, le);
      if (!hit) continue;
      entry.path = hit.path;
      entry.via = hit.via;
      try {
        queue.push({ path: hit.path, info: await readElfInfo(hit.path) });
      } catch (e) {
        entry.problem = e instanceof Error ? e.message : String(e);
      }
    }
  }
  return [...seen.values()];
}

/**
 * Folders where CUDA libraries usually sit *off* the loader's path — a CUDA toolkit, NVIDIA's Python wheels
 * (nvidia/<lib>/lib, and nvidia/cu13/lib for CUDA 13), conda — so a missing library can be reported as "found at
 * X, add X to LD_LIBRARY_PATH" instead of just "not found". Only existing folders are returned.
 */
export async function cudaSearchDirs(env: NodeJS.ProcessEnv = process.env, extra: readonly string[] = []): Promise<string[]> {
  const home = env.HOME ?? "";
  const sitePackages = [
    "/usr/lib/python3*/dist-packages",
    "/usr/local/lib/python3*/dist-packages",
    "/usr/local/lib/python3*/site-packages",
    `${home}/.local/lib/python3*/site-packages`,
    "/opt/*/lib/python3*/site-packages",
    "/opt/*/.venv/lib/python3*/site-packages",
    "/opt/conda/lib/python3*/site-packages",
    ...(env.VIRTUAL_ENV ? [`${env.VIRTUAL_ENV}/lib/python3*/site-packages`] : []),
    ...(env.CONDA_PREFIX ? [`${env.CONDA_PREFIX}/lib/python3*/site-packages`] : []),
  ];
  const patterns = [
    ...extra,
    ...(env.CUDA_HOME ? [`${env.CUDA_HOME}/lib64`, `${env.CUDA_HOME}/lib`] : []),
    ...(env.CONDA_PREFIX ? [`${env.CONDA_PREFIX}/lib`] : []),
    "/usr/local/cuda/lib64",
    "/usr/local/cuda/targets/*-linux/lib",
    "/usr/local/cuda-*/lib64",
    "/usr/local/cuda-*/lib",
    "/usr/local/cuda-*/targets/*-linux/lib",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    ...sitePackages.flatMap((s) => [`${s}/nvidia/*/lib`, `${s}/nvidia/cu*/lib`]),
  ];
  const out: string[] = [];
  for (const p of patterns) {
    for (const d of await expandGlob(p)) if (!out.includes(d)) out.push(d);
  }
  return out;
}

/** A `*`-per-segment glob over existing folders (Node 20 has no fs.glob). */
async function expandGlob(pattern: string): Promise<string[]> {
  const parts = pattern.split("/").filter(Boolean);
  let bases = ["/"];
  for (const part of parts) {
    const next: string[] = [];
    for (const b of bases) {
      if (!part.includes("*")) {
        if (existsSync(join(b, part))) next.push(join(b, part));
        continue;
      }
      const re = new RegExp(`^${part.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*")}$`);
      const names = await readdir(b, { withFileTypes: true }).catch(() => []);
      for (const n of names) if ((n.isDirectory() || n.isSymbolicLink()) && re.test(n.name)) next.push(join(b, n.name));
    }
    bases = next.sort();
  }
  return bases;
}

/** The first of `dirs` holding a usable `name`. */
export async function findOffPath(name: string, dirs: readonly string[], machine: number): Promise<string | undefined> {
  for (const d of dirs) {
    const p = join(d, name);
    if (await usable(p, machine)) return p;
  }
  return undefined;
}
