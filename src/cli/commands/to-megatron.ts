import { toMegatronAny } from "../../ops/dispatch.js";
import { FORMAT_DETAIL, MEGATRON_OUT_OPTIONS, megatronOutJob, stringOpt, type Command } from "../command.js";
import { formatBytes, layoutText, table } from "../format.js";
import { RUN_DETAILS, RUN_OPTIONS, runControl } from "../run-options.js";
import { SUMMARIES } from "./summaries.js";

export const toMegatronCommand: Command = {
  name: "to-megatron",
  summary: SUMMARIES["to-megatron"],
  usage: "megahub to-megatron <hf-dir> --out <dir> --tp N [--pp N] [--vpp N] [--spec local|te] [--ep N] [--experts sequential|grouped] [--iteration N] [--make-vocab-size-divisible-by K] [--true-vocab-size V] [--format torch|torch_dist] [--dry-run] [--json]",
  options: { ...MEGATRON_OUT_OPTIONS, ...RUN_OPTIONS, spec: { type: "string" }, experts: { type: "string" } },
  details: [
    FORMAT_DETAIL,
    "--pp N / --vpp N    pipeline stages and virtual chunks per stage (GPT models)",
    "--spec local|te     write Megatron-Core's local-spec names (default) or Transformer Engine's fused-norm names",
    "--ep N              MoE models: expert parallelism (mp_rank_TT[_PPP]_EEE; each EP file also carries the dense weights)",
    "--experts sequential|grouped   MoE models: SequentialMLP's local_experts.E (default) or TEGroupedMLP's weightE (needs --spec te)",
    ...RUN_DETAILS,
  ],
  async run(positionals, values, out) {
    const input = positionals[0];
    if (!input) throw new RangeError("to-megatron needs <hf-dir>");
    const job = megatronOutJob(values, "to-megatron");
    const dir = job.out;
    const spec = stringOpt(values, "spec");
    if (spec !== undefined && spec !== "local" && spec !== "te") throw new RangeError(`--spec must be local or te, got "${spec}"`);
    const experts = stringOpt(values, "experts");
    if (experts !== undefined && experts !== "sequential" && experts !== "grouped") throw new RangeError(`--experts must be sequential or grouped, got "${experts}"`);
    const res = await toMegatronAny({ input, ...job, ...(spec ? { spec } : {}), ...(experts ? { experts } : {}), control: runControl(values), onProgress: (d, t) => out.progress("to-megatron", d, t) });
    const layout = res.architecture === "gpt" ? res.parallel : { tp: res.tp, pp: 1, vpp: 1 };
    out.result({ ok: true, dryRun: job.dryRun, out: dir, architecture: res.architecture, tp: layout.tp, parallel: layout, paddedVocab: res.paddedVocab, vocab: res.vocabChange, args: res.args, plan: res.summary });
    out.info(`${job.dryRun ? "plan" : "written"}: ${input} → ${dir} (Megatron ${job.format ?? "torch"}, ${layoutText(layout)})`);
    out.info(table(["  file", "bytes"], res.summary.files.map((f) => [`  ${f.path}`, formatBytes(f.bytes)])));
    for (const n of res.summary.notes) out.info(`  note: ${n}`);
    return 0;
  },
};
