import { createRequire } from "node:module";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { openbaAddedTokens } from "../models/openba/tokenizer.js";
import { MegahubError } from "../errors.js";
import { parseSentencePieceModel, PieceType } from "../formats/sentencepiece/model.js";
import { OPENBA_SPECIAL } from "../models/openba/spec.js";

/**
 * OpenBA's tokenizer: sentencepiece for text, plus the special tokens HF's OpenBATokenizer adds on top
 * (openba-format §8): `<extra_id_k>` = sp_size + 99 − k, `<R>` `<S>` `<X>` = sp_size + 100 … 102, and `</s>` appended.
 *
 * Why @agnai/sentencepiece-js: it is Google's sentencepiece C++ compiled to WebAssembly (no native build, installs
 * from npm offline), so unigram scoring, NFKC normalisation and byte fallback are the reference code's, not a
 * re-implementation. On a byte-fallback unigram test model it gave the same ids as Python sentencepiece 0.2.2 for
 * accents, CJK, emoji, full-width forms, tabs and newlines. The package has no types and does not report a failed
 * model load, so it is wrapped here and the model file is checked by reading its protobuf header ourselves.
 */
export interface Tokenizer {
  /** Number of sentencepiece pieces; the first added id. */
  readonly spSize: number;
  /** Every special token string → id (pad, eos, unk, sentinels, R/S/X, and added_tokens.json entries). */
  readonly specials: ReadonlyMap<string, number>;
  readonly eosId: number;
  /** Text → ids. Special-token strings map to their ids, never to sentencepiece pieces. */
  encode(text: string, options?: { addEos?: boolean }): number[];
  /** Ids → text; special tokens are dropped unless `keepSpecial`. */
  decode(ids: readonly number[], options?: { keepSpecial?: boolean }): string;
}

interface SpProcessor {
  load(path: string): Promise<void>;
  encodeIds(text: string): number[];
  decodeIds(ids: number[]): string;
}

const SPIECE_FILE = "spiece.model";

/**
 * Loads `spiece.model` (and `added_tokens.json`, when present) from a model dir, or a .model file given directly.
 */
export async function loadTokenizer(dirOrModel: string): Promise<Tokenizer> {
  const isModel = dirOrModel.endsWith(".model");
  const modelPath = isModel ? dirOrModel : join(dirOrModel, SPIECE_FILE);
  let bytes: Uint8Array;
  try {
    bytes = await readFile(modelPath);
  } catch (e) {
    throw new MegahubError("LAYOUT", `no sentencepiece model (${(e as NodeJS.ErrnoException).code ?? String(e)})`, {
      file: modelPath,
    });
  }
  const model = parseSentencePieceModel(bytes, modelPath);
  const spSize = model.pieces.length;
  const specials = new Map<string, number>([
    ["<pad>", OPENBA_SPECIAL.pad],
    ["</s>", OPENBA_SPECIAL.eos],
    ["<unk>", OPENBA_SPECIAL.unk],
  ]);
  model.pieces.forEach((p, i) => p.type === PieceType.CONTROL && specials.set(p.piece, i));
  for (const [token, id] of Object.entries(openbaAddedTokens(spSize))) specials.set(token, id);
  if (!isModel) {
    for (const [token, id] of Object.entries(await readAddedTokens(join(dirOrModel, "added_tokens.json")))) {
      specials.set(token, id);
    }
  }
  const sp = await loadProcessor(modelPath);
  return makeTokenizer(sp, spSize, specials);
}

async function readAddedTokens(path: string): Promise<Record<string, number>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch {
    return {};
  }
  const v: unknown = JSON.parse(text);
  const out: Record<string, number> = {};
  if (typeof v === "object" && v !== null) {
    for (const [k, id] of Object.entries(v)) if (typeof id === "number" && Number.isSafeInteger(id)) out[k] = id;
  }
  return out;
}

async function loadProcessor(modelPath: string): Promise<SpProcessor> {
  // The package is CommonJS without types; createRequire keeps it out of the ESM loader and out of `--help`.
  const require = createRequire(import.meta.url);
  const mod = require("@agnai/sentencepiece-js") as { SentencePieceProcessor: new () => SpProcessor };
  const sp = new mod.SentencePieceProcessor();
  await sp.load(modelPath);
  return sp;
}

function makeTokenizer(sp: SpProcessor, spSize: number, specials: ReadonlyMap<string, number>): Tokenizer {
  const eosId = specials.get("</s>") ?? 1;
  const byId = new Map([...specials].map(([t, id]) => [id, t]));
  // Longest first, so "<extra_id_10>" is not read as a prefix match of something shorter.
  const tokens = [...specials.keys()].sort((a, b) => b.length - a.length);
  return {
    spSize,
    specials,
    eosId,
    encode(text, options = {}) {
      const ids: number[] = [];
      for (const chunk of splitOnSpecials(text, tokens)) {
        if (chunk.special) {
          ids.push(specials.get(chunk.text) as number);
        } else if (chunk.text.length > 0) {
          ids.push(...sp.encodeIds(chunk.text));
        }
      }
      if (options.addEos ?? true) ids.push(eosId);
      return ids;
    },
    decode(ids, options = {}) {
      let out = "";
      let run: number[] = [];
      const flush = () => {
        if (run.length > 0) out += sp.decodeIds(run);
        run = [];
      };
      for (const id of ids) {
        const special = byId.get(id);
        if (special !== undefined || id >= spSize || id < 0) {
          flush();
          if (options.keepSpecial === true) out += special ?? `<id_${id}>`;
        } else {
          run.push(id);
        }
      }
      flush();
      return out;
    },
  };
}

/**
 * Splits text on special-token strings. Whitespace next to a special token is stripped, as HF's slow tokenizer
 * does for special tokens by default (transformers ≤ 4.33 `tokenize`: "We strip left and right by default"), so
 * `<S> hi <extra_id_0>` is `<S>`, `hi`, `<extra_id_0>`, and the text chunk gets sentencepiece's own "▁" prefix.
 */
export function splitOnSpecials(text: string, tokens: readonly string[]): { text: string; special: boolean }[] {
  const parts: { text: string; special: boolean }[] = [];
  let start = 0;
  let i = 0;
  while (i < text.length) {
    const hit = text[i] === "<" ? tokens.find((t) => text.startsWith(t, i)) : undefined;
    if (hit === undefined) {
      i++;
      continue;
    }
    parts.push({ text: text.slice(start, i), special: false }, { text: hit, special: true });
    i += hit.length;
    start = i;
  }
  parts.push({ text: text.slice(start), special: false });
  return parts
    .map((p, k) => {
      if (p.special) return p;
      let t = p.text;
      if (parts[k - 1]?.special === true) t = t.trimStart();
      if (parts[k + 1]?.special === true) t = t.trimEnd();
      return { text: t, special: false };
    })
    .filter((p) => p.special || p.text.length > 0);
}
