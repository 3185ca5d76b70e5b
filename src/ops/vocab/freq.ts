import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { MegahubError } from "../../errors.js";
import type { SentencePieceModel } from "../../formats/sentencepiece/model.js";
import type { VocabCounts } from "./count.js";

const FREQ_MAGIC = "# megahub vocab count v1";

/**
 * The frequency file: a few `#` header lines (tokenizer sha256 and size, corpus, totals), a column header, then
 * `id<TAB>count<TAB>piece` for every id in id order, zeros included — so a reader needs no tokenizer to use it, and
 * `readFrequencies` can prove the tokenizer it is given is the one that counted.
 */
export function formatFrequencies(c: VocabCounts, model: SentencePieceModel): string {
  const out = [
    FREQ_MAGIC,
    `# tokenizer\t${basename(c.tokenizer.path)}\tsha256=${c.tokenizer.sha256}\tpieces=${c.tokenizer.spSize}`,
    `# corpus\t${c.corpus.map((f) => basename(f)).join("\t")}${c.field ? `\tfield=${c.field}` : ""}`,
    `# tokens=${c.tokens}\tlines=${c.lines}\tbytes=${c.bytes}`,
    "id\tcount\tpiece",
  ];
  for (let id = 0; id < c.counts.length; id++) out.push(`${id}\t${c.counts[id] ?? 0}\t${escapePiece(model.pieces[id]?.piece ?? "")}`);
  return `${out.join("\n")}\n`;
}

/** Counts read back from a frequency file, checked against the tokenizer that will be pruned. */
export interface ReadFrequencies {
  counts: Float64Array;
  tokens: number;
  notes: string[];
}

/**
 * Reads a frequency file: megahub's own (`formatFrequencies`), or OpenBA's get_vocab_freq.py output (`id count` per
 * line, any order). Ids of the tokenizer's added tokens (≥ its piece count) are ignored: they are always kept. Fails
 * when the file was counted with another tokenizer (different pieces) or names ids the tokenizer does not have.
 */
export async function readFrequencies(path: string, sp: { spSize: number; sha256: string; model: SentencePieceModel }, maxId: number): Promise<ReadFrequencies> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new MegahubError("USAGE", `cannot read the frequency file (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { file: path });
  }
  const counts = new Float64Array(sp.spSize);
  const notes: string[] = [];
  let sha: string | undefined;
  let pieces: number | undefined;
  let ignored = 0;
  let mismatched = 0;
  let firstMismatch = "";
  let tokens = 0;
  let rows = 0;
  const lines = text.split("\n");
  for (const [i, raw] of lines.entries()) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (line.startsWith("# tokenizer\t")) {
      sha = /\tsha256=([0-9a-f]{64})/.exec(line)?.[1];
      const p = /\tpieces=(\d+)/.exec(line)?.[1];
      pieces = p === undefined ? undefined : Number(p);
    }
    if (line.startsWith("#") || line.trim() === "" || line === "id\tcount\tpiece") continue;
    const cols = line.includes("\t") ? line.split("\t") : line.trim().split(/\s+/);
    const id = Number(cols[0]);
    const count = Number(cols[1]);
    if (!Number.isSafeInteger(id) || id < 0 || !Number.isFinite(count) || count < 0) {
      throw new MegahubError("FORMAT", `line ${i + 1} is not "id count": ${JSON.stringify(line.slice(0, 80))}`, { file: path });
    }
    rows++;
    if (id >= sp.spSize) {
      if (id >= maxId) throw new MegahubError("USAGE", `line ${i + 1} counts id ${id}, but the model has only ${maxId} tokens: a frequency file for another vocabulary`, { file: path });
      ignored++;
      continue;
    }
    const piece = line.includes("\t") && cols.length > 2 ? unescapePiece(cols.slice(2).join("\t")) : undefined;
    if (piece !== undefined && piece !== sp.model.pieces[id]?.piece) {
      if (mismatched++ === 0) firstMismatch = `id ${id} is ${JSON.stringify(piece)} there, ${JSON.stringify(sp.model.pieces[id]?.piece)} here`;
    }
    counts[id] = (counts[id] as number) + count;
    tokens += count;
  }
  if (pieces !== undefined && pieces !== sp.spSize) {
    throw new MegahubError("USAGE", `the frequency file was counted with a ${pieces}-piece tokenizer, this one has ${sp.spSize}: count again with this tokenizer`, { file: path });
  }
  if (mismatched > 0) {
    throw new MegahubError("USAGE", `the frequency file was counted with another tokenizer: ${mismatched} pieces differ (${firstMismatch})`, { file: path });
  }
  if (rows === 0 || tokens === 0) throw new MegahubError("USAGE", "the frequency file counts no tokens", { file: path });
  if (sha !== undefined && sha !== sp.sha256) notes.push("the frequency file was counted with a different .model file that has the same pieces");
  if (sha === undefined) notes.push("the frequency file does not say which tokenizer counted it (not written by megahub vocab count): only its ids were checked");
  if (ignored > 0) notes.push(`${ignored} counted ids ≥ ${sp.spSize} (added tokens) ignored: added tokens are always kept`);
  return { counts, tokens, notes };
}

function escapePiece(p: string): string {
  return p.replace(/[\\\t\n\r]/g, (c) => ({ "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r" })[c] ?? c);
}

function unescapePiece(p: string): string {
  return p.replace(/\\([\\tnr])/g, (_, c: string) => ({ "\\": "\\", t: "\t", n: "\n", r: "\r" })[c] ?? c);
}
