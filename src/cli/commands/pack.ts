import { packDir } from "../../formats/tar/pack.js";
import { stringOpt, type Command } from "../command.js";
import { formatBytes } from "../reporter.js";
import { SUMMARIES } from "./summaries.js";

export const packCommand: Command = {
  name: "pack",
  summary: SUMMARIES.pack,
  usage: "megahub pack <dir> --out <file.tar> [--json]",
  options: { out: { type: "string" } },
  details: [
    "The tar is uncompressed so inspect and convert can read checkpoints inside it in place. Its last member,",
    ".megahub-pack.json, lists every file's size and sha256.",
  ],
  async run(positionals, values, out) {
    const dir = positionals[0];
    const file = stringOpt(values, "out");
    if (dir === undefined || file === undefined) throw new RangeError("pack needs <dir> and --out <file.tar>");
    const r = await packDir(dir, file, (done, total) => out.progress("packing", done, total));
    out.info(`Packed ${r.files} files (${formatBytes(r.bytes)}) into ${r.out}`);
    out.result({ ok: true, ...r });
    return 0;
  },
};
