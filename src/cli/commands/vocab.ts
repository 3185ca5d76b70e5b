import { formatFrequencies } from "../../ops/vocab/freq.js";
import { countCorpus, openSentencePiece, planCount } from "../../ops/vocab/count.js";
import { MegahubError } from "../../errors.js";
import { writeFileAtomic } from "../../io/atomic.js";
import { intOpt, stringOpt, type Command } from "../command.js";
import { formatBytes, table } from "../format.js";
import { SUMMARIES } from "./summaries.js";

const USAGE = "megahub vocab count <corpus…> --tokenizer <spiece.model> --out <freq.tsv> [--field text] [--threads N] [--dry-run] [--json]";

/** `megahub vocab count`: per-id token counts of a corpus, written as a frequency TSV for prune-vocab. */
export const vocabCommand: Command = {
  name: "vocab",
  summary: SUMMARIES.vocab,
  usage: USAGE,
  options: {
    tokenizer: { type: "string", short: "t" },
    out: { type: "string", short: "o" },
    field: { type: "string" },
    threads: { type: "string" },
    "dry-run": { type: "boolean" },
  },
  details: [
    "Plain text is encoded line by line, as spm_encode does (special-token strings in the text are plain text);",
    "JSON lines (--field, or `text` for .jsonl/.ndjson) one record's string at a time; .gz files are read as they stream.",
    "--threads N: sentencepiece instances in worker threads (default: 1 below 4 MiB, else up to 4, one per core).",
    "The TSV has every id (zeros too): `id<TAB>count<TAB>piece`, with the tokenizer's sha256 in its header.",
    "--dry-run opens the tokenizer, checks the corpus files and prints what would be counted; nothing is written.",
  ],
  async run(positionals, values, out) {
    const [sub, ...files] = positionals;
    if (sub !== "count") throw new MegahubError("USAGE", `vocab has one subcommand, "count"; usage: ${USAGE}`);
    const tokenizer = stringOpt(values, "tokenizer");
    const dest = stringOpt(values, "out");
    if (files.length === 0 || tokenizer === undefined || dest === undefined) {
      throw new MegahubError("USAGE", "vocab count needs <corpus…>, --tokenizer <spiece.model> and --out <freq.tsv>");
    }
    const sp = await openSentencePiece(tokenizer);
    const field = stringOpt(values, "field");
    const threads = intOpt(values, "threads");
    if (values["dry-run"] === true) {
      const p = await planCount(files, threads !== undefined ? { threads } : {});
      out.result({ ok: true, dryRun: true, out: dest, tokenizer, pieces: sp.spSize, ...p });
      out.info(`dry run: would count ${p.files.length} file${p.files.length > 1 ? "s" : ""} (${formatBytes(p.bytes)}) with ${sp.spSize.toLocaleString("en-US")} pieces on ${p.threads} thread${p.threads > 1 ? "s" : ""} → ${dest}; nothing written`);
      return 0;
    }
    const c = await countCorpus(files, sp, {
      ...(field !== undefined ? { field } : {}),
      ...(threads !== undefined ? { threads } : {}),
      onProgress: (d, t) => out.progress("count", d, t),
    });
    await writeFileAtomic(dest, formatFrequencies(c, sp.model));
    const used = c.counts.reduce((a, v) => a + (v > 0 ? 1 : 0), 0);
    const top = [...c.counts.keys()].sort((a, b) => (c.counts[b] as number) - (c.counts[a] as number) || a - b).slice(0, 10);
    out.result({
      ok: true,
      out: dest,
      tokenizer: c.tokenizer,
      corpus: c.corpus,
      ...(c.field ? { field: c.field } : {}),
      tokens: c.tokens,
      lines: c.lines,
      bytes: c.bytes,
      seconds: c.seconds,
      threads: c.threads,
      tokensPerSecond: c.tokens / c.seconds,
      bytesPerSecond: c.bytes / c.seconds,
      usedPieces: used,
      pieces: sp.spSize,
      top: top.map((id) => ({ id, piece: sp.model.pieces[id]?.piece, count: c.counts[id] })),
    });
    out.info(`counted ${c.tokens.toLocaleString("en-US")} tokens in ${c.lines.toLocaleString("en-US")} ${c.field ? "records" : "lines"} (${formatBytes(c.bytes)}) in ${c.seconds.toFixed(2)}s (${c.threads} thread${c.threads > 1 ? "s" : ""}): ${formatBytes(c.bytes / c.seconds)}/s, ${Math.round(c.tokens / c.seconds).toLocaleString("en-US")} tokens/s`);
    out.info(`${used.toLocaleString("en-US")} of ${sp.spSize.toLocaleString("en-US")} pieces used; most frequent:`);
    out.info(table(["  id", "piece", "count"], top.map((id) => [`  ${id}`, JSON.stringify(sp.model.pieces[id]?.piece ?? ""), (c.counts[id] ?? 0).toLocaleString("en-US")])));
    out.info(`→ ${dest}`);
    return 0;
  },
};
