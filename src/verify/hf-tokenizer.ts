import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { MegahubError } from "../errors.js";

/**
 * An HF fast tokenizer (tokenizer.json + tokenizer_config.json), what Llama / Mistral / Qwen dirs ship.
 *
 * Why @huggingface/tokenizers: it is Hugging Face's own JavaScript port of the `tokenizers` pipeline (normalizer,
 * pre-tokenizer, BPE / Unigram / WordPiece model, post-processor, decoder, added tokens) that transformers.js runs
 * on, pure JS with no dependencies (650 KB), so it installs offline from npm and needs no native build. The tests
 * hold its ids to Python `tokenizers` on the same files.
 */
export interface HfTokenizer {
  /** Special token strings from tokenizer_config.json (bos_token, eos_token, pad_token, unk_token), for templates. */
  readonly specialTokens: Readonly<Record<string, string>>;
  /** Text → ids; `addSpecialTokens` (default true) runs the post-processor, as transformers' `tokenizer(text)`. */
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  /** Ids → text, special tokens dropped unless `keepSpecial`. */
  decode(ids: readonly number[], options?: { keepSpecial?: boolean }): string;
}

export const HF_TOKENIZER_FILE = "tokenizer.json";

interface TokenizersModule {
  Tokenizer: new (
    tokenizer: object,
    config: object,
  ) => {
    encode(text: string, options?: { add_special_tokens?: boolean }): { ids: number[] };
    decode(ids: number[], options?: { skip_special_tokens?: boolean }): string;
  };
}

/** Loads tokenizer.json (required) and tokenizer_config.json (optional) from a model dir. */
export async function loadHfTokenizer(dir: string): Promise<HfTokenizer> {
  const path = join(dir, HF_TOKENIZER_FILE);
  const json = await readJsonObject(path, true);
  const config = (await readJsonObject(join(dir, "tokenizer_config.json"), false)) ?? {};
  // Imported on first use so `megahub --help` and the non-generate commands never load it.
  const mod = (await import("@huggingface/tokenizers")) as unknown as TokenizersModule;
  let tok: InstanceType<TokenizersModule["Tokenizer"]>;
  try {
    tok = new mod.Tokenizer(json as object, config);
  } catch (e) {
    throw new MegahubError("FORMAT", `not a tokenizer this version can load: ${(e as Error).message}`, { file: path });
  }
  const specialTokens: Record<string, string> = {};
  for (const key of ["bos_token", "eos_token", "pad_token", "unk_token"]) {
    const v = config[key];
    const s = typeof v === "string" ? v : typeof v === "object" && v !== null ? (v as { content?: unknown }).content : undefined;
    if (typeof s === "string") specialTokens[key] = s;
  }
  return {
    specialTokens,
    encode: (text, options = {}) => tok.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids,
    // The library refuses an empty list; nothing decodes to "".
    decode: (ids, options = {}) => (ids.length === 0 ? "" : tok.decode([...ids], { skip_special_tokens: options.keepSpecial !== true })),
  };
}

async function readJsonObject(path: string, required: true): Promise<Record<string, unknown>>;
async function readJsonObject(path: string, required: false): Promise<Record<string, unknown> | undefined>;
async function readJsonObject(path: string, required: boolean): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if (!required) return undefined;
    throw new MegahubError("LAYOUT", `no HF tokenizer (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { file: path });
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new MegahubError("FORMAT", `not JSON: ${(e as Error).message}`, { file: path });
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new MegahubError("FORMAT", "expected a JSON object", { file: path });
  return v as Record<string, unknown>;
}
