import { reshardMegatron } from "../../converters/reshard.js";
import { MEGATRON_OUT_OPTIONS, megatronOutJob, stringOpt, type Command } from "../command.js";
import { formatBytes, table } from "../format.js";
import { RUN_DETAILS, RUN_OPTIONS, runControl } from "../run-options.js";

export const reshardCommand: Command = {
  name: "reshard",
  summary: "re-split a Megatron checkpoint to another tensor-parallel size (writes Megatron checkpoints)",
  usage:
    "megahub reshard <megatron-path> --out <dir> --tp N [--iteration N] [--make-vocab-size-divisible-by K] [--true-vocab-size V] [--tokenizer spiece.model] [--dry-run] [--json]",
  options: { ...MEGATRON_OUT_OPTIONS, ...RUN_OPTIONS, tokenizer: { type: "string" } },
  details: [
    "Optimizer and RNG state are TP-specific and are dropped; resume with --finetune (or --no-load-optim --no-load-rng).",
    "The padded vocabulary follows Megatron's rule for the new TP; the true size comes from --true-vocab-size, else --tokenizer, else args.",
    ...RUN_DETAILS,
  ],
  async run(positionals, values, out) {
    const input = positionals[0];
    if (!input) throw new RangeError("reshard needs <megatron-path>");
    const job = megatronOutJob(values, "reshard");
    const dir = job.out;
    const tokenizer = stringOpt(values, "tokenizer");
    const res = await reshardMegatron({ input, ...job, control: runControl(values), onProgress: (d, t) => out.progress("reshard", d, t), ...(tokenizer ? { tokenizer } : {}) });
    out.result({
      ok: true,
      dryRun: job.dryRun,
      out: dir,
      source: res.source,
      tp: res.tp,
      paddedVocab: res.paddedVocab,
      vocab: res.vocabChange,
      droppedState: res.dropped,
      plan: res.summary,
    });
    out.info(`${job.dryRun ? "plan" : "resharded"}: ${res.source.path} (TP ${res.source.tp}) → ${dir} (TP ${res.tp})`);
    out.info(table(["  file", "bytes"], res.summary.files.map((f) => [`  ${f.path}`, formatBytes(f.bytes)])));
    for (const n of res.summary.notes) out.info(`  note: ${n}`);
    if (res.dropped.length > 0) out.warn(`dropped TP-specific state: ${res.dropped.join(", ")}`);
    return 0;
  },
};
