import { DTYPE_OPTIONS, unvettedGlobalsNote, type DtypeOption } from "../../ops/openba/megatron-to-hf.js";
import { ANY_HF_ARCHS, hfClassName, isAnyHfArch } from "../../models/moe/hf-config.js";
import { convertAny, type AnyConvertResult } from "../../ops/dispatch.js";
import { MegahubError } from "../../errors.js";
import { DEFAULT_BLOCK_BYTES, executorMemoryBytes } from "../../plan/execute.js";
import { intOpt, parseSize, stringOpt, type Command, type ParsedValues } from "../command.js";
import { formatBytes, layoutText, shapeText, table } from "../format.js";
import type { Reporter } from "../reporter.js";
import { isDevice } from "../../verify/ort-session.js";
import { verifyModel, type VerifyResult } from "../../verify/verify-model.js";
import { printVerifyResult, referencePrecisionOpt } from "./verify.js";
import { RUN_DETAILS, RUN_OPTIONS, runControl } from "../run-options.js";
import { SUMMARIES } from "./summaries.js";

export const convertCommand: Command = {
  name: "convert",
  summary: SUMMARIES.convert,
  usage:
    "megahub convert <megatron-path> --out <dir> [--iteration N] [--dtype keep|fp16|bf16|fp32] [--max-shard-size 5GB] [--tokenizer spiece.model|hf-tokenizer-dir] [--chat-template file] [--hf-arch llama|mistral|qwen2|qwen3|mixtral|qwen2_moe|qwen3_moe] [--true-vocab-size V] [--dry-run] [--json]",
  options: {
    out: { type: "string", short: "o" },
    iteration: { type: "string" },
    dtype: { type: "string" },
    "max-shard-size": { type: "string" },
    tokenizer: { type: "string" },
    "chat-template": { type: "string" },
    "hf-arch": { type: "string" },
    "true-vocab-size": { type: "string" },
    "dry-run": { type: "boolean" },
    verify: { type: "string" },
    "reference-precision": { type: "string" },
    device: { type: "string" },
    report: { type: "string" },
    ...RUN_OPTIONS,
  },
  details: [
    "--tokenizer            OpenBA: its spiece.model; GPT: an HF tokenizer directory (copied, size checked against the embedding)",
    "--hf-arch <class>      GPT: force llama|mistral|qwen2|qwen3, MoE: mixtral|qwen2_moe|qwen3_moe (default: chosen from q/k norms, biases, sliding window, shared experts)",
    "--true-vocab-size V    GPT: rows kept in HF output (default args.vocab_size, else the tokenizer's size); padding is dropped",
    "--verify <ref.safetensors>  after writing, run the model in ONNX Runtime against reference logits (see `megahub verify`)",
    "--device auto|cuda|cpu      execution provider for --verify (default auto: CUDA when present, else CPU)",
    "--report <file.html>        with --verify, write the HTML report (with --part: at --finalize, not per part)",
    "--reference-precision P     with --verify: fp32 (default), fp16, bf16 or native, as in `megahub verify`; a --dtype",
    "                            that rounds the checkpoint's weights is compared at that dtype's gates automatically",
    ...RUN_DETAILS,
  ],
  async run(positionals, values, out) {
    const job = await convertJob(positionals, values);
    const reference = stringOpt(values, "verify");
    const device = stringOpt(values, "device") ?? "auto";
    if (!isDevice(device)) throw new RangeError(`--device must be auto, cuda or cpu, got "${device}"`);
    const control = runControl(values);
    const res = await convertAny({ ...job, control, onProgress: (d, t) => out.progress("convert", d, t) });
    // A part has no output to verify yet: --verify runs where the output appears (--finalize, --workers).
    if (!reference || job.dryRun || control.part) {
      report(res, job.dryRun, out, undefined);
      return 0;
    }
    const reportPath = stringOpt(values, "report");
    const [target, source] = res.architecture === "gpt" ? [res.hf.dtypes, res.sourceDtypes] : [res.converted.dtypes, res.converted.sourceDtypes];
    // The reference was computed from the checkpoint's weights: a cast to a narrower dtype makes the comparison lossy.
    const weightsRounded = target.some((d) => !source.includes(d) && (d === "F16" || d === "BF16"));
    const verified = await verifyModel(job.out, {
      reference,
      device,
      referencePrecision: referencePrecisionOpt(values),
      weightsRounded,
      ...(reportPath ? { report: reportPath } : {}),
      onWarning: (l) => out.warn(l),
    });
    report(res, false, out, verified);
    printVerifyResult(verified, out);
    if (!verified.passed) throw new MegahubError("VERIFY", `converted, but verification FAILED: ${verified.failures.join("; ")}`, { file: job.out });
    return 0;
  },
};

async function convertJob(positionals: string[], values: ParsedValues) {
  const input = positionals[0];
  const outDir = stringOpt(values, "out");
  if (!input || !outDir) throw new RangeError("convert needs <megatron-path> and --out <dir>");
  const dtype = stringOpt(values, "dtype") ?? "keep";
  if (!(dtype in DTYPE_OPTIONS)) throw new RangeError(`--dtype must be one of ${Object.keys(DTYPE_OPTIONS).join(", ")}`);
  const shard = stringOpt(values, "max-shard-size");
  const iteration = intOpt(values, "iteration");
  const tokenizer = stringOpt(values, "tokenizer");
  const chatFile = stringOpt(values, "chat-template");
  const chatTemplate = chatFile ? await (await import("node:fs/promises")).readFile(chatFile, "utf8") : undefined;
  const hfArch = stringOpt(values, "hf-arch");
  if (hfArch !== undefined && !isAnyHfArch(hfArch)) throw new RangeError(`--hf-arch must be one of ${ANY_HF_ARCHS.join(", ")}`);
  const trueVocab = intOpt(values, "true-vocab-size");
  return {
    input,
    out: outDir,
    dtype: dtype as DtypeOption,
    dryRun: values["dry-run"] === true,
    ...(shard ? { maxShardBytes: parseSize(shard) } : {}),
    ...(iteration === undefined ? {} : { iteration }),
    ...(tokenizer ? { tokenizer } : {}),
    ...(chatTemplate ? { chatTemplate } : {}),
    ...(hfArch ? { hfArch } : {}),
    ...(trueVocab === undefined ? {} : { trueVocab }),
  };
}

function report(res: AnyConvertResult, dryRun: boolean, out: Reporter, verified: VerifyResult | undefined): void {
  const { summary, source } = res;
  const verification = verified && { passed: verified.passed, provider: verified.provider, maxAbsDiff: verified.metrics.maxAbs, top1: verified.metrics.top1Agreement, failures: verified.failures };
  const model =
    res.architecture === "gpt"
      ? { architecture: "gpt", hfArchitecture: hfClassName(res.hf.hfArch), dims: res.dims, features: res.features, spec: res.flavour, vocab: res.hf.vocab, parameters: res.parameters, dtypes: res.hf.dtypes }
      : { architecture: "openba", dims: res.converted.dims, parameters: res.converted.params, dtypes: res.converted.dtypes };
  out.result({ ok: verified?.passed ?? true, dryRun, out: res.out, source, ...model, plan: summary, ...(res.execution ? { written: res.execution.files, overflows: res.execution.overflows } : {}), ...(verification ? { verification } : {}) });
  out.info(`${dryRun ? "plan" : "converted"}: ${source.path} (iteration ${source.iteration}, ${layoutText(source)}) → ${res.out}`);
  if (res.architecture === "gpt") {
    const d = res.dims;
    out.info(`  model: ${hfClassName(res.hf.hfArch)}, hidden ${d.hidden}, ${d.heads} heads / ${d.kvHeads} groups × ${d.headDim}, FFN ${d.ffn}, ${d.layers} layers, vocab ${res.hf.vocab} (of ${d.vocab} rows), ${res.hf.dtypes.join("/")}`);
    if (d.moe) out.info(`  experts: ${d.moe.experts} × FFN ${d.moe.ffn} in ${d.moe.layers.filter(Boolean).length} of ${d.layers} layers${d.moe.sharedFfn > 0 ? `, shared experts FFN ${d.moe.sharedFfn}` : ""}; parameters ${res.parameters.total} total, ${res.hf.activeParameters ?? res.parameters.total} active per token`);
  } else {
    const d = res.converted.dims;
    out.info(`  model: hidden ${d.hidden}, ${d.heads} heads × ${d.kvChannels}, FFN ${d.ffn}, ${d.encoderLayers}/${d.decoderLayers} layers, vocab rows ${d.vocab}, ${res.converted.dtypes.join("/")}`);
  }
  out.info(table(["  file", "bytes", "tensors"], summary.files.map((f) => [`  ${f.path}`, formatBytes(f.bytes), f.tensors || ""])));
  out.info(`  read ${formatBytes(summary.bytesToRead)}, write ${formatBytes(summary.bytesToWrite)}; largest tensor ${summary.largestTensor?.name} (${formatBytes(summary.largestTensor?.bytes ?? 0)})`);
  if (dryRun) {
    out.info(`  block memory ≈ ${formatBytes(executorMemoryBytes())} (streamed in ${formatBytes(DEFAULT_BLOCK_BYTES)} blocks, whatever the model size)`);
    for (const t of summary.tensors.slice(0, 12)) out.info(`  ${t.name} ${t.dtype} ${shapeText(t.shape)} ← ${t.recipe}`);
    if (summary.tensors.length > 12) out.info(`  … ${summary.tensors.length - 12} more tensors (--json lists all)`);
    out.info("  dry run: nothing written");
  }
  // Globals off the allow-list are a warning (shown under --quiet too), not a note among the others.
  const unvetted = source.unknownGlobals.length > 0 ? unvettedGlobalsNote(source.unknownGlobals) : undefined;
  for (const n of summary.notes) if (n !== unvetted) out.info(`  note: ${n}`);
  if (res.execution && res.execution.overflows > 0) out.warn(`${res.execution.overflows} values overflowed to ±inf when casting`);
  if (unvetted !== undefined) out.warn(unvetted);
}
