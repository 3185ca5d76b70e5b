import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { formatError } from "../errors.js";
import { indexTar, type TarMember } from "../formats/tar/index.js";
import { FileSource, type ByteSource } from "./byte-source.js";

/**
 * A read-only directory tree: a folder on disk or an uncompressed tar read in place. Checkpoint discovery works on
 * this, so `inspect` and `convert` read a Megatron checkpoint inside a .tar without extracting it.
 */
export interface Tree {
  readonly name: string;
  /** Names in a directory ("" is the root), or undefined when it is not a directory. */
  list(dir: string): Promise<string[] | undefined>;
  isFile(path: string): Promise<boolean>;
  open(path: string): Promise<ByteSource>;
  readText(path: string): Promise<string>;
  /** Closes files opened through this tree. */
  close(): Promise<void>;
  /** A path a user can read in messages. */
  display(path: string): string;
}

export function fsTree(root: string): Tree {
  const opened: FileSource[] = [];
  return {
    name: root,
    async list(dir) {
      try {
        return (await readdir(join(root, dir))).sort();
      } catch {
        return undefined;
      }
    },
    async isFile(path) {
      try {
        return (await stat(join(root, path))).isFile();
      } catch {
        return false;
      }
    },
    async open(path) {
      const f = await FileSource.open(join(root, path));
      opened.push(f);
      return f;
    },
    readText: (path) => FileSource.readText(join(root, path)),
    async close() {
      await Promise.all(opened.splice(0).map((f) => f.close()));
    },
    display: (path) => join(root, path),
  };
}

export async function tarTree(path: string): Promise<Tree> {
  const file = await FileSource.open(path);
  const members = await indexTar(file);
  // Archives made with `tar -C parent dir` put everything under one folder; strip it so the root is the checkpoint.
  const files = new Map<string, TarMember>();
  for (const m of members) if (m.type === "file") files.set(m.name.replace(/\/+$/, ""), m);
  const dirs = new Set<string>([""]);
  for (const name of files.keys()) {
    const parts = name.split("/");
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
  }
  return {
    name: path,
    async list(dir) {
      if (!dirs.has(dir)) return undefined;
      const out = new Set<string>();
      const prefix = dir === "" ? "" : `${dir}/`;
      for (const name of [...files.keys(), ...dirs]) {
        if (name !== dir && name.startsWith(prefix)) out.add(name.slice(prefix.length).split("/")[0] as string);
      }
      return [...out].sort();
    },
    isFile: (p) => Promise.resolve(files.has(p)),
    open(p) {
      const m = files.get(p);
      if (!m) return Promise.reject(new Error(`${path}: no member ${p}`));
      return Promise.resolve(m.source);
    },
    async readText(p) {
      const m = files.get(p);
      if (!m) throw new Error(`${path}: no member ${p}`);
      if (m.size > 1 << 20) throw formatError(`${m.size} bytes is more than expected of a text member`, { file: `${path}#${p}` });
      return new TextDecoder().decode(await m.source.read(0, m.size));
    },
    close: () => file.close(),
    display: (p) => `${path}#${p}`,
  };
}

/** Descends into a path inside a tree (a subfolder becomes the root). */
export function subTree(tree: Tree, dir: string): Tree {
  if (dir === "") return tree;
  const j = (p: string) => (p === "" ? dir : `${dir}/${p}`);
  return {
    name: tree.display(dir),
    list: (d) => tree.list(j(d)),
    isFile: (p) => tree.isFile(j(p)),
    open: (p) => tree.open(j(p)),
    readText: (p) => tree.readText(j(p)),
    close: () => tree.close(),
    display: (p) => tree.display(j(p)),
  };
}
