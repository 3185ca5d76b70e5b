import { hfToMegatron } from "../../converters/to-megatron.js";
import { intOpt, stringOpt, type Command } from "../command.js";
import { formatBytes, table } from "../format.js";

export const toMegatronCommand: Command = {
  name: "to-megatron",
  summary: "convert an HF OpenBA model back to a Megatron checkpoint (to continue training)",
  usage: "megahub to-megatron <hf-dir> --out <dir> --tp N [--iteration N] [--make-vocab-size-divisible-by K] [--true-vocab-size V] [--dry-run] [--json]",
  options: {
    out: { type: "string", short: "o" },
    tp: { type: "string" },
    iteration: { type: "string" },
    "make-vocab-size-divisible-by": { type: "string" },
    "true-vocab-size": { type: "string" },
    "dry-run": { type: "boolean" },
  },
  async run(positionals, values, out) {
    const input = positionals[0];
    const dir = stringOpt(values, "out");
    const tp = intOpt(values, "tp");
    if (!input || !dir || tp === undefined) throw new RangeError("to-megatron needs <hf-dir>, --out <dir> and --tp N");
    const opt = (name: string) => intOpt(values, name);
    const res = await hfToMegatron({
      input,
      out: dir,
      tp,
      dryRun: values["dry-run"] === true,
      onProgress: (d, t) => out.progress("to-megatron", d, t),
      ...(opt("iteration") === undefined ? {} : { iteration: opt("iteration") as number }),
      ...(opt("make-vocab-size-divisible-by") === undefined ? {} : { divisibleBy: opt("make-vocab-size-divisible-by") as number }),
      ...(opt("true-vocab-size") === undefined ? {} : { trueVocab: opt("true-vocab-size") as number }),
    });
    out.result({ ok: true, dryRun: values["dry-run"] === true, out: dir, tp: res.tp, paddedVocab: res.paddedVocab, vocab: res.vocabChange, args: res.args, plan: res.summary });
    out.info(`${values["dry-run"] === true ? "plan" : "written"}: ${input} → ${dir} (Megatron, TP ${res.tp})`);
    out.info(table(["  file", "bytes"], res.summary.files.map((f) => [`  ${f.path}`, formatBytes(f.bytes)])));
    for (const n of res.summary.notes) out.info(`  note: ${n}`);
    return 0;
  },
};
