import { readFile } from "node:fs/promises";
import { MegahubError } from "../../errors.js";
import { PieceType, type SentencePieceModel } from "../../formats/sentencepiece/model.js";
import { OPENBA_SPECIAL } from "../../models/openba/spec.js";
import { renderChatTemplate, type ChatMessage } from "../../tokenizers/chat-template.js";
import { splitOnSpecials } from "../../tokenizers/tokenizer.js";

/** How many pieces to keep: a count, or the smallest set that covers a share of the corpus tokens. */
export type KeepRule = { kind: "keep"; pieces: number } | { kind: "coverage"; share: number };

/** Pieces that stay whatever the counts say, by reason (old sentencepiece ids, ascending, may overlap). */
export interface ForcedPieces {
  /** Every non-NORMAL piece: unknown, control, user-defined, byte (so byte fallback keeps working) and unused. */
  byType: number[];
  /** `--keep-tokens` entries. */
  keepTokens: number[];
  /** Pieces the chat template's own text encodes to. */
  template: number[];
}

/** One point of the coverage curve. */
export interface CoveragePoint {
  /** Kept sentencepiece pieces. */
  pieces: number;
  /** Share of the corpus tokens whose id is among them. */
  coverage: number;
}

/** The chosen pieces and what they cover. */
export interface Selection {
  /** Old ids of the kept pieces, ascending: new id i is `kept[i]`. */
  kept: number[];
  /** Size of the union of the forced sets. */
  forced: number;
  /** Share of corpus tokens whose id is kept. */
  coverage: number;
  tokens: number;
  /** Pieces the corpus uses at all. */
  usedPieces: number;
  /** Coverage against kept size in selection order (forced first, then by count), downsampled for charts. */
  curve: CoveragePoint[];
}

/** Ids of every non-NORMAL piece (openba-format §6 step 2: `type != 1` is always kept). */
export function nonNormalPieces(model: SentencePieceModel): number[] {
  const out: number[] = [];
  model.pieces.forEach((p, id) => {
    if (p.type !== PieceType.NORMAL) out.push(id);
  });
  return out;
}

/** The strings OpenBA's tokenizer treats as special: its CONTROL/UNKNOWN pieces, the sentinels, `<R>` `<S>` `<X>`. */
export function specialStrings(model: SentencePieceModel): string[] {
  const s = new Set<string>(["<pad>", "</s>", "<unk>"]);
  for (const p of model.pieces) if (p.type === PieceType.CONTROL || p.type === PieceType.UNKNOWN) s.add(p.piece);
  for (let k = 0; k < OPENBA_SPECIAL.sentinels; k++) s.add(`<extra_id_${k}>`);
  for (const t of OPENBA_SPECIAL.modeTokens) s.add(t);
  return [...s];
}

/**
 * Reads `--keep-tokens`: one token per line, written as in spiece.vocab (`▁the` for " the"; text after a tab is
 * ignored, so lines of a .vocab file work). OpenBA's added tokens (`<extra_id_7>`, `<S>` …) are accepted and need
 * nothing: they are always kept. Anything else that is not a piece fails, naming the line.
 */
export async function readKeepTokens(path: string, model: SentencePieceModel): Promise<number[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new MegahubError("USAGE", `cannot read --keep-tokens (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { file: path });
  }
  const byPiece = new Map(model.pieces.map((p, id) => [p.piece, id] as const));
  const specials = new Set(specialStrings(model));
  const ids: number[] = [];
  for (const [i, raw] of text.split("\n").entries()) {
    const token = raw.replace(/\r$/, "").split("\t")[0] ?? "";
    if (token === "") continue;
    const id = byPiece.get(token);
    if (id !== undefined) ids.push(id);
    else if (!specials.has(token)) {
      const hint = byPiece.has(`▁${token}`) ? ` (did you mean "▁${token}", the piece with a leading space?)` : "";
      throw new MegahubError("USAGE", `--keep-tokens line ${i + 1}: "${token}" is not a token of this tokenizer${hint}`, { file: path });
    }
  }
  return [...new Set(ids)].sort((a, b) => a - b);
}

const PLACEHOLDER = (i: number) => `\u0001MEGAHUB${i}\u0001`;
const PLACEHOLDER_RE = /\u0001MEGAHUB\d+\u0001/;

/**
 * Pieces a chat template emits around the messages: the template is rendered for a few conversations with
 * placeholder contents, the text between placeholders is split on special tokens as the HF tokenizer does, and each
 * literal chunk is encoded. (OpenBA's own template emits only `<S>` and `<extra_id_0>`, which are added tokens.)
 */
export function chatTemplatePieces(template: string, model: SentencePieceModel, encode: (text: string) => number[]): number[] {
  const conversations: ChatMessage["role"][][] = [["user"], ["user", "assistant", "user"], ["system", "user", "assistant", "user"]];
  const specials = specialStrings(model).sort((a, b) => b.length - a.length);
  const ids = new Set<number>();
  let rendered = 0;
  let lastError = "";
  for (const roles of conversations) {
    let text: string;
    try {
      text = renderChatTemplate(template, roles.map((role, i) => ({ role, content: PLACEHOLDER(i) })));
    } catch (e) {
      lastError = (e as Error).message;
      continue; // templates may refuse a system turn or a conversation shape: the others still show their text
    }
    rendered++;
    for (const fragment of text.split(PLACEHOLDER_RE)) {
      for (const chunk of splitOnSpecials(fragment, specials)) {
        if (!chunk.special && chunk.text.trim() !== "") for (const id of encode(chunk.text)) ids.add(id);
      }
    }
  }
  if (rendered === 0) throw new MegahubError("USAGE", `the chat template renders no conversation: ${lastError}`);
  return [...ids].sort((a, b) => a - b);
}

/**
 * Chooses the kept pieces. Order of preference: every forced piece, then the rest by corpus count (ties: lower id,
 * i.e. the higher sentencepiece score, first). `keep` takes the first N of that order; `coverage` the shortest
 * prefix whose tokens reach the share. The result is sorted back into original id order.
 */
export function selectPieces(spSize: number, counts: Float64Array, forced: ForcedPieces, rule: KeepRule): Selection {
  const forcedSet = new Set<number>([...forced.byType, ...forced.keepTokens, ...forced.template]);
  for (const id of forcedSet) if (!Number.isInteger(id) || id < 0 || id >= spSize) throw new RangeError(`forced piece id ${id} outside 0..${spSize - 1}`);
  const tokens = counts.reduce((a, b) => a + b, 0);
  if (!(tokens > 0)) throw new MegahubError("USAGE", "the corpus counts no tokens: nothing to choose by");
  const rest: number[] = [];
  for (let id = 0; id < spSize; id++) if (!forcedSet.has(id)) rest.push(id);
  rest.sort((a, b) => (counts[b] as number) - (counts[a] as number) || a - b);
  const order = [...[...forcedSet].sort((a, b) => a - b), ...rest];
  const cumulative = new Float64Array(spSize);
  let sum = 0;
  order.forEach((id, i) => {
    sum += counts[id] as number;
    cumulative[i] = sum;
  });
  let n: number;
  if (rule.kind === "keep") {
    if (!Number.isInteger(rule.pieces) || rule.pieces < 1) throw new MegahubError("USAGE", `--keep must be a positive integer, got ${rule.pieces}`);
    if (rule.pieces > spSize) throw new MegahubError("USAGE", `--keep ${rule.pieces} is more than the tokenizer's ${spSize} pieces`);
    if (rule.pieces < forcedSet.size) {
      throw new MegahubError(
        "USAGE",
        `--keep ${rule.pieces} is fewer than the ${forcedSet.size} pieces that must stay (${forced.byType.length} non-NORMAL: byte/control/unknown/user-defined/unused; ${forced.keepTokens.length} from --keep-tokens; ${forced.template.length} from the chat template)`,
      );
    }
    n = rule.pieces;
  } else {
    if (!(rule.share > 0 && rule.share <= 1)) throw new MegahubError("USAGE", `--coverage must be in (0, 1], got ${rule.share}`);
    // Counts are whole numbers far below 2^53, so the sums are exact; compare against the target without division.
    const target = rule.share * tokens;
    n = Math.max(forcedSet.size, 1);
    while (n < spSize && (cumulative[n - 1] as number) < target * (1 - 1e-12)) n++;
  }
  const kept = order.slice(0, n).sort((a, b) => a - b);
  let usedPieces = 0;
  for (let id = 0; id < spSize; id++) if ((counts[id] as number) > 0) usedPieces++;
  return {
    kept,
    forced: forcedSet.size,
    coverage: (cumulative[n - 1] as number) / tokens,
    tokens,
    usedPieces,
    curve: coverageCurve(cumulative, tokens, n),
  };
}

/** About 400 evenly spaced points of the cumulative coverage, plus the chosen size exactly. */
function coverageCurve(cumulative: Float64Array, tokens: number, chosen: number): CoveragePoint[] {
  const size = cumulative.length;
  const step = Math.max(1, Math.ceil(size / 400));
  const sizes = new Set<number>([1, chosen, size]);
  for (let k = step; k < size; k += step) sizes.add(k);
  return [...sizes]
    .sort((a, b) => a - b)
    .map((k) => ({ pieces: k, coverage: (cumulative[k - 1] as number) / tokens }));
}
