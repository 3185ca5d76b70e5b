import { readHfConfigDims } from "../../ops/prune/plan.js";
import type { PruneVocabJob, PruneVocabResult } from "../../ops/vocab/run.js";
import { ID_MAP_FILE, prunedRows, vocabParams } from "../../ops/vocab/remap.js";
import { DEFAULT_DIVISIBLE_BY } from "../../models/vocab-padding.js";
import { MegahubError } from "../../errors.js";
import { OPENBA_SPECIAL } from "../../models/openba/spec.js";
import { KEEP_UNKNOWN_GLOBALS_HELP, intOpt, listOpt, stringOpt, type Command, type ParsedValues, parseSize } from "../command.js";
import { formatBytes, formatParams, table } from "../format.js";
import type { Reporter } from "../reporter.js";
import { RUN_DETAILS, RUN_OPTIONS, runControl } from "../run-options.js";
import { SUMMARIES } from "./summaries.js";

const USAGE =
  "megahub prune-vocab <hf-dir|megatron-path> --out <dir> (--freq <freq.tsv> | --corpus <files…>) (--keep N | --coverage F) [--keep-tokens <file>] [--tp N] [--to hf|megatron] [--tokenizer <spiece.model>] [--field text] [--threads N] [--chat-template <file>] [--report <file.html>] [--keep-unknown-globals] [--dry-run] [--json]\n" +
  "       megahub prune-vocab --from-config <config.json> --keep N [--tp N]   (parameter arithmetic only)";

/** `megahub prune-vocab`: vocabulary pruning of an HF or Megatron OpenBA checkpoint, or its parameter arithmetic. */
export const pruneVocabCommand: Command = {
  name: "prune-vocab",
  summary: SUMMARIES["prune-vocab"],
  usage: USAGE,
  options: {
    out: { type: "string", short: "o" },
    freq: { type: "string" },
    corpus: { type: "string", multiple: true },
    field: { type: "string" },
    threads: { type: "string" },
    keep: { type: "string" },
    coverage: { type: "string" },
    "keep-tokens": { type: "string" },
    tokenizer: { type: "string" },
    "chat-template": { type: "string" },
    to: { type: "string" },
    tp: { type: "string" },
    "make-vocab-size-divisible-by": { type: "string" },
    iteration: { type: "string" },
    "max-shard-size": { type: "string" },
    report: { type: "string" },
    "from-config": { type: "string" },
    "dry-run": { type: "boolean" },
    "keep-unknown-globals": { type: "boolean" },
    ...RUN_OPTIONS,
  },
  details: [
    "--keep N       keep N sentencepiece pieces (OpenBA's 100 sentinels and <R> <S> <X> always come on top)",
    "--coverage F   keep the fewest pieces whose tokens make up at least F (e.g. 0.999) of the corpus",
    "Always kept: every non-NORMAL piece (<unk>, control, user-defined, the 256 byte pieces, unused), pieces the chat",
    "template's own text uses, and --keep-tokens entries (one per line, as in spiece.vocab: ▁ for a leading space).",
    "Kept pieces keep their order; rows are bit copies of the old rows; padding follows Megatron (divisible-by × --tp).",
    `The output holds the new spiece.model and tokenizer files (HF), the re-indexed weights and ${ID_MAP_FILE}`,
    "(old → new ids, for `megahub verify --against <original> --id-map`).",
    KEEP_UNKNOWN_GLOBALS_HELP,
    ...RUN_DETAILS,
  ],
  async run(positionals, values, out) {
    if (stringOpt(values, "from-config") !== undefined) return fromConfig(positionals, values, out);
    const input = positionals[0];
    const dir = stringOpt(values, "out");
    if (input === undefined || dir === undefined) throw new MegahubError("USAGE", "prune-vocab needs <hf-dir|megatron-path> and --out <dir>");
    // Loaded here, not at the top: `megahub --help` loads every command module and should stay light.
    const { pruneVocab } = await import("../../ops/vocab/run.js");
    const res = await pruneVocab({ ...jobOf(positionals, values), input, out: dir, control: runControl(values), onProgress: (l, d, t) => out.progress(l, d, t) });
    report(res, values["dry-run"] === true, out);
    return 0;
  },
};

function keepOf(values: ParsedValues): Pick<PruneVocabJob, "keep" | "coverage"> {
  const keep = stringOpt(values, "keep");
  const coverage = stringOpt(values, "coverage");
  const out: Pick<PruneVocabJob, "keep" | "coverage"> = {};
  if (keep !== undefined) {
    const m = /^(\d+)(k?)$/i.exec(keep.trim());
    if (!m) throw new MegahubError("USAGE", `--keep takes a number of pieces (e.g. 100000 or 100k), got "${keep}"`);
    out.keep = Number(m[1]) * (m[2] ? 1000 : 1);
  }
  if (coverage !== undefined) {
    const f = Number(coverage.trim().endsWith("%") ? Number(coverage.trim().slice(0, -1)) / 100 : coverage);
    if (!(f > 0 && f <= 1)) throw new MegahubError("USAGE", `--coverage takes a share in (0, 1] such as 0.999 or 99.9%, got "${coverage}"`);
    out.coverage = f;
  }
  return out;
}

function jobOf(positionals: string[], values: ParsedValues): Omit<PruneVocabJob, "input" | "out"> {
  const corpus = listOpt(values, "corpus");
  const extra = positionals.slice(1);
  if (extra.length > 0 && corpus.length === 0) throw new MegahubError("USAGE", `unexpected arguments ${extra.join(" ")} (one input; corpus files go after --corpus)`);
  const to = stringOpt(values, "to");
  if (to !== undefined && to !== "hf" && to !== "megatron") throw new MegahubError("USAGE", `--to must be hf or megatron, got "${to}"`);
  const str = (name: string) => stringOpt(values, name);
  const int = (name: string) => intOpt(values, name);
  const shard = str("max-shard-size");
  const job: Omit<PruneVocabJob, "input" | "out"> = { ...keepOf(values), dryRun: values["dry-run"] === true };
  if (values["keep-unknown-globals"] === true) job.keepUnknownGlobals = true;
  const set = <K extends keyof PruneVocabJob>(k: K, v: PruneVocabJob[K] | undefined) => {
    if (v !== undefined) (job as PruneVocabJob)[k] = v;
  };
  if (corpus.length > 0) set("corpus", [...corpus, ...extra]);
  set("freq", str("freq"));
  set("field", str("field"));
  set("threads", int("threads"));
  set("keepTokens", str("keep-tokens"));
  set("tokenizer", str("tokenizer"));
  set("chatTemplate", str("chat-template"));
  set("to", to as PruneVocabJob["to"]);
  set("tp", int("tp"));
  set("divisibleBy", int("make-vocab-size-divisible-by"));
  set("iteration", int("iteration"));
  set("report", str("report"));
  if (shard !== undefined) set("maxShardBytes", parseSize(shard));
  return job;
}

function report(res: PruneVocabResult, dryRun: boolean, out: Reporter): void {
  const r = res.report;
  out.result({
    ok: true,
    dryRun,
    out: res.out,
    source: res.source,
    to: res.to,
    tp: res.tp,
    idMap: ID_MAP_FILE,
    report: r,
    unknownGlobals: res.unknownGlobals,
    ...(res.counting ? { counting: res.counting } : {}),
    plan: res.summary,
    ...(res.execution ? { written: res.execution.files } : {}),
  });
  const pct = (x: number) => `${(100 * x).toFixed(3)}%`;
  out.info(`${dryRun ? "plan" : "pruned vocabulary"}: ${res.source.path} (${res.source.format}) → ${res.out} (${res.to}, padding for TP ${res.tp})`);
  if (res.counting) {
    const c = res.counting;
    out.info(`  counted ${c.tokens.toLocaleString("en-US")} tokens (${formatBytes(c.bytes)}) in ${c.seconds.toFixed(2)}s`);
  }
  out.info(`  kept ${r.pieces.kept.toLocaleString("en-US")} of ${r.pieces.before.toLocaleString("en-US")} pieces (${r.pieces.forced} always kept; the corpus uses ${r.pieces.usedByCorpus}): ${pct(r.coverage)} of ${r.corpus.tokens.toLocaleString("en-US")} corpus tokens`);
  out.info(`  tokens ${r.vocab.before.trueVocab} → ${r.vocab.after.trueVocab}, embedding rows ${r.vocab.before.rows} → ${r.vocab.after.rows}`);
  out.info(`  parameters ${formatParams(r.params.before.total)} → ${formatParams(r.params.after.total)} (tied head; as HF stores it ${formatParams(r.params.hfTotal.before)} → ${formatParams(r.params.hfTotal.after)})`);
  out.info(table(["  file", "bytes"], res.summary.files.map((f) => [`  ${f.path}`, formatBytes(f.bytes)])));
  for (const n of res.notes) out.info(`  note: ${n}`);
  if (res.unknownGlobals.length > 0) out.warn(`unvetted pickle globals in the carried args: ${res.unknownGlobals.join(", ")}`);
}

/** Parameter arithmetic from a config.json: how big the model is with N pieces kept, no tokenizer or weights needed. */
async function fromConfig(positionals: string[], values: ParsedValues, out: Reporter): Promise<number> {
  const path = stringOpt(values, "from-config") as string;
  if (positionals.length > 0) throw new MegahubError("USAGE", "--from-config takes no checkpoint");
  const { keep } = keepOf(values);
  if (keep === undefined) throw new MegahubError("USAGE", "--from-config needs --keep N (a coverage needs counts and a tokenizer)");
  const { dims, notes } = await readHfConfigDims(path);
  const tp = intOpt(values, "tp") ?? 1;
  const divisibleBy = intOpt(values, "make-vocab-size-divisible-by") ?? DEFAULT_DIVISIBLE_BY;
  if (tp < 1 || divisibleBy < 1) throw new MegahubError("USAGE", "--tp and --make-vocab-size-divisible-by must be at least 1");
  const rows = prunedRows(keep, OPENBA_SPECIAL.extraRows, divisibleBy, tp);
  if (rows > dims.vocab) throw new MegahubError("USAGE", `keeping ${keep} pieces needs ${rows} rows, more than the model's ${dims.vocab}`);
  const params = vocabParams(dims, rows);
  out.result({ ok: true, config: path, keep, tp, divisibleBy, rows: { before: dims.vocab, after: rows }, params, notes });
  out.info(`plan: ${path}, keep ${keep.toLocaleString("en-US")} pieces + ${OPENBA_SPECIAL.extraRows} added tokens → ${rows} rows (was ${dims.vocab})`);
  out.info(`  parameters ${formatParams(params.before.total)} → ${formatParams(params.after.total)} (tied head; as HF stores it ${formatParams(params.hfTotal.before)} → ${formatParams(params.hfTotal.after)})`);
  for (const n of notes) out.info(`  note: ${n}`);
  return 0;
}
