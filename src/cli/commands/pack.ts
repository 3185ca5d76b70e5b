import { packDir, planPack } from "../../formats/tar/pack.js";
import { stringOpt, type Command } from "../command.js";
import { formatBytes } from "../reporter.js";
import { SUMMARIES } from "./summaries.js";

export const packCommand: Command = {
  name: "pack",
  summary: SUMMARIES.pack,
  usage: "megahub pack <dir> --out <file.tar> [--dry-run] [--json]",
  options: { out: { type: "string" }, "dry-run": { type: "boolean" } },
  details: [
    "The tar is uncompressed so inspect and convert can read checkpoints inside it in place. Its last member,",
    ".megahub-pack.json, lists every file's size and sha256.",
    "--dry-run lists the files and bytes it would pack into --out; nothing is read or written.",
  ],
  async run(positionals, values, out) {
    const dir = positionals[0];
    const file = stringOpt(values, "out");
    if (dir === undefined || file === undefined) throw new RangeError("pack needs <dir> and --out <file.tar>");
    if (values["dry-run"] === true) {
      const plan = await planPack(dir, file);
      for (const m of plan.members) out.info(`  would pack ${m.path} (${formatBytes(m.bytes)})`);
      out.info(`dry run: would pack ${plan.files} files (${formatBytes(plan.bytes)}) into ${plan.out}; nothing written`);
      out.result({ ok: true, dryRun: true, ...plan });
      return 0;
    }
    const r = await packDir(dir, file, (done, total) => out.progress("packing", done, total));
    out.info(`Packed ${r.files} files (${formatBytes(r.bytes)}) into ${r.out}`);
    out.result({ ok: true, dryRun: false, ...r });
    return 0;
  },
};
