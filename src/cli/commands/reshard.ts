import { reshardMegatron } from "../../converters/reshard.js";
import { intOpt, stringOpt, type Command } from "../command.js";
import { formatBytes, table } from "../format.js";

export const reshardCommand: Command = {
  name: "reshard",
  summary: "re-split a Megatron checkpoint to another tensor-parallel size (writes Megatron checkpoints)",
  usage:
    "megahub reshard <megatron-path> --out <dir> --tp N [--iteration N] [--make-vocab-size-divisible-by K] [--true-vocab-size V] [--tokenizer spiece.model] [--dry-run] [--json]",
  options: {
    out: { type: "string", short: "o" },
    tp: { type: "string" },
    iteration: { type: "string" },
    "make-vocab-size-divisible-by": { type: "string" },
    "true-vocab-size": { type: "string" },
    tokenizer: { type: "string" },
    "dry-run": { type: "boolean" },
  },
  details: [
    "Optimizer and RNG state are TP-specific and are dropped; resume with --finetune (or --no-load-optim --no-load-rng).",
    "The padded vocabulary follows Megatron's rule for the new TP; the true size comes from --true-vocab-size, else --tokenizer, else args.",
  ],
  async run(positionals, values, out) {
    const input = positionals[0];
    const dir = stringOpt(values, "out");
    const tp = intOpt(values, "tp");
    if (!input || !dir || tp === undefined) throw new RangeError("reshard needs <megatron-path>, --out <dir> and --tp N");
    const opt = (name: string) => intOpt(values, name);
    const tokenizer = stringOpt(values, "tokenizer");
    const res = await reshardMegatron({
      input,
      out: dir,
      tp,
      dryRun: values["dry-run"] === true,
      onProgress: (d, t) => out.progress("reshard", d, t),
      ...(opt("iteration") === undefined ? {} : { iteration: opt("iteration") as number }),
      ...(opt("make-vocab-size-divisible-by") === undefined ? {} : { divisibleBy: opt("make-vocab-size-divisible-by") as number }),
      ...(opt("true-vocab-size") === undefined ? {} : { trueVocab: opt("true-vocab-size") as number }),
      ...(tokenizer ? { tokenizer } : {}),
    });
    out.result({
      ok: true,
      dryRun: values["dry-run"] === true,
      out: dir,
      source: res.source,
      tp: res.tp,
      paddedVocab: res.paddedVocab,
      vocab: res.vocabChange,
      droppedState: res.dropped,
      plan: res.summary,
    });
    out.info(`${values["dry-run"] === true ? "plan" : "resharded"}: ${res.source.path} (TP ${res.source.tp}) → ${dir} (TP ${res.tp})`);
    out.info(table(["  file", "bytes"], res.summary.files.map((f) => [`  ${f.path}`, formatBytes(f.bytes)])));
    for (const n of res.summary.notes) out.info(`  note: ${n}`);
    if (res.dropped.length > 0) out.warn(`dropped TP-specific state: ${res.dropped.join(", ")}`);
    return 0;
  },
};
