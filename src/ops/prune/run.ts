import { MegahubError } from "../../errors.js";
import { safetensorsHeader } from "../../formats/safetensors/write.js";
import { assertWritableTarget } from "../../io/atomic.js";
import { countParams, type OpenbaDims, type ParamCounts } from "../../models/openba/dims.js";
import type { ExecuteResult } from "../../plan/execute.js";
import type { LineageStep } from "../../plan/manifest.js";
import { summarizePlan, type Plan, type PlanSummary } from "../../plan/plan.js";
import { runPlan, type RunControl } from "../../plan/run.js";
import type { GlobalModel } from "../openba/global-model.js";
import { openModel, type ModelSource } from "../openba/open-model.js";
import { planMegatronFiles } from "../openba/megatron-write.js";
import { planHfFiles, type DtypeOption } from "../openba/megatron-to-hf.js";
import { planTokenizerFiles } from "../../models/openba/tokenizer.js";
import { magnitudeMasks } from "./magnitude.js";
import { DEFAULT_SEED, placeholderMasks, randomMasks, resolvePrune, type PruneMasks, type PruneStrategy, type PruneTarget, type ResolvedPrune } from "./masks.js";
import { completeMasks, type MasksInput } from "./masks-read.js";
import { applyPruneMasks, MASKS_FILE, masksFromManifest, masksManifest, type MasksManifest } from "./structure.js";
import { synthesizedArgs } from "../openba/to-megatron.js";

/** A `megahub prune` run: source, target, strategy and output. */
export interface PruneJob extends PruneTarget {
  /** A Megatron checkpoint (root, iteration dir, rank dir or .tar) or an HF OpenBA directory. */
  input: string;
  out: string;
  /** @default "random" */
  strategy?: PruneStrategy;
  /**
   * Re-apply a masks manifest (a `prune-masks.json` an earlier prune wrote, or masks built from OpenBA's rank{r}.pt)
   * instead of choosing masks: the target comes from the manifest, whose source dims must match this source.
   */
  masks?: MasksManifest | MasksInput;
  /** @default 1234 (OpenBA's example seed) */
  seed?: number;
  /** @default "hf" */
  to?: "hf" | "megatron";
  /** Megatron output TP. @default the source's TP (1 for an HF source) */
  tp?: number;
  iteration?: number;
  /** A sentencepiece model: HF output writes tokenizer files; Megatron output takes the true vocabulary from it. */
  tokenizer?: string;
  /** Megatron output: tokens with meaning, when the padded vocabulary must change for the new TP. */
  trueVocab?: number;
  /** Megatron output: make_vocab_size_divisible_by. @default args, else 128 */
  divisibleBy?: number;
  maxShardBytes?: number;
  dtype?: DtypeOption;
  /** Whole, one part of a split, finalize, or local workers (see plan/run.ts). */
  control?: RunControl;
  /** Plan only: no weight is read (magnitude masks are stand-ins with the right counts) and nothing is written. */
  dryRun?: boolean;
  /** Megatron output: carry pickle globals that are not on megahub's allow-list (off: dropped with a notice). */
  keepUnknownGlobals?: boolean;
  onProgress?: (label: "norms" | "prune", done: number, total: number) => void;
}

export interface PruneResult {
  resolved: ResolvedPrune;
  /** The masks manifest (under dry-run with magnitude: stand-in masks, flagged in `notes`). */
  masks: MasksManifest;
  params: { before: ParamCounts; after: ParamCounts };
  /** Dims of the written model (`resolved.to`, with the vocabulary rows the writer padded to). */
  dims: OpenbaDims;
  summary: PlanSummary;
  source: { path: string; format: "megatron" | "hf"; iteration?: number | "release"; tp?: number };
  to: "hf" | "megatron";
  tp?: number;
  notes: string[];
  /** Megatron output: unvetted pickle globals found in the carried args (dropped unless keepUnknownGlobals). */
  unknownGlobals: string[];
  out: string;
  execution?: ExecuteResult;
}


/**
 * Prunes a checkpoint to a target configuration in one pass: the source is read as a global model, masks are chosen
 * (random: no read; magnitude: one streamed read of the matrices involved), the masks become `select` recipes, and
 * the HF or Megatron writer plans the output from them. Every check (target vs source, TP divisibility, the output
 * location) happens before the first byte is written; the output appears only when complete.
 */
export async function pruneCheckpoint(job: PruneJob): Promise<PruneResult> {
  const to = job.to ?? "hf";
  if (to !== "hf" && to !== "megatron") throw new MegahubError("USAGE", `--to must be hf or megatron, got ${String(to)}`);
  const strategy = job.strategy ?? "random";
  if (strategy !== "random" && strategy !== "magnitude") throw new MegahubError("USAGE", `--strategy must be random or magnitude, got ${String(strategy)}`);
  if (to === "hf" && job.tp !== undefined) throw new MegahubError("USAGE", "--tp applies to --to megatron only");
  if (!job.dryRun) await assertWritableTarget(job.out);
  const src = await openModel(job.input, job.iteration);
  try {
    // Hand-written and OpenBA rank{r}.pt masks are completed against this source (dims, dropped layers) first.
    const manifest = job.masks ? completeMasks(job.masks, src.model.dims, { encoder: job.dropEncoder, decoder: job.dropDecoder }) : undefined;
    const targetJob = { ...job, dropEncoder: undefined, dropDecoder: undefined };
    const resolved = resolvePrune(src.model.dims, manifest ? targetOfManifest(manifest, src.model.dims, targetJob) : job);
    const tp = to === "megatron" ? (job.tp ?? src.info.tp ?? 1) : undefined;
    if (tp !== undefined) checkTp(resolved.to, tp);
    const notes = [...resolved.notes];
    if (resolved.to.ffn !== resolved.from.ffn && resolved.to.ffn % 256 !== 0) {
      // OpenBA's published v1 modeling computes F = 256·ceil(int(2·ffn/3)/256), i.e. widths in multiples of 256;
      // the v2 modeling the config points at could not be read to confirm it accepts any width.
      notes.push(`warning: --ffn ${resolved.to.ffn} is not a multiple of 256; OpenBA's published v1 modeling code rounds the FFN width to a multiple of 256, so check the modeling code you load the model with`);
    }
    let masks: PruneMasks;
    if (manifest) {
      masks = masksFromManifest(manifest);
      notes.push(`masks re-applied from a ${manifest.strategy} masks file`);
    } else if (strategy === "random") {
      masks = randomMasks(resolved, job.seed ?? DEFAULT_SEED);
    } else if (job.dryRun) {
      masks = placeholderMasks(resolved, strategy);
      notes.push("dry run: magnitude masks are computed from the weights when run; the plan's shapes and sizes are already exact");
    } else {
      masks = await magnitudeMasks(src.model, resolved, job.onProgress ? { onProgress: (d, t) => job.onProgress?.("norms", d, t) } : {});
    }
    const pruned = applyPruneMasks(src.model, masks, resolved.to);
    // Re-applied masks keep their own account of how they were drawn (OpenBA's Python random, an earlier run …).
    const written = manifest ? { ...masksManifest(resolved, masks), strategy: manifest.strategy, prng: manifest.prng } : masksManifest(resolved, masks);
    const output = await planOutput(pruned, src, to, tp, job);
    const plan: Plan = {
      files: [...output.plan.files, { kind: "text", path: MASKS_FILE, content: `${JSON.stringify(written, null, 2)}\n` }],
      notes: [...notes, ...output.plan.notes],
    };
    const summary = summarizePlan(plan, (f) => safetensorsHeader(f).byteLength);
    const outDims = output.dims;
    const params = { before: countParams(resolved.from, to === "megatron"), after: countParams(outDims, to === "megatron") };
    const result: PruneResult = { resolved, masks: written, params, dims: outDims, summary, source: src.info, to, ...(tp === undefined ? {} : { tp }), notes: [...plan.notes], unknownGlobals: output.unknownGlobals ?? [], out: job.out };
    if (job.dryRun) return result;
    const step: Omit<LineageStep, "at"> = {
      step: "prune",
      source: { path: src.info.path, format: src.info.format === "hf" ? "hf-safetensors" : "megatron", ...pick(src.info, "iteration", "tp") },
      settings: {
        strategy: masks.strategy,
        seed: masks.seed ?? null,
        reappliedMasks: job.masks !== undefined,
        from: { ...resolved.from },
        to: { ...resolved.to },
        dropEncoderLayers: [...resolved.drop.encoder],
        dropDecoderLayers: [...resolved.drop.decoder],
        output: to,
        ...(tp === undefined ? {} : { tp }),
        masks: MASKS_FILE,
      },
      notes: [...plan.notes],
    };
    const execution = await runPlan(plan, job.out, {
      ...(job.onProgress ? { onProgress: (d: number, t: number) => job.onProgress?.("prune", d, t) } : {}),
      ...(job.control ? { control: job.control } : {}),
      step,
      sourceDir: job.input,
      model: { ...outDims },
      parameters: { ...params.after },
    });
    return { ...result, execution };
  } finally {
    await src.close();
  }
}

/** The target a masks file describes; it must have been made for a source with these dims, and no other target given. */
function targetOfManifest(m: MasksManifest, dims: OpenbaDims, job: PruneTarget): PruneTarget {
  masksFromManifest(m); // format, version and the fields this needs
  const given = (["hidden", "ffn", "heads", "encoderLayers", "decoderLayers"] as const).filter((k) => job[k] !== undefined);
  if (given.length > 0 || (job.dropEncoder?.length ?? 0) > 0 || (job.dropDecoder?.length ?? 0) > 0) {
    throw new MegahubError("USAGE", "--masks sets the whole target: give no width or layer options with it");
  }
  const src = m.source_dims;
  const keys = ["hidden", "heads", "kvChannels", "ffn", "encoderLayers", "decoderLayers"] as const;
  const diff = keys.filter((k) => src[k] !== dims[k]);
  if (diff.length > 0) {
    throw new MegahubError("USAGE", `the masks were made for a different model: ${diff.map((k) => `${k} ${src[k]} there, ${dims[k]} here`).join(", ")}`);
  }
  const t = m.target_dims;
  return { hidden: t.hidden, heads: t.heads, ffn: t.ffn, dropEncoder: m.dropped_layers.encoder, dropDecoder: m.dropped_layers.decoder };
}

function pick<T extends object, K extends keyof T>(o: T, ...keys: K[]): Partial<Pick<T, K>> {
  const out: Partial<Pick<T, K>> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

/** Megatron splits whole heads and equal FFN slices per rank: the pruned dims must divide by the output TP. */
function checkTp(d: OpenbaDims, tp: number): void {
  if (!Number.isInteger(tp) || tp < 1) throw new MegahubError("USAGE", `--tp must be a positive integer, got ${tp}`);
  const bad = [...(d.heads % tp !== 0 ? [`the ${d.heads} heads`] : []), ...(d.ffn % tp !== 0 ? [`the FFN width ${d.ffn}`] : [])];
  if (bad.length > 0) {
    throw new MegahubError("USAGE", `TP ${tp} does not divide ${bad.join(" or ")} of the pruned model: every rank must hold whole heads and an equal FFN slice; choose --heads/--ffn or --tp so they divide`);
  }
}

async function planOutput(
  pruned: GlobalModel,
  src: ModelSource,
  to: "hf" | "megatron",
  tp: number | undefined,
  job: PruneJob,
): Promise<{ plan: Plan; dims: OpenbaDims; unknownGlobals?: string[] }> {
  if (to === "hf") {
    const tokenizer = job.tokenizer ?? src.spiece;
    const planned = await planHfFiles(pruned, {
      ...(tokenizer ? { tokenizer } : {}),
      ...(job.maxShardBytes === undefined ? {} : { maxShardBytes: job.maxShardBytes }),
      ...(job.dtype ? { dtype: job.dtype } : {}),
    });
    return { plan: planned.plan, dims: pruned.dims };
  }
  const dtype = pruned.tensors.get("language_model.embedding.word_embeddings.weight")?.dtype ?? "F16";
  const iteration = src.info.iteration ?? 1;
  const tokenizer = job.tokenizer ?? src.spiece;
  const trueVocab =
    job.trueVocab ??
    (tokenizer ? (await planTokenizerFiles(tokenizer, pruned.dims.vocab)).facts.trueVocab : undefined) ??
    pruned.trueVocab;
  const written = planMegatronFiles(pruned, {
    tp: tp ?? 1,
    iteration,
    ...(trueVocab === undefined ? {} : { trueVocab }),
    ...(job.divisibleBy === undefined ? {} : { divisibleBy: job.divisibleBy }),
    ...(pruned.args ? { args: pruned.args } : {}),
    // An HF source has no Namespace: synthesise the fields Megatron needs from its config.json.
    ...(src.config ? { argsOverrides: { ...synthesizedArgs(src.config, dtype), iteration: iteration === "release" ? 0 : iteration } } : {}),
    keepUnknownGlobals: job.keepUnknownGlobals === true,
  });
  return { plan: written.plan, dims: { ...pruned.dims, vocab: written.paddedVocab }, unknownGlobals: written.unknownGlobals };
}


/** Dims of a source from headers alone (for `--plan` on a checkpoint). */
export async function sourceDims(input: string, iteration?: number): Promise<{ dims: OpenbaDims; format: "megatron" | "hf" }> {
  const src = await openModel(input, iteration);
  try {
    return { dims: src.model.dims, format: src.info.format };
  } finally {
    await src.close();
  }
}
