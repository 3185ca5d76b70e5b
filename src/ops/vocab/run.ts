import { stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { MegahubError } from "../../errors.js";
import { argNumber } from "../../formats/megatron/read.js";
import { safetensorsHeader } from "../../formats/safetensors/write.js";
import { assertWritableTarget, writeFileAtomic } from "../../io/atomic.js";
import { OPENBA_CHAT_TEMPLATE, OPENBA_SPECIAL } from "../../models/openba/spec.js";
import { countParams } from "../../models/openba/dims.js";
import { paddedVocab } from "../../models/vocab-padding.js";
import type { ExecuteResult } from "../../plan/execute.js";
import { summarizePlan, type Plan, type PlannedFile, type PlanSummary } from "../../plan/plan.js";
import { runPlan } from "../../plan/run.js";
import { resolveChatTemplate } from "../../tokenizers/chat-template.js";
import type { GlobalModel } from "../openba/global-model.js";
import { openModel, type ModelSource } from "../openba/open-model.js";
import { planMegatronFiles } from "../openba/megatron-write.js";
import { DEFAULT_DIVISIBLE_BY } from "../../models/vocab-padding.js";
import { planHfFiles } from "../openba/megatron-to-hf.js";
import { idMapJson, ID_MAP_FILE, planVocabRemap, remapModel, vocabParams, type VocabRemap } from "./remap.js";
import { renderVocabReportHtml, type VocabReport } from "./report.js";
import { chatTemplatePieces, nonNormalPieces, readKeepTokens, selectPieces, type ForcedPieces, type KeepRule } from "./select.js";
import { checkPrunable, prunedSentencePiece, prunedTokenizerFiles } from "./tokenizer.js";
import { synthesizedArgs } from "../openba/to-megatron.js";
import { readFrequencies } from "./freq.js";
import { countCorpus, openSentencePiece, type SentencePieceEncoder } from "./count.js";

/** A `megahub prune-vocab` run. */
export interface PruneVocabJob {
  /** An HF OpenBA dir or a Megatron checkpoint (root, iteration dir, rank dir or .tar). */
  input: string;
  out: string;
  /** Counts from `megahub vocab count` (or OpenBA's get_vocab_freq.py "id count" file). One of freq/corpus. */
  freq?: string;
  /** Corpus files to count now. */
  corpus?: string[];
  /** JSON lines field for `corpus`. */
  field?: string;
  /** Counting threads for `corpus` (see countCorpus). */
  threads?: number;
  /** Keep this many sentencepiece pieces. One of keep/coverage. */
  keep?: number;
  /** Keep the fewest pieces that cover this share (0, 1] of the corpus tokens. */
  coverage?: number;
  /** A file of tokens (one per line, as in spiece.vocab) that must stay. */
  keepTokens?: string;
  /** The sentencepiece model. @default the HF dir's spiece.model; required for Megatron input */
  tokenizer?: string;
  /** A chat template file. @default the HF dir's template, else OpenBA's */
  chatTemplate?: string;
  /** @default the input's format */
  to?: "hf" | "megatron";
  /** Padding (and, for Megatron output, the split) is for this TP. @default the Megatron source's TP, else 1 */
  tp?: number;
  /** make_vocab_size_divisible_by. @default args, else 128 */
  divisibleBy?: number;
  iteration?: number;
  maxShardBytes?: number;
  /** Also write the HTML report here (under dry-run too). */
  report?: string;
  /** Plan only: counts and selection are real, no weight is read and nothing but the report is written. */
  dryRun?: boolean;
  onProgress?: (label: "count" | "prune-vocab", done: number, total: number) => void;
}

/** What a prune-vocab run planned (and, unless a dry run, wrote). */
export interface PruneVocabResult {
  source: { path: string; format: "hf" | "megatron"; iteration?: number | "release"; tp?: number };
  to: "hf" | "megatron";
  tp: number;
  out: string;
  /** Row map (big arrays: callers printing JSON should use `report`). */
  remap: VocabRemap;
  report: VocabReport;
  counting?: { tokens: number; lines: number; bytes: number; seconds: number };
  summary: PlanSummary;
  notes: string[];
  execution?: ExecuteResult;
}


/**
 * Prunes the vocabulary: counts (or reads counts), keeps the most used pieces plus everything that must stay, writes
 * a new spiece.model and tokenizer files with the new ids, re-indexes the embedding and lm_head rows (bit copies of
 * the rows they come from), re-pads to divisible-by × TP, and writes the id map. Every check — options, tokenizer
 * against embedding, keep-tokens, counts, output location — runs before the first byte is written.
 */
export async function pruneVocab(job: PruneVocabJob): Promise<PruneVocabResult> {
  const rule = keepRule(job);
  if ((job.freq === undefined) === ((job.corpus?.length ?? 0) === 0)) throw new MegahubError("USAGE", "give exactly one of --freq <freq.tsv> or --corpus <files…>");
  if (!job.dryRun) await assertWritableTarget(job.out);
  if (job.report !== undefined) await checkReportDir(job.report);
  const src = await openModel(job.input, job.iteration);
  try {
    const to = job.to ?? src.info.format;
    if (to !== "hf" && to !== "megatron") throw new MegahubError("USAGE", `--to must be hf or megatron, got ${String(to)}`);
    const tokenizerPath = job.tokenizer ?? src.spiece;
    if (tokenizerPath === undefined) {
      throw new MegahubError("USAGE", src.info.format === "megatron" ? "a Megatron checkpoint carries no tokenizer: pass --tokenizer <spiece.model>" : "the HF dir has no spiece.model: pass --tokenizer", { file: job.input });
    }
    const sp = await openSentencePiece(tokenizerPath);
    const facts = checkPrunable(sp.model, tokenizerPath);
    const divisibleBy = job.divisibleBy ?? argNumber(src.model.args, "make_vocab_size_divisible_by") ?? DEFAULT_DIVISIBLE_BY;
    const rows = src.model.dims.vocab;
    const oldTrue = checkTokenizerFits(sp.spSize, rows, src.model.trueVocab, divisibleBy, tokenizerPath);
    const notes: string[] = [];
    if (!facts.byteFallback && facts.bytePieces === 0) notes.push("the tokenizer has no byte fallback: text that needs a dropped piece becomes <unk>");

    const template = job.chatTemplate !== undefined || src.info.format === "hf" ? (await resolveChatTemplate(job.input, job.chatTemplate)).template : OPENBA_CHAT_TEMPLATE;
    const forced: ForcedPieces = {
      byType: nonNormalPieces(sp.model),
      keepTokens: job.keepTokens === undefined ? [] : await readKeepTokens(job.keepTokens, sp.model),
      template: chatTemplatePieces(template, sp.model, (t) => sp.encode(t)),
    };
    const counted = await countsOf(job, sp, oldTrue, notes);
    const selection = selectPieces(sp.spSize, counted.counts, forced, rule);
    const tp = job.tp ?? (to === "megatron" ? (src.info.tp ?? 1) : 1);
    const remap = planVocabRemap(selection.kept, { spSize: sp.spSize, trueVocab: oldTrue, rows }, divisibleBy, tp);
    notes.push(...remap.notes);
    const pruned = remapModel(src.model, remap);
    const spm = prunedSentencePiece(sp.model, selection.kept);
    notes.push(...spm.notes);

    const output = await planOutput(pruned, src, to, tp, divisibleBy, spm.bytes, template, job);
    const plan: Plan = {
      files: [...output.files, { kind: "text", path: ID_MAP_FILE, content: idMapJson(remap) }],
      notes: [...notes, ...output.notes],
    };
    const summary = summarizePlan(plan, (f) => safetensorsHeader(f).byteLength);
    const params = vocabParams(src.model.dims, remap.new.rows);
    const report: VocabReport = {
      source: src.info.path,
      out: resolve(job.out),
      rule,
      corpus: { ...(job.freq !== undefined ? { freq: job.freq } : { files: job.corpus ?? [] }), tokens: selection.tokens },
      pieces: { before: sp.spSize, kept: selection.kept.length, forced: selection.forced, usedByCorpus: selection.usedPieces },
      coverage: selection.coverage,
      curve: selection.curve,
      vocab: { before: remap.old, after: remap.new },
      params,
      notes: [...plan.notes],
    };
    const result: PruneVocabResult = {
      source: src.info,
      to,
      tp,
      out: job.out,
      remap,
      report,
      ...(counted.counting ? { counting: counted.counting } : {}),
      summary,
      notes: [...plan.notes],
    };
    if (job.dryRun) {
      if (job.report !== undefined) await writeFileAtomic(job.report, renderVocabReportHtml(report));
      return result;
    }
    const execution = await runPlan(plan, job.out, {
      ...(job.onProgress ? { onProgress: (d: number, t: number) => job.onProgress?.("prune-vocab", d, t) } : {}),
      step: {
        step: "prune-vocab",
        source: { path: src.info.path, format: src.info.format === "hf" ? "hf-safetensors" : "megatron", ...(src.info.iteration === undefined ? {} : { iteration: src.info.iteration }), ...(src.info.tp === undefined ? {} : { tp: src.info.tp }) },
        settings: {
          ...(rule.kind === "keep" ? { keep: rule.pieces } : { coverage: rule.share }),
          ...(job.freq !== undefined ? { freq: job.freq } : { corpus: job.corpus ?? [], ...(job.field ? { field: job.field } : {}) }),
          ...(job.keepTokens !== undefined ? { keepTokens: job.keepTokens } : {}),
          tokenizer: tokenizerPath,
          corpusTokens: selection.tokens,
          coverageAchieved: selection.coverage,
          pieces: { before: sp.spSize, after: remap.new.spSize },
          rows: { before: rows, after: remap.new.rows },
          output: to,
          tp,
          divisibleBy,
          idMap: ID_MAP_FILE,
        },
        notes: [...plan.notes],
      },
      sourceDir: job.input,
      model: { ...pruned.dims },
      parameters: { ...countParams(pruned.dims, to === "megatron") },
    });
    if (job.report !== undefined) await writeFileAtomic(job.report, renderVocabReportHtml(report));
    return { ...result, execution };
  } finally {
    await src.close();
  }
}

/** The report is written last; a missing folder must fail before the weights are written, not after. */
async function checkReportDir(report: string): Promise<void> {
  const ok = await stat(dirname(resolve(report))).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (!ok) throw new MegahubError("USAGE", "the --report file's folder does not exist", { file: report });
}

function keepRule(job: PruneVocabJob): KeepRule {
  if ((job.keep === undefined) === (job.coverage === undefined)) throw new MegahubError("USAGE", "give exactly one of --keep N or --coverage F");
  return job.keep !== undefined ? { kind: "keep", pieces: job.keep } : { kind: "coverage", share: job.coverage as number };
}

/**
 * The tokenizer must be the one the embedding was trained with: its pieces + OpenBA's 103 added tokens must equal
 * the model's known token count (HF added_tokens.json, Megatron args), and the embedding rows must be exactly that
 * many or Megatron's padding of it for some TP from 1 to 8 (OpenBA's split tools pad for a TP and never shrink).
 * Returns the model's true vocabulary.
 */
function checkTokenizerFits(spSize: number, rows: number, known: number | undefined, divisibleBy: number, file: string): number {
  const expected = spSize + OPENBA_SPECIAL.extraRows;
  const wrong = "wrong tokenizer for this checkpoint";
  // v2's Megatron tokenizer adds "\n" as one more special token (openba-format §8): sp + 104 is OpenBA too.
  if (known !== undefined && known !== expected && known !== expected + 1) {
    throw new MegahubError("MODEL", `the model has ${known} tokens but the tokenizer's ${spSize} pieces + ${OPENBA_SPECIAL.extraRows} OpenBA tokens = ${expected}: ${wrong}`, { file });
  }
  if (expected > rows) {
    throw new MegahubError("MODEL", `the tokenizer's ${spSize} pieces + ${OPENBA_SPECIAL.extraRows} OpenBA tokens = ${expected} need more rows than the embedding's ${rows}: ${wrong}`, { file });
  }
  const fits = (t: number) => t === rows || Array.from({ length: 8 }, (_, k) => paddedVocab(t, divisibleBy, k + 1)).includes(rows);
  const trueVocab = (known !== undefined ? [known] : [expected, expected + 1]).find(fits);
  if (trueVocab === undefined) {
    throw new MegahubError(
      "MODEL",
      `the embedding has ${rows} rows, which is not Megatron's padding (${divisibleBy} × TP, TP 1–8) of the tokenizer's ${spSize} pieces + ${OPENBA_SPECIAL.extraRows} OpenBA tokens = ${known ?? expected}: ${wrong} (pass --make-vocab-size-divisible-by if the checkpoint used another value)`,
      { file },
    );
  }
  return trueVocab;
}

async function countsOf(
  job: PruneVocabJob,
  sp: SentencePieceEncoder,
  trueVocab: number,
  notes: string[],
): Promise<{ counts: Float64Array; counting?: PruneVocabResult["counting"] }> {
  if (job.freq !== undefined) {
    const read = await readFrequencies(job.freq, sp, trueVocab);
    notes.push(...read.notes);
    return { counts: read.counts };
  }
  const c = await countCorpus(job.corpus ?? [], sp, {
    ...(job.field !== undefined ? { field: job.field } : {}),
    ...(job.threads !== undefined ? { threads: job.threads } : {}),
    ...(job.onProgress ? { onProgress: (d: number, t: number) => job.onProgress?.("count", d, t) } : {}),
  });
  return { counts: c.counts, counting: { tokens: c.tokens, lines: c.lines, bytes: c.bytes, seconds: c.seconds } };
}

async function planOutput(
  pruned: GlobalModel,
  src: ModelSource,
  to: "hf" | "megatron",
  tp: number,
  divisibleBy: number,
  spiece: Uint8Array,
  template: string,
  job: PruneVocabJob,
): Promise<{ files: PlannedFile[]; notes: string[] }> {
  if (to === "hf") {
    const planned = await planHfFiles(pruned, job.maxShardBytes === undefined ? {} : { maxShardBytes: job.maxShardBytes });
    const tok = await prunedTokenizerFiles(spiece, pruned.dims.vocab, template);
    // An HF source keeps its own config.json (sequence lengths, auto_map …) with only vocab_size changed.
    const files = planned.plan.files.map((f): PlannedFile =>
      f.path === "config.json" && src.config ? { kind: "text", path: f.path, content: `${JSON.stringify({ ...src.config, vocab_size: pruned.dims.vocab }, null, 2)}\n` } : f,
    );
    const notes = planned.plan.notes.filter((n) => !n.startsWith("no --tokenizer given"));
    notes.push(`tokenizer: ${tok.facts.spSize} pieces + ${OPENBA_SPECIAL.extraRows} OpenBA tokens = ${tok.facts.trueVocab} (<extra_id_0> = ${tok.facts.added["<extra_id_0>"]}, <R> = ${tok.facts.added["<R>"]})`);
    return { files: [...files, ...tok.files], notes };
  }
  const dtype = pruned.tensors.get("language_model.embedding.word_embeddings.weight")?.dtype ?? "F16";
  const iteration = src.info.iteration ?? 1;
  const written = planMegatronFiles(pruned, {
    tp,
    iteration,
    divisibleBy,
    ...(pruned.trueVocab === undefined ? {} : { trueVocab: pruned.trueVocab }),
    ...(pruned.args ? { args: pruned.args } : {}),
    ...(src.config ? { argsOverrides: { ...synthesizedArgs(src.config, dtype), iteration: iteration === "release" ? 0 : iteration } } : {}),
  });
  return {
    files: [...written.plan.files, { kind: "text", path: "spiece.model", content: spiece }],
    // The writer's own vocabulary note would only repeat the remap's ("… padded to N rows (unchanged)").
    notes: [...written.plan.notes.filter((n) => n !== written.vocabChange), "spiece.model (the pruned tokenizer) is written beside the checkpoint: train or convert with it"],
  };
}

