import { readFile } from "node:fs/promises";
import { parse } from "yaml";
import type { RepoExtras } from "./state.js";
import type { CommitRecord, RepoStore } from "./storage.js";

/** README.md or config.json larger than this is not parsed for the repo object (the Hub's card limit is 1 MB-ish). */
const MAX_META_FILE = 1 << 20;

/** The YAML block between the leading `---` lines of a model card, or undefined when there is none. */
export function frontMatterText(markdown: string): string | undefined {
  const m = /^\uFEFF?---[ \t]*\r?\n([\s\S]*?)\r?\n---[ \t]*(?:\r?\n|$)/.exec(markdown);
  return m?.[1];
}

/** The outcome of the Hub's `validate-yaml`: problems that refuse the commit, and warnings that do not. */
export function validateCard(markdown: string): { errors: Array<{ message: string }>; warnings: Array<{ message: string }> } {
  const text = frontMatterText(markdown);
  if (text === undefined || text.trim() === "") return { errors: [], warnings: [{ message: "empty or missing yaml metadata in repo card" }] };
  let value: unknown;
  try {
    value = parse(text, { maxAliasCount: 100 });
  } catch (e) {
    return { errors: [{ message: `Error parsing YAML metadata: ${(e as Error).message.split("\n")[0] ?? ""}` }], warnings: [] };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { errors: [{ message: "YAML metadata must be a mapping (key: value)" }], warnings: [] };
  }
  const errors: Array<{ message: string }> = [];
  const meta = value as Record<string, unknown>;
  for (const key of ["license", "library_name", "pipeline_tag"]) {
    if (meta[key] !== undefined && typeof meta[key] !== "string") errors.push({ message: `"${key}" must be a string` });
  }
  for (const key of ["tags", "datasets", "language"]) {
    const v = meta[key];
    if (v !== undefined && typeof v !== "string" && !(Array.isArray(v) && v.every((x) => typeof x === "string"))) {
      errors.push({ message: `"${key}" must be a string or a list of strings` });
    }
  }
  return { errors, warnings: [] };
}

/** cardData and config of a revision, read from its README.md and config.json when they are regular files. */
export async function repoExtras(store: RepoStore, commit: CommitRecord): Promise<RepoExtras> {
  const read = async (path: string): Promise<string | undefined> => {
    const e = commit.tree[path];
    if (e === undefined || e.lfs !== undefined || e.size > MAX_META_FILE) return undefined;
    return readFile(store.blobPath(e.oid), "utf8").catch(() => undefined);
  };
  const out: RepoExtras = {};
  const readme = await read("README.md");
  const yaml = readme !== undefined ? frontMatterText(readme) : undefined;
  if (yaml !== undefined) {
    try {
      const v: unknown = parse(yaml, { maxAliasCount: 100 });
      if (typeof v === "object" && v !== null && !Array.isArray(v)) out.cardData = v as Record<string, unknown>;
    } catch {
      // An unparsable card has no cardData on the Hub either.
    }
  }
  const config = await read("config.json");
  if (config !== undefined) {
    try {
      const c = JSON.parse(config) as Record<string, unknown>;
      const keep: Record<string, unknown> = {};
      for (const k of ["architectures", "model_type", "auto_map", "tokenizer_config"]) if (c[k] !== undefined) keep[k] = c[k];
      out.config = keep;
    } catch {
      // Same for a config.json that is not JSON.
    }
  }
  return out;
}
