import { convertMegatronToHf } from "../../converters/convert.js";
import { unvettedGlobalsNote } from "../../converters/megatron-to-hf.js";
import { DTYPE_OPTIONS, type DtypeOption } from "../../converters/megatron-to-hf.js";
import { MegahubError } from "../../errors.js";
import { intOpt, parseSize, stringOpt, type Command, type ParsedValues } from "../command.js";
import { formatBytes, shapeText, table } from "../format.js";
import type { Reporter } from "../reporter.js";
import { isDevice } from "../../verify/ort-session.js";
import { verifyModel, type VerifyResult } from "../../verify/verify-model.js";
import { printVerifyResult } from "./verify.js";

export const convertCommand: Command = {
  name: "convert",
  summary: "convert a Megatron OpenBA checkpoint to Hugging Face layout (safetensors + config + tokenizer)",
  usage:
    "megahub convert <megatron-path> --out <dir> [--iteration N] [--dtype keep|fp16|bf16|fp32] [--max-shard-size 5GB] [--tokenizer spiece.model] [--chat-template file] [--dry-run] [--json]",
  options: {
    out: { type: "string", short: "o" },
    iteration: { type: "string" },
    dtype: { type: "string" },
    "max-shard-size": { type: "string" },
    tokenizer: { type: "string" },
    "chat-template": { type: "string" },
    "dry-run": { type: "boolean" },
    verify: { type: "string" },
    device: { type: "string" },
    report: { type: "string" },
  },
  details: [
    "--verify <ref.safetensors>  after writing, run the model in ONNX Runtime against reference logits (see `megahub verify`)",
    "--device auto|cuda|cpu      execution provider for --verify (default auto: CUDA when present, else CPU)",
    "--report <file.html>        with --verify, write the HTML report",
  ],
  async run(positionals, values, out) {
    const job = await convertJob(positionals, values);
    const reference = stringOpt(values, "verify");
    const device = stringOpt(values, "device") ?? "auto";
    if (!isDevice(device)) throw new RangeError(`--device must be auto, cuda or cpu, got "${device}"`);
    const res = await convertMegatronToHf({ ...job, onProgress: (d, t) => out.progress("convert", d, t) });
    if (!reference || job.dryRun) {
      report(res, job.dryRun, out, undefined);
      return 0;
    }
    const reportPath = stringOpt(values, "report");
    const verified = await verifyModel(job.out, { reference, device, ...(reportPath ? { report: reportPath } : {}), onWarning: (l) => out.warn(l) });
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
  return {
    input,
    out: outDir,
    dtype: dtype as DtypeOption,
    dryRun: values["dry-run"] === true,
    ...(shard ? { maxShardBytes: parseSize(shard) } : {}),
    ...(iteration === undefined ? {} : { iteration }),
    ...(tokenizer ? { tokenizer } : {}),
    ...(chatTemplate ? { chatTemplate } : {}),
  };
}

function report(res: Awaited<ReturnType<typeof convertMegatronToHf>>, dryRun: boolean, out: Reporter, verified: VerifyResult | undefined): void {
  const { summary, converted, source } = res;
  const verification = verified && { passed: verified.passed, provider: verified.provider, maxAbsDiff: verified.metrics.maxAbs, top1: verified.metrics.top1Agreement, failures: verified.failures };
  out.result({ ok: verified?.passed ?? true, dryRun, out: res.out, source, dims: converted.dims, parameters: converted.params, dtypes: converted.dtypes, plan: summary, ...(res.execution ? { written: res.execution.files, overflows: res.execution.overflows } : {}), ...(verification ? { verification } : {}) });
  const d = converted.dims;
  out.info(`${dryRun ? "plan" : "converted"}: ${source.path} (iteration ${source.iteration}, TP ${source.tp}) → ${res.out}`);
  out.info(`  model: hidden ${d.hidden}, ${d.heads} heads × ${d.kvChannels}, FFN ${d.ffn}, ${d.encoderLayers}/${d.decoderLayers} layers, vocab rows ${d.vocab}, ${converted.dtypes.join("/")}`);
  out.info(table(["  file", "bytes", "tensors"], summary.files.map((f) => [`  ${f.path}`, formatBytes(f.bytes), f.tensors || ""])));
  out.info(`  read ${formatBytes(summary.bytesToRead)}, write ${formatBytes(summary.bytesToWrite)}; largest tensor ${summary.largestTensor?.name} (${formatBytes(summary.largestTensor?.bytes ?? 0)})`);
  if (dryRun) {
    out.info(`  peak memory ≈ ${formatBytes(Math.min(summary.largestTensor?.bytes ?? 0, 64 << 20) * 3 + 64e6)} (streamed in 64 MiB row blocks)`);
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
