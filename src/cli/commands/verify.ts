import { MegahubError } from "../../errors.js";
import type { Command, ParsedValues } from "../command.js";
import { stringOpt } from "../command.js";
import type { Reporter } from "../reporter.js";
import { isDevice, type Device } from "../../verify/ort-session.js";
import { describePlacement } from "../../verify/placement.js";
import { maxAbsBound } from "../../verify/tolerances.js";
import { parseReferencePrecision, verifyModel, type ReferencePrecision, type VerifyResult } from "../../verify/verify-model.js";
import { SUMMARIES } from "./summaries.js";

export const verifyCommand: Command = {
  name: "verify",
  summary: SUMMARIES.verify,
  usage:
    "megahub verify <hf-dir> (--reference <ref.safetensors> | --against <other-dir> [--inputs <file>] [--id-map <file>]) " +
    "[--device auto|cuda|cpu] [--tf32] [--reference-precision fp32|fp16|bf16|native] [--atol X] [--report <file.html>] [--no-record] [--json]",
  options: {
    reference: { type: "string" },
    against: { type: "string" },
    inputs: { type: "string" },
    "id-map": { type: "string" },
    device: { type: "string" },
    tf32: { type: "boolean" },
    atol: { type: "string" },
    "reference-precision": { type: "string" },
    report: { type: "string" },
    "no-record": { type: "boolean" },
  },
  details: [
    "--reference: safetensors with input_ids I64 [B,S], attention_mask [B,S] (optional), decoder_input_ids I64 [B,T]",
    "             and logits F32 [B,T,V] from an independent implementation. For a decoder-only model (Llama, Mistral,",
    "             Qwen2, Qwen3, Mixtral, Qwen2-MoE, Qwen3-MoE) no decoder_input_ids and logits F32 [B,S,V] (scripts/gpt_reference.py writes one with",
    "             transformers); positions where attention_mask is 0 are not compared.",
    "--against:   run both models on the same inputs (--inputs, or built-in ones); with --id-map (JSON old→new ids",
    "             from vocabulary pruning) compare on the kept ids. <hf-dir> is the new/pruned model.",
    "--device:    auto (default) tries CUDA and falls back to CPU, saying why; cuda fails with `megahub doctor`'s verdict.",
    "--tf32:      let CUDA's fp32 matmuls use TF32 (off by default: NVIDIA_TF32_OVERRIDE=0 is set before CUDA starts);",
    "             the TF32 gates then apply and the tolerance line says so. No effect on CPU.",
    "Which provider ran each node (ORT profiling) is printed, and is in --json (placement) and the HTML report.",
    "--reference-precision: the precision the reference logits were computed in: fp32 (default, or the file's",
    "             compute_dtype metadata) = exact gates for these weights; fp16/bf16 = that dtype's looser gates (the",
    "             looser of it and the weights'); native = the weights' own dtype.",
    "Gates: max |Δ|, min cosine, NMSE, mean KL, top-1 (mean and p99 |Δ| are reported); exit 1 on failure.",
    "The result is appended to <hf-dir>/megahub.json unless --no-record.",
  ],
  async run(positionals, values, reporter) {
    const [dir, ...extra] = positionals;
    if (dir === undefined || extra.length > 0) {
      throw new MegahubError("USAGE", "expected exactly one <hf-dir>");
    }
    const device = stringOpt(values, "device") ?? "auto";
    if (!isDevice(device)) throw new MegahubError("USAGE", `--device must be auto, cuda or cpu, got "${device}"`);
    const atolText = stringOpt(values, "atol");
    const atol = atolText === undefined ? undefined : Number(atolText);
    if (atol !== undefined && !(atol > 0)) throw new MegahubError("USAGE", `--atol must be a positive number, got "${atolText}"`);
    const precision = referencePrecisionOpt(values);
    const result = await verifyModel(dir, {
      referencePrecision: precision,
      reference: stringOpt(values, "reference"),
      against: stringOpt(values, "against"),
      inputs: stringOpt(values, "inputs"),
      idMap: stringOpt(values, "id-map"),
      atol,
      report: stringOpt(values, "report"),
      device: device as Device,
      tf32: values.tf32 === true,
      record: values["no-record"] !== true,
      onWarning: (line) => reporter.warn(line),
    });
    printVerifyResult(result, reporter);
    if (reporter.json) {
      const { perPosition: _perPosition, histogram: _histogram, ...metrics } = result.metrics;
      reporter.result({ ok: result.passed, ...result, metrics, warnings: reporter.warnings });
      return result.passed ? 0 : 1;
    }
    if (!result.passed) {
      throw new MegahubError("VERIFY", `verification FAILED: ${result.failures.join("; ")}`);
    }
    return 0;
  },
};

/** The first line of ORT's CUDA load error, which is all a user needs. */
/** The first line of why CUDA was not used: the doctor's verdict, whole, because its end says the fix. */
export function cudaReason(reason: string): string {
  return reason.split("\n")[0] ?? reason;
}

export function printVerifyResult(r: VerifyResult, reporter: Reporter): void {
  const m = r.metrics;
  const t = r.tolerance;
  const e = (x: number) => x.toExponential(2);
  reporter.info(`verify ${r.model} against ${r.reference}`);
  const main = r.provider === "cuda" ? "CUDAExecutionProvider" : "CPUExecutionProvider";
  const tf32 = r.provider === "cuda" ? (r.tf32 ? ", TF32 allowed (--tf32)" : ", TF32 off") : "";
  reporter.info(`execution provider: ${r.provider === "cuda" ? "CUDA" : "CPU"}${tf32}; ${describePlacement(r.placement, main)}`);
  // --device auto on a machine without CUDA is the common case: one note saying why, not a warning on every run.
  if (r.fallbackReason !== undefined) reporter.info(`note: --device auto found no usable CUDA (${cudaReason(r.fallbackReason)}); ran on CPU`);
  if (r.referencePlacement) reporter.info(`  reference model: ${describePlacement(r.referencePlacement, main)}`);
  for (const n of r.notes) reporter.info(n);
  const bound = maxAbsBound(m, t);
  const rel = t.maxAbs === undefined ? ` (${t.maxAbsPerStd ?? 0}·std)` : "";
  reporter.info(
    `weights ${r.dtype}, ${t.comparison} comparison${t.tf32 ? " + TF32" : ""}, tolerance: max |Δ| ≤ ${e(bound)}${rel}, cosine ≥ ${t.minCosine}, ` +
      `NMSE ≤ ${e(t.maxNmse)}, mean KL ≤ ${e(t.maxMeanKl)}, top-1 ≥ ${(t.minTop1 * 100).toFixed(0)} %`,
  );
  reporter.info(
    `|Δ| max ${e(m.maxAbs)}  mean ${e(m.meanAbs)}  p99 ${e(m.p99Abs)}   min cosine ${m.minCosine.toFixed(6)}   ` +
      `NMSE ${e(m.nmse)}   mean KL ${e(m.meanKl)}`,
  );
  for (const row of m.rows) {
    const agree = Math.round(row.top1Agreement * row.positions);
    reporter.info(
      `  row ${row.row}: top-1 ${(row.top1Agreement * 100).toFixed(1)} % (${agree}/${row.positions}), max |Δ| ${e(row.maxAbs)}, min cosine ${row.minCosine.toFixed(6)}`,
    );
  }
  reporter.info(`top-1 agreement ${(m.top1Agreement * 100).toFixed(1)} % over ${m.positions} positions; forward ${r.timings.forwardMs.toFixed(0)} ms`);
  if (r.reportPath !== undefined) reporter.info(`report: ${r.reportPath}`);
  reporter.info(r.passed ? "PASS" : `FAIL: ${r.failures.join("; ")}`);
}

/** `--reference-precision`, shared by verify and convert --verify. */
export function referencePrecisionOpt(values: ParsedValues): ReferencePrecision | undefined {
  const text = stringOpt(values, "reference-precision");
  if (text === undefined) return undefined;
  const p = parseReferencePrecision(text);
  if (p === undefined) throw new MegahubError("USAGE", `--reference-precision must be fp32, fp16, bf16 or native, got "${text}"`);
  return p;
}
