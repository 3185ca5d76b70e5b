import { reshardAny } from "../../ops/dispatch.js";
import { FORMAT_DETAIL, KEEP_UNKNOWN_GLOBALS_HELP, MEGATRON_OUT_OPTIONS, megatronOutJob, stringOpt, type Command } from "../command.js";
import { formatBytes, layoutText, table } from "../format.js";
import { unknownGlobalsNote } from "../../formats/torch/sanitize.js";
import { RUN_DETAILS, RUN_OPTIONS, runControl } from "../run-options.js";
import { SUMMARIES } from "./summaries.js";

export const reshardCommand: Command = {
  name: "reshard",
  summary: SUMMARIES.reshard,
  usage:
    "megahub reshard <megatron-path> --out <dir> --tp N [--pp N] [--vpp N] [--ep N] [--iteration N] [--make-vocab-size-divisible-by K] [--true-vocab-size V] [--tokenizer spiece.model|hf-tokenizer-dir] [--format torch|torch_dist] [--keep-unknown-globals] [--dry-run] [--json]",
  options: { ...MEGATRON_OUT_OPTIONS, ...RUN_OPTIONS, tokenizer: { type: "string" } },
  details: [
    FORMAT_DETAIL,
    "--pp N / --vpp N    pipeline stages and virtual chunks per stage (Megatron-Core GPT; OpenBA is PP 1)",
    "--ep N              expert parallelism of a mixture-of-experts model (default 1; expert TP follows --tp)",
    "Optimizer and RNG state are TP-specific and are dropped; resume with --finetune (or --no-load-optim --no-load-rng).",
    "The padded vocabulary follows Megatron's rule for the new TP; the true size comes from --true-vocab-size, else --tokenizer, else args.",
    KEEP_UNKNOWN_GLOBALS_HELP,
    ...RUN_DETAILS,
  ],
  async run(positionals, values, out) {
    const input = positionals[0];
    if (!input) throw new RangeError("reshard needs <megatron-path>");
    const job = megatronOutJob(values, "reshard");
    const dir = job.out;
    const tokenizer = stringOpt(values, "tokenizer");
    const res = await reshardAny({ input, ...job, control: runControl(values), onProgress: (d, t) => out.progress("reshard", d, t), ...(tokenizer ? { tokenizer } : {}) });
    out.result({
      ok: true,
      dryRun: job.dryRun,
      out: dir,
      source: res.source,
      architecture: res.architecture,
      tp: res.architecture === "gpt" ? res.parallel.tp : res.tp,
      ...(res.architecture === "gpt" ? { parallel: res.parallel, dims: res.dims, parameters: res.parameters } : {}),
      paddedVocab: res.paddedVocab,
      vocab: res.vocabChange,
      droppedState: res.dropped,
      unknownGlobals: { names: res.unknownGlobals, kept: job.keepUnknownGlobals },
      plan: res.summary,
    });
    const to = res.architecture === "gpt" ? layoutText(res.parallel) : `TP ${res.tp}`;
    const from = res.architecture === "gpt" ? layoutText(res.source) : `TP ${res.source.tp}`;
    out.info(`${job.dryRun ? "plan" : "resharded"}: ${res.source.path} (${from}) → ${dir} (${to}${job.format === "torch_dist" ? ", torch_dist" : ""})`);
    out.info(table(["  file", "bytes"], res.summary.files.map((f) => [`  ${f.path}`, formatBytes(f.bytes)])));
    for (const n of res.summary.notes) out.info(`  note: ${n}`);
    if (res.unknownGlobals.length > 0) out.warn(unknownGlobalsNote(res.unknownGlobals, job.keepUnknownGlobals));
    if (res.dropped.length > 0) out.warn(`dropped TP-specific state: ${res.dropped.join(", ")}`);
    return 0;
  },
};
