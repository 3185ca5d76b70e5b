import { DTYPE_OPTIONS, type DtypeOption } from "../../ops/openba/megatron-to-hf.js";
import { billions, dimsLine, paramPlanRows, planParameters, readHfConfigDims, type ParamPlan } from "../../ops/prune/plan.js";
import { pruneCheckpoint, sourceDims, type PruneJob, type PruneResult } from "../../ops/prune/run.js";
import type { PruneTarget } from "../../ops/prune/masks.js";
import { readMasksFile } from "../../ops/prune/masks-read.js";
import { MegahubError } from "../../errors.js";
import { KEEP_UNKNOWN_GLOBALS_HELP, intOpt, stringOpt, type Command, type ParsedValues, parseSize } from "../command.js";
import { formatBytes, formatParams, table } from "../format.js";
import type { Reporter } from "../reporter.js";
import { RUN_DETAILS, RUN_OPTIONS, runControl } from "../run-options.js";
import { SUMMARIES } from "./summaries.js";

export const pruneCommand: Command = {
  name: "prune",
  summary: SUMMARIES.prune,
  usage:
    "megahub prune <megatron-path|hf-dir> --out <dir> [--hidden N] [--ffn N] [--heads N] [--drop-encoder-layers 4,8] [--drop-decoder-layers 7,11] [--encoder-layers N] [--decoder-layers N] [--strategy random|magnitude] [--seed S] [--masks prune-masks.json] [--to hf|megatron] [--tp N] [--true-vocab-size V] [--tokenizer spiece.model] [--plan] [--from-config config.json] [--keep-unknown-globals] [--dry-run] [--json]",
  options: {
    out: { type: "string", short: "o" },
    hidden: { type: "string" },
    ffn: { type: "string" },
    heads: { type: "string" },
    "drop-encoder-layers": { type: "string" },
    "drop-decoder-layers": { type: "string" },
    "encoder-layers": { type: "string" },
    "decoder-layers": { type: "string" },
    strategy: { type: "string" },
    seed: { type: "string" },
    to: { type: "string" },
    tp: { type: "string" },
    plan: { type: "boolean" },
    "from-config": { type: "string" },
    masks: { type: "string" },
    iteration: { type: "string" },
    tokenizer: { type: "string" },
    "true-vocab-size": { type: "string" },
    "make-vocab-size-divisible-by": { type: "string" },
    dtype: { type: "string" },
    "max-shard-size": { type: "string" },
    "dry-run": { type: "boolean" },
    "keep-unknown-globals": { type: "boolean" },
    ...RUN_OPTIONS,
  },
  details: [
    "Semantics as OpenBA's prune_model: one global hidden mask; per layer a head mask (shared by a decoder layer's",
    "self- and cross-attention) and an FFN mask; kept rows/columns keep their order; kv_channels is never pruned;",
    "dropped layers (0-based, original numbering) vanish and the rest are renumbered.",
    "--encoder-layers/--decoder-layers N  keep N layers; megahub drops non-adjacent layers spread out from the middle",
    "--strategy random     seeded (default --seed 1234), OpenBA's draw order; NOT bit-compatible with Python's random",
    "--strategy magnitude  keep the largest L2 norms (heads: QKV rows + output columns; FFN: w1/w3 rows + w2 column;",
    "                      hidden: every matrix that reads or writes the channel)",
    "--masks FILE          re-apply a masks file to this source instead of choosing: an earlier prune-masks.json, a",
    "                      hand-written JSON ({hidden_index, layers:[{stack, layer, head_index, ffn_index}]}; layers not",
    "                      listed are dropped), or OpenBA's own rank0.pt (with its rank1.pt … siblings; give",
    "                      --drop-*-layers as for OpenBA's prune_model.sh, since rank{r}.pt does not record them)",
    "--to hf (default) or megatron (--tp N, default the source's TP); a masks file (prune-masks.json) is written beside",
    "the weights. --plan prints parameter counts before/after from headers or --from-config (no weights read).",
    KEEP_UNKNOWN_GLOBALS_HELP,
    ...RUN_DETAILS,
  ],
  async run(positionals, values, out) {
    const target = targetOf(values);
    if (values.plan === true) return planOnly(positionals, values, target, out);
    const input = positionals[0];
    const outDir = stringOpt(values, "out");
    if (!input || !outDir) throw new RangeError("prune needs <megatron-path|hf-dir> and --out <dir> (or --plan)");
    const job = await jobOf(input, outDir, values, target);
    const res = await pruneCheckpoint({ ...job, control: runControl(values), onProgress: (label, d, t) => out.progress(label, d, t) });
    report(res, job.dryRun === true, out);
    return 0;
  },
};

function positive(values: ParsedValues, name: string): number | undefined {
  const v = intOpt(values, name);
  if (v !== undefined && v < 1 && !name.endsWith("layers")) throw new RangeError(`--${name} must be at least 1`);
  return v;
}

function layerList(values: ParsedValues, name: string): number[] | undefined {
  const v = stringOpt(values, name);
  if (v === undefined) return undefined;
  const parts = v.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (parts.some((p) => !/^\d+$/.test(p))) throw new RangeError(`--${name} takes 0-based layer numbers separated by commas (e.g. 4,8), got "${v}"`);
  return parts.map(Number);
}

function targetOf(values: ParsedValues): PruneTarget {
  const t: PruneTarget = {};
  const set = <K extends keyof PruneTarget>(k: K, v: PruneTarget[K] | undefined) => {
    if (v !== undefined) t[k] = v;
  };
  set("hidden", positive(values, "hidden"));
  set("ffn", positive(values, "ffn"));
  set("heads", positive(values, "heads"));
  set("dropEncoder", layerList(values, "drop-encoder-layers"));
  set("dropDecoder", layerList(values, "drop-decoder-layers"));
  set("encoderLayers", positive(values, "encoder-layers"));
  set("decoderLayers", positive(values, "decoder-layers"));
  return t;
}

async function jobOf(input: string, out: string, values: ParsedValues, target: PruneTarget): Promise<PruneJob> {
  const strategy = stringOpt(values, "strategy") ?? "random";
  if (strategy !== "random" && strategy !== "magnitude") throw new RangeError(`--strategy must be random or magnitude, got "${strategy}"`);
  const to = stringOpt(values, "to") ?? "hf";
  if (to !== "hf" && to !== "megatron") throw new RangeError(`--to must be hf or megatron, got "${to}"`);
  const dtype = stringOpt(values, "dtype");
  if (dtype !== undefined && !(dtype in DTYPE_OPTIONS)) throw new RangeError(`--dtype must be one of ${Object.keys(DTYPE_OPTIONS).join(", ")}`);
  if (dtype !== undefined && to === "megatron") throw new RangeError("--dtype applies to --to hf only");
  if (values["from-config"] !== undefined) throw new RangeError("--from-config goes with --plan");
  const seed = intOpt(values, "seed");
  const masksFile = stringOpt(values, "masks");
  if (masksFile !== undefined && (values.strategy !== undefined || seed !== undefined)) throw new RangeError("--masks replaces --strategy and --seed");
  const masks = masksFile === undefined ? undefined : await readMasksFile(masksFile);
  if (seed !== undefined && strategy !== "random") throw new RangeError("--seed applies to --strategy random only");
  const tp = intOpt(values, "tp");
  const iteration = intOpt(values, "iteration");
  const tokenizer = stringOpt(values, "tokenizer");
  const shard = stringOpt(values, "max-shard-size");
  const trueVocab = intOpt(values, "true-vocab-size");
  const divisibleBy = intOpt(values, "make-vocab-size-divisible-by");
  if ((trueVocab !== undefined || divisibleBy !== undefined) && to !== "megatron") throw new RangeError("--true-vocab-size and --make-vocab-size-divisible-by apply to --to megatron only");
  return {
    ...target,
    input,
    out,
    strategy,
    to,
    dryRun: values["dry-run"] === true,
    ...(values["keep-unknown-globals"] === true ? { keepUnknownGlobals: true } : {}),
    ...(seed === undefined ? {} : { seed }),
    ...(masks ? { masks } : {}),
    ...(tp === undefined ? {} : { tp }),
    ...(iteration === undefined ? {} : { iteration }),
    ...(tokenizer ? { tokenizer } : {}),
    ...(trueVocab === undefined ? {} : { trueVocab }),
    ...(divisibleBy === undefined ? {} : { divisibleBy }),
    ...(shard ? { maxShardBytes: parseSize(shard) } : {}),
    ...(dtype ? { dtype: dtype as DtypeOption } : {}),
  };
}

async function planOnly(positionals: string[], values: ParsedValues, target: PruneTarget, out: Reporter): Promise<number> {
  const config = stringOpt(values, "from-config");
  const input = positionals[0];
  if ((config === undefined) === (input === undefined)) {
    throw new MegahubError("USAGE", "--plan needs exactly one of <checkpoint> or --from-config <config.json>");
  }
  const iteration = intOpt(values, "iteration");
  const from = config
    ? { ...(await readHfConfigDims(config)), source: config }
    : { ...(await sourceDims(input as string, iteration)), notes: [] as string[], source: input as string };
  const plan = planParameters(from.dims, target, from.notes);
  reportPlan(plan, from.source, out);
  return 0;
}

function reportPlan(plan: ParamPlan, source: string, out: Reporter): void {
  const { resolved } = plan;
  out.result({
    ok: true,
    source,
    from: resolved.from,
    to: resolved.to,
    dropped: resolved.drop,
    before: plan.before,
    after: plan.after,
    hfTotal: plan.hfTotal,
    billions: { before: billions(plan.before.total), after: billions(plan.after.total) },
    notes: plan.notes,
  });
  out.info(`plan: ${source}`);
  out.info(`  from  ${dimsLine(resolved.from)}`);
  out.info(`  to    ${dimsLine(resolved.to)}`);
  for (const stack of ["encoder", "decoder"] as const) {
    if (resolved.drop[stack].length > 0) out.info(`  drop ${stack} layers [${resolved.drop[stack].join(", ")}] (${resolved.chosen[stack]})`);
  }
  out.info(table(["  part", "before", "after", "removed"], paramPlanRows(plan).map(([p, ...r]) => [`  ${p}`, ...r])));
  out.info(`  parameters as Megatron stores them (head tied to the embedding); as HF stores them: ${billions(plan.hfTotal.before)} → ${billions(plan.hfTotal.after)}`);
  for (const n of plan.notes) out.info(`  note: ${n}`);
}

function report(res: PruneResult, dryRun: boolean, out: Reporter): void {
  const { resolved, summary } = res;
  out.result({
    ok: true,
    dryRun,
    out: res.out,
    source: res.source,
    to: res.to,
    ...(res.tp === undefined ? {} : { tp: res.tp }),
    from: resolved.from,
    dims: resolved.to,
    dropped: resolved.drop,
    parameters: res.params,
    masks: res.masks,
    unknownGlobals: res.unknownGlobals,
    plan: summary,
    ...(res.execution ? { written: res.execution.files } : {}),
  });
  out.info(`${dryRun ? "plan" : "pruned"}: ${res.source.path} (${res.source.format}${res.source.tp ? `, TP ${res.source.tp}` : ""}) → ${res.out} (${res.to}${res.tp ? `, TP ${res.tp}` : ""})`);
  out.info(`  from  ${dimsLine(resolved.from)}`);
  out.info(`  to    ${dimsLine(resolved.to)}`);
  for (const stack of ["encoder", "decoder"] as const) {
    if (resolved.drop[stack].length > 0) out.info(`  dropped ${stack} layers [${resolved.drop[stack].join(", ")}] (${resolved.chosen[stack]}; original numbering)`);
  }
  out.info(`  strategy ${res.masks.strategy}${res.masks.seed === null ? "" : `, seed ${res.masks.seed}`}; parameters ${formatParams(res.params.before.total)} → ${formatParams(res.params.after.total)}`);
  out.info(table(["  file", "bytes", "tensors"], summary.files.map((f) => [`  ${f.path}`, formatBytes(f.bytes), f.tensors || ""])));
  out.info(`  read ${formatBytes(summary.bytesToRead)}, write ${formatBytes(summary.bytesToWrite)}; largest tensor ${summary.largestTensor?.name ?? "-"} (${formatBytes(summary.largestTensor?.bytes ?? 0)})`);
  if (dryRun) {
    for (const t of summary.tensors.slice(0, 8)) out.info(`  ${t.name} ${t.dtype} [${t.shape.join(", ")}] ← ${t.recipe}`);
    if (summary.tensors.length > 8) out.info(`  … ${summary.tensors.length - 8} more tensors (--json lists all)`);
    out.info("  dry run: nothing written");
  }
  for (const n of res.notes) out.info(`  note: ${n}`);
  if (res.unknownGlobals.length > 0) out.warn(`unvetted pickle globals in the carried args: ${res.unknownGlobals.join(", ")}`);
}
