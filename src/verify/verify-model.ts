import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { moeNote } from "../models/moe/config-dims.js";
import { MASKS_FILE } from "../ops/prune/structure.js";
import { MegahubError } from "../errors.js";
import { appendVerification, readManifest } from "../plan/manifest.js";
import type { Dtype } from "../tensors/dtypes.js";
import { readIdMap, remapInputs, selectVocab, syntheticInputs } from "./inputs.js";
import { readAnyModelDir, type AnyModelDir } from "./gpt-model-dir.js";
import { openGptGraph, openModelGraph } from "./load-graph.js";
import { compareLogits, type LogitMetrics } from "./metrics.js";
import type { Device, Provider } from "./ort-session.js";
import type { Placement } from "./placement.js";
import { forwardFeeds, readReference, type ForwardInputs } from "./reference.js";
import { renderReportHtml } from "./report-html.js";
import { loadTokenizer } from "../tokenizers/tokenizer.js";
import { checkTolerance, looserDtype, maxAbsBound, toleranceFor, type AppliedTolerance, type Comparison } from "./tolerances.js";

export interface VerifyOptions {
  /** Reference safetensors (input_ids, attention_mask, decoder_input_ids, logits). One of reference/against. */
  reference?: string;
  /** Another HF model dir to compare against on the same inputs (the original, when `dir` is pruned). */
  against?: string;
  /** With `against`: inputs safetensors (the reference format, logits not needed), in the `against` model's ids. */
  inputs?: string;
  /** With `against`: vocabulary id map old (against) → new (dir), a JSON file or a ready map. */
  idMap?: string | ReadonlyMap<number, number>;
  /** @default "auto" */
  device?: Device;
  /**
   * How the reference logits were computed: "fp32" (from these weights upcast, as scripts/openba_reference.py does)
   * applies the exact gates; "native" (in the weights' own F16/BF16 precision, e.g. HF with torch_dtype=bfloat16)
   * applies the dtype's lossy gates. @default the reference's `__metadata__.compute_dtype`, else "fp32"
   */
  /**
   * The precision the reference logits were computed in: fp32 (default, or the reference's `compute_dtype`
   * metadata), fp16 or bf16 (the looser of that and the weights' dtype sets the gates), or native (the weights'
   * own dtype).
   */
  referencePrecision?: ReferencePrecision;
  /**
   * The model's weights are a rounding of the weights the reference was computed from (convert --dtype bf16 of
   * an fp32 checkpoint): the comparison is then lossy at the weights' dtype even for an fp32 reference.
   */
  weightsRounded?: boolean;
  /** Overrides the max |Δ| gate with an absolute bound. */
  atol?: number;
  /**
   * Let CUDA use TF32 for the graph's fp32 matmuls; the TF32 gates then apply (tolerances.ts TF32). Off by default:
   * NVIDIA_TF32_OVERRIDE=0 is set before CUDA starts. No effect on CPU. @default false
   */
  tf32?: boolean;
  /** Write the HTML report here. */
  report?: string;
  /** Append the result to `dir`/megahub.json. @default true */
  record?: boolean;
  onWarning?: (line: string) => void;
}

export interface VerifyResult {
  passed: boolean;
  kind: "reference" | "against";
  model: string;
  reference: string;
  provider: Provider;
  /** Set when CUDA was asked for (auto) and CPU ran instead: the doctor's verdict (cause and fix). */
  fallbackReason?: string;
  /** Whether CUDA was allowed TF32 (only ever true on CUDA with --tf32). */
  tf32: boolean;
  /** Which provider ran each node of the model under test (ORT profiling). */
  placement: Placement;
  /** With `against`: the same for the other model. */
  referencePlacement?: Placement;
  dtype: Dtype;
  tolerance: AppliedTolerance;
  metrics: LogitMetrics;
  /** One sentence per failed gate; empty when passed. */
  failures: string[];
  notes: string[];
  reportPath?: string;
  timings: { sessionMs: number; forwardMs: number };
}

/**
 * Runs an HF OpenBA model dir in ONNX Runtime and compares its logits with a reference file or with another model
 * dir. Never throws for a mismatch: it returns `passed: false` with every failed gate in `failures` (bad input —
 * missing files, shapes that disagree, CUDA asked for but absent — throws a MegahubError). Records the result in
 * the dir's megahub.json and writes the HTML report when asked.
 *
 * @example
 * const r = await verifyModel("out/hf", { reference: "fixtures/reference/fp32-tp1.safetensors" });
 * if (!r.passed) throw new MegahubError("VERIFY", r.failures.join("; "));
 */
export async function verifyModel(dir: string, options: VerifyOptions): Promise<VerifyResult> {
  if ((options.reference === undefined) === (options.against === undefined)) {
    throw new MegahubError("USAGE", "verify needs exactly one of --reference <file> or --against <dir>");
  }
  const device = options.device ?? "auto";
  const opened = await readAnyModelDir(dir);
  const model = opened.model;
  const notes: string[] = [];
  if (opened.kind === "gpt" && opened.model.dims.moe) notes.push(moeNote(opened.model.dims.moe, opened.model.dims.hidden, opened.model.tensors));
  let kind: VerifyResult["kind"];
  let refName: string;
  let testLogits: Float32Array;
  let refLogits: Float32Array;
  let inputs: ForwardInputs;
  let vocab: number;
  let dtype: Dtype = model.weightDtype;
  let comparison: Comparison = "exact";
  let run: RunResult;
  let refRun: RunResult | undefined;
  if (options.reference !== undefined) {
    kind = "reference";
    refName = options.reference;
    const ref = await readReference(options.reference, true);
    // Padded vocabularies may differ (TP-dependent padding: a resharded or re-padded model has fewer or more
    // rows); only the real ids — those the tokenizer can produce — carry meaning, so compare on those.
    checkInputsFit(opened, ref, options.reference);
    const real = ref.vocab === model.dims.vocab ? ref.vocab : await realVocab(dir, ref.vocab, model.dims.vocab, options.reference);
    inputs = ref;
    ({ dtype, comparison } = referenceGate(options.referencePrecision, ref.computeDtype, model.weightDtype, options.weightsRounded === true));
    const tooBig = maxInputId(ref);
    if (tooBig >= real) {
      throw new MegahubError("USAGE", `reference input id ${tooBig} is outside the ${real} real ids both models share`, { file: options.reference });
    }
    run = await forward(opened, inputs, device, options);
    const rows = ref.batch * ref.decoderLength;
    const ids = range(0, real);
    testLogits = real === model.dims.vocab ? run.logits : selectVocab(run.logits, rows, model.dims.vocab, ids);
    refLogits = real === ref.vocab ? ref.logits : selectVocab(ref.logits, rows, ref.vocab, ids);
    vocab = real;
    if (real !== ref.vocab || real !== model.dims.vocab) {
      notes.push(`compared on the ${real} real ids (reference has ${ref.vocab} padded rows, the model ${model.dims.vocab})`);
    }
  } else {
    kind = "against";
    refName = options.against as string;
    const otherDir = await readAnyModelDir(refName);
    if (otherDir.kind !== opened.kind) {
      throw new MegahubError("USAGE", `cannot compare a ${opened.kind} model with a ${otherDir.kind} model`, { file: refName });
    }
    const other = otherDir.model;
    dtype = looserDtype(model.weightDtype, other.weightDtype);
    // Both run through the same fp32 graph: only differently rounded weights make the comparison lossy.
    comparison = model.weightDtype === other.weightDtype ? "exact" : "lossy";
    const map = typeof options.idMap === "string" ? await readIdMap(options.idMap) : options.idMap;
    const pool = map ? [...map.keys()].filter((id) => id > 2 && id < other.dims.vocab) : range(3, Math.min(model.dims.vocab, other.dims.vocab));
    if (options.inputs !== undefined) {
      inputs = await readReference(options.inputs, false);
      checkInputsFit(opened, inputs, options.inputs);
    } else {
      inputs = otherDir.kind === "gpt" ? causalInputs(syntheticInputs(pool, 0)) : syntheticInputs(pool, otherDir.model.decoderStartId);
    }
    const testInputs = map ? remapInputs(inputs, map) : inputs;
    refRun = await forward(otherDir, inputs, device, options);
    run = await forward(opened, testInputs, device, options);
    const rows = inputs.batch * inputs.decoderLength;
    if (map) {
      // Compare on kept ids, in new-id order: reference column old_k against test column new_k.
      const kept = [...map].filter(([o, n]) => o < other.dims.vocab && n < model.dims.vocab).sort((a, b) => a[1] - b[1]);
      refLogits = selectVocab(refRun.logits, rows, other.dims.vocab, kept.map(([o]) => o));
      testLogits = selectVocab(run.logits, rows, model.dims.vocab, kept.map(([, n]) => n));
      vocab = kept.length;
      notes.push(`compared on ${kept.length} kept ids (id map old → new)`);
    } else {
      if (model.dims.vocab !== other.dims.vocab) {
        throw new MegahubError(
          "USAGE",
          `vocab sizes differ (${model.dims.vocab} vs ${other.dims.vocab}); pass --id-map to compare a vocab-pruned model`,
        );
      }
      refLogits = refRun.logits;
      testLogits = run.logits;
      vocab = model.dims.vocab;
    }
    notes.push(...(await prunedNotes(dir, refName)));
  }
  // TF32 only loosens the gates when a CUDA session really ran with it allowed.
  const tf32 = run.tf32 || (refRun?.tf32 ?? false);
  const tolerance = toleranceFor(dtype, comparison, options.atol, tf32);
  // A decoder-only model's logits at padding positions mean nothing (a left-padded query sees no key at all, and
  // transformers' eager and sdpa paths disagree there): compare where attention_mask is 1.
  const mask = inputs.attentionMask;
  const S = inputs.encoderLength;
  const include = inputs.decoderOnly === true ? (b: number, t: number) => mask[b * S + t] !== 0n : undefined;
  const metrics = compareLogits(testLogits, refLogits, inputs.batch, inputs.decoderLength, vocab, include);
  if (include && metrics.positions < inputs.batch * S) {
    notes.push(`compared at the ${metrics.positions} of ${inputs.batch * S} positions where attention_mask is 1`);
  }
  const failures = checkTolerance(metrics, tolerance);
  if (failures.length > 0 && kind === "reference" && comparison === "exact" && dtype !== "F32") {
    notes.push(
      `the ${dtype} weights were held to the fp32 gates because the reference is taken to be computed in fp32; if it ` +
        `was computed in ${dtype} itself, rerun with --reference-precision ${dtype === "BF16" ? "bf16" : "fp16"}`,
    );
  }
  const result: VerifyResult = {
    passed: failures.length === 0,
    kind,
    model: dir,
    reference: refName,
    provider: run.provider,
    ...(run.fallbackReason !== undefined ? { fallbackReason: run.fallbackReason } : {}),
    tf32,
    placement: run.placement,
    ...(refRun ? { referencePlacement: refRun.placement } : {}),
    dtype,
    tolerance,
    metrics,
    failures,
    notes,
    timings: { sessionMs: run.sessionMs, forwardMs: run.forwardMs },
  };
  if (options.report !== undefined) {
    await writeFile(
      options.report,
      renderReportHtml({
        title: `megahub verify — ${basename(resolve(dir))}`,
        ...result,
        model: resolve(dir),
        reference: resolve(refName),
      }),
    );
    result.reportPath = options.report;
  }
  if (options.record ?? true) {
    // Recording is a courtesy: a read-only or full model folder must not turn the verdict into a failure.
    await appendVerification(dir, {
      at: new Date().toISOString(),
      kind,
      reference: refName,
      provider: run.provider,
      dtype,
      passed: result.passed,
      maxAbsDiff: metrics.maxAbs,
      top1Agreement: metrics.top1Agreement,
      minCosine: metrics.minCosine,
      atol: maxAbsBound(metrics, tolerance),
    }).catch((e: unknown) => {
      const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      options.onWarning?.(`could not record the result in ${join(dir, "megahub.json")} (${why}); the verdict stands`);
    });
  }
  return result;
}

interface RunResult {
  logits: Float32Array;
  provider: Provider;
  fallbackReason?: string;
  tf32: boolean;
  placement: Placement;
  sessionMs: number;
  forwardMs: number;
}

/** One teacher-forced forward pass of a model dir. */
async function forward(
  opened: AnyModelDir,
  inputs: ForwardInputs,
  device: Device,
  options: Pick<VerifyOptions, "onWarning" | "tf32">,
): Promise<RunResult> {
  const t0 = performance.now();
  const warn = { ...(options.onWarning ? { onWarning: options.onWarning } : {}), session: { profile: true, tf32: options.tf32 ?? false } };
  const runner =
    opened.kind === "gpt"
      ? await openGptGraph(opened.model, { device, ...warn })
      : await openModelGraph(opened.model, { part: "seq2seq", device, ...warn });
  const t1 = performance.now();
  try {
    const out = await runner.run(forwardFeeds(inputs));
    const forwardMs = performance.now() - t1;
    const logits = out.logits;
    if (!logits) throw new MegahubError("VERIFY", "the graph produced no logits");
    const placement = await runner.endProfiling();
    if (!placement) throw new MegahubError("VERIFY", "ORT kept no profile of the forward pass");
    return {
      logits: logits.data,
      provider: runner.provider,
      tf32: runner.tf32,
      placement,
      ...(runner.fallbackReason !== undefined ? { fallbackReason: runner.fallbackReason } : {}),
      sessionMs: t1 - t0,
      forwardMs,
    };
  } finally {
    await runner.release();
  }
}

/**
 * Says which of the two models a pruning step produced: a masks manifest (prune-masks.json) beside its weights, or
 * a prune step in its megahub.json lineage. Structural pruning changes the function, so a failed comparison against
 * the unpruned original is expected there; vocabulary pruning (with --id-map) must not change the kept logits.
 */
async function prunedNotes(dir: string, against: string): Promise<string[]> {
  const notes: string[] = [];
  for (const [label, d] of [
    ["the model under test", dir],
    ["the reference model", against],
  ] as const) {
    const steps = ((await readManifest(d).catch(() => undefined))?.lineage ?? []).filter((s) => s.step.startsWith("prune"));
    const masks = existsSync(join(d, MASKS_FILE));
    if (steps.length > 0 || masks) {
      const why = [...(masks ? [`masks manifest ${MASKS_FILE}`] : []), ...steps.map((s) => `lineage step "${s.step}"`)];
      notes.push(`${label} (${d}) is the pruned one: ${why.join(", ")}`);
    }
  }
  return notes;
}

/** "lossy" when the reference was computed in the weights' own reduced precision. */
export type ReferencePrecision = "fp32" | "fp16" | "bf16" | "native";

/** Parses a --reference-precision value (also the spellings a reference's compute_dtype metadata uses). */
export function parseReferencePrecision(text: string): ReferencePrecision | undefined {
  const t = text.toLowerCase();
  if (t === "fp32" || t === "f32" || t === "float32") return "fp32";
  if (t === "fp16" || t === "f16" || t === "float16") return "fp16";
  if (t === "bf16" || t === "bfloat16") return "bf16";
  return t === "native" ? "native" : undefined;
}

/**
 * The gates for a reference comparison, by the precision the reference was computed in (the option, else its
 * compute_dtype metadata, else fp32): a reduced-precision reference is compared with the looser of its dtype and
 * the weights' at that dtype's lossy gates; an fp32 one exactly, unless the weights were rounded from the
 * reference's (then lossy at the weights' dtype).
 */
function referenceGate(
  option: ReferencePrecision | undefined,
  computeDtype: string | undefined,
  weights: Dtype,
  rounded: boolean,
): { dtype: Dtype; comparison: Comparison } {
  const given = option ?? (computeDtype !== undefined ? parseReferencePrecision(computeDtype) : undefined) ?? "fp32";
  const ref: Dtype = given === "native" ? weights : given === "fp16" ? "F16" : given === "bf16" ? "BF16" : "F32";
  if (ref !== "F32") return { dtype: looserDtype(ref, weights), comparison: "lossy" };
  return { dtype: weights, comparison: rounded && weights !== "F32" ? "lossy" : "exact" };
}

/**
 * The real vocabulary of a model dir whose padded row count differs from the reference's: the tokenizer's ids
 * (sentencepiece pieces and every added token), which must fit both.
 */
async function realVocab(dir: string, refRows: number, modelRows: number, refFile: string): Promise<number> {
  const tok = await loadTokenizer(dir).catch(() => undefined);
  if (tok === undefined) {
    throw new MegahubError(
      "USAGE",
      `reference logits have ${refRows} columns but the model has ${modelRows} rows; put the model's spiece.model in ${dir} so the real ids can be compared`,
      { file: refFile },
    );
  }
  const real = Math.max(tok.spSize, ...[...tok.specials.values()].map((id) => id + 1));
  if (real > Math.min(refRows, modelRows)) {
    throw new MegahubError(
      "USAGE",
      `the tokenizer has ${real} ids but the reference has ${refRows} columns and the model ${modelRows} rows: not the same vocabulary`,
      { file: refFile },
    );
  }
  return real;
}

function maxInputId(inputs: ForwardInputs): number {
  let m = 0;
  for (const t of [inputs.inputIds, inputs.decoderInputIds]) for (const v of t) m = Math.max(m, Number(v));
  return m;
}

/** Decoder-only inputs fit a decoder-only model, encoder-decoder inputs an encoder-decoder one. */
function checkInputsFit(opened: AnyModelDir, inputs: ForwardInputs, file: string): void {
  if (opened.kind === "gpt" && inputs.decoderOnly !== true) {
    throw new MegahubError("USAGE", "the model is decoder-only: the file must not have decoder_input_ids (logits are per input_ids position)", {
      file,
    });
  }
  if (opened.kind === "openba" && inputs.decoderOnly === true) {
    throw new MegahubError("USAGE", "the model is encoder-decoder (OpenBA): the file needs decoder_input_ids", { file });
  }
}

/** The same rows as a decoder-only batch: logits at every input_ids position. */
function causalInputs(x: ForwardInputs): ForwardInputs {
  return { ...x, decoderLength: x.encoderLength, decoderInputIds: x.inputIds, decoderOnly: true };
}

function range(from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);
}
