import { hfToMegatron } from "../../converters/to-megatron.js";
import { MEGATRON_OUT_OPTIONS, megatronOutJob, type Command } from "../command.js";
import { formatBytes, table } from "../format.js";
import { RUN_DETAILS, RUN_OPTIONS, runControl } from "../run-options.js";

export const toMegatronCommand: Command = {
  name: "to-megatron",
  summary: "convert an HF OpenBA model back to a Megatron checkpoint (to continue training)",
  usage: "megahub to-megatron <hf-dir> --out <dir> --tp N [--iteration N] [--make-vocab-size-divisible-by K] [--true-vocab-size V] [--dry-run] [--json]",
  options: { ...MEGATRON_OUT_OPTIONS, ...RUN_OPTIONS },
  details: RUN_DETAILS,
  async run(positionals, values, out) {
    const input = positionals[0];
    if (!input) throw new RangeError("to-megatron needs <hf-dir>");
    const job = megatronOutJob(values, "to-megatron");
    const dir = job.out;
    const res = await hfToMegatron({ input, ...job, control: runControl(values), onProgress: (d, t) => out.progress("to-megatron", d, t) });
    out.result({ ok: true, dryRun: job.dryRun, out: dir, tp: res.tp, paddedVocab: res.paddedVocab, vocab: res.vocabChange, args: res.args, plan: res.summary });
    out.info(`${job.dryRun ? "plan" : "written"}: ${input} → ${dir} (Megatron, TP ${res.tp})`);
    out.info(table(["  file", "bytes"], res.summary.files.map((f) => [`  ${f.path}`, formatBytes(f.bytes)])));
    for (const n of res.summary.notes) out.info(`  note: ${n}`);
    return 0;
  },
};
