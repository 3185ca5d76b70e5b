import { planUnpack, unpackTar } from "../../formats/tar/unpack.js";
import { stringOpt, type Command } from "../command.js";
import { formatBytes } from "../reporter.js";
import { SUMMARIES } from "./summaries.js";

export const unpackCommand: Command = {
  name: "unpack",
  summary: SUMMARIES.unpack,
  usage: "megahub unpack <file.tar> --out <dir> [--dry-run] [--json]",
  options: { out: { type: "string" }, "dry-run": { type: "boolean" } },
  details: [
    "Refuses absolute or '..' member names, links and devices; --out appears only when every file matches.",
    "--dry-run checks names, types and sizes against the manifest from the tar's headers and lists what it would",
    "write; nothing is written (the sha256 of each file is checked by the real run).",
  ],
  async run(positionals, values, out) {
    const file = positionals[0];
    const dir = stringOpt(values, "out");
    if (file === undefined || dir === undefined) throw new RangeError("unpack needs <file.tar> and --out <dir>");
    if (values["dry-run"] === true) {
      const plan = await planUnpack(file, dir);
      for (const m of plan.members) out.info(`  would write ${m.path} (${formatBytes(m.bytes)})`);
      out.info(`dry run: would unpack ${plan.files} files (${formatBytes(plan.bytes)}) into ${plan.out}; nothing written`);
      out.result({ ok: true, dryRun: true, ...plan });
      return 0;
    }
    const r = await unpackTar(file, dir, (done, total) => out.progress("unpacking", done, total));
    out.info(`Unpacked and verified ${r.files} files (${formatBytes(r.bytes)}) into ${r.out}`);
    out.result({ ok: true, dryRun: false, ...r });
    return 0;
  },
};
