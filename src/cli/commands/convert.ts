import { convertMegatronToHf } from "../../converters/convert.js";
import { DTYPE_OPTIONS, type DtypeOption } from "../../converters/megatron-to-hf.js";
import { MegahubError } from "../../errors.js";
import { intOpt, stringOpt, type Command, type ParsedValues } from "../command.js";
import { formatBytes, shapeText, table } from "../format.js";
import type { Reporter } from "../reporter.js";

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
  },
  async run(positionals, values, out) {
    const job = await convertJob(positionals, values);
    const res = await convertMegatronToHf({ ...job, onProgress: (d, t) => out.progress("convert", d, t) });
    report(res, job.dryRun, out);
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

/** "5GB", "500MB", "2GiB", "1000000" → bytes (decimal units as huggingface_hub uses; *iB binary). */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?$/i.exec(text.trim());
  if (!m) throw new RangeError(`--max-shard-size: cannot read "${text}" (try 5GB or 500MB)`);
  const base = m[3] ? 1024 : 1000;
  const power = " KMGT".indexOf((m[2] ?? "").toUpperCase() || " ");
  const n = Math.floor(Number(m[1]) * base ** power);
  if (n <= 0) throw new MegahubError("USAGE", "--max-shard-size must be positive");
  return n;
}

function report(res: Awaited<ReturnType<typeof convertMegatronToHf>>, dryRun: boolean, out: Reporter): void {
  const { summary, converted, source } = res;
  out.result({ ok: true, dryRun, out: res.out, source, dims: converted.dims, parameters: converted.params, dtypes: converted.dtypes, plan: summary, ...(res.execution ? { written: res.execution.files, overflows: res.execution.overflows } : {}) });
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
  for (const n of summary.notes) out.info(`  note: ${n}`);
  if (res.execution && res.execution.overflows > 0) out.warn(`${res.execution.overflows} values overflowed to ±inf when casting`);
  for (const g of source.unknownGlobals.filter((x) => !x.startsWith("megatron.") && !x.startsWith("numpy."))) out.warn(`unknown pickle global ${g} read as inert data`);
}
