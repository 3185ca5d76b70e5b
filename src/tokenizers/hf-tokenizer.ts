import { readFile, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { MegahubError } from "../errors.js";
import type { PlannedFile } from "../plan/plan.js";

/** The files an HF tokenizer may consist of; the ones present are copied as they are. */
const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "tokenizer.model",
  "vocab.json",
  "merges.txt",
  "added_tokens.json",
  "chat_template.jinja",
] as const;

export interface HfTokenizerFacts {
  /** Ids the tokenizer can produce: max id + 1 over the model's vocab and the added tokens. */
  readonly size: number;
  readonly bos?: number | undefined;
  readonly eos?: number | undefined;
  readonly pad?: number | undefined;
  readonly files: readonly string[];
}

async function json(path: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return undefined;
  }
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // fall through to the typed error
  }
  throw new MegahubError("FORMAT", "expected a JSON object", { file: path });
}

const tokenText = (v: unknown): string | undefined =>
  typeof v === "string" ? v : v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string" ? (v as { content: string }).content : undefined;

/**
 * Reads an HF tokenizer directory (or its tokenizer.json): its size — from tokenizer.json's model vocabulary and
 * added tokens — and the special ids tokenizer_config.json names, and plans copies of its files.
 */
export async function planHfTokenizer(path: string, embeddingRows: number): Promise<{ facts: HfTokenizerFacts; files: PlannedFile[] }> {
  const s = await stat(path).catch(() => {
    throw new MegahubError("USAGE", "--tokenizer: no such file or directory", { file: path });
  });
  const dir = s.isDirectory() ? path : dirname(path);
  const only = s.isDirectory() ? undefined : basename(path);
  const tj = await json(join(dir, only ?? "tokenizer.json"));
  if (!tj) throw new MegahubError("USAGE", "--tokenizer needs an HF tokenizer directory holding tokenizer.json", { file: path });
  const ids = new Map<string, number>();
  const model = tj.model as { vocab?: unknown } | undefined;
  if (model?.vocab && typeof model.vocab === "object") {
    if (Array.isArray(model.vocab)) model.vocab.forEach((e, i) => Array.isArray(e) && typeof e[0] === "string" && ids.set(e[0], i));
    else for (const [k, v] of Object.entries(model.vocab)) if (typeof v === "number") ids.set(k, v);
  }
  for (const t of Array.isArray(tj.added_tokens) ? tj.added_tokens : []) {
    const a = t as { id?: unknown; content?: unknown };
    if (typeof a.id === "number" && typeof a.content === "string") ids.set(a.content, a.id);
  }
  if (ids.size === 0) throw new MegahubError("FORMAT", "tokenizer.json has no model vocabulary", { file: join(dir, "tokenizer.json") });
  const size = Math.max(...ids.values()) + 1;
  if (size > embeddingRows) {
    throw new MegahubError("USAGE", `the tokenizer has ${size} ids but the embedding only ${embeddingRows} rows: not this model's tokenizer`, { file: path });
  }
  const cfg = only ? undefined : await json(join(dir, "tokenizer_config.json"));
  const special = (k: string) => {
    const t = tokenText(cfg?.[k]);
    return t === undefined ? undefined : ids.get(t);
  };
  const files: PlannedFile[] = [];
  for (const name of only ? [only] : TOKENIZER_FILES) {
    const st = await stat(join(dir, name)).catch(() => undefined);
    if (st?.isFile()) files.push({ kind: "copy", path: name === only ? "tokenizer.json" : name, from: join(dir, name), bytes: st.size });
  }
  return { facts: { size, bos: special("bos_token"), eos: special("eos_token"), pad: special("pad_token"), files: files.map((f) => f.path) }, files };
}
