import { unpackTar } from "../../formats/tar/unpack.js";
import { stringOpt, type Command } from "../command.js";
import { formatBytes } from "../reporter.js";
import { SUMMARIES } from "./summaries.js";

export const unpackCommand: Command = {
  name: "unpack",
  summary: SUMMARIES.unpack,
  usage: "megahub unpack <file.tar> --out <dir> [--json]",
  options: { out: { type: "string" } },
  details: [
    "Refuses absolute or '..' member names, links and devices; --out appears only when every file matches.",
  ],
  async run(positionals, values, out) {
    const file = positionals[0];
    const dir = stringOpt(values, "out");
    if (file === undefined || dir === undefined) throw new RangeError("unpack needs <file.tar> and --out <dir>");
    const r = await unpackTar(file, dir, (done, total) => out.progress("unpacking", done, total));
    out.info(`Unpacked and verified ${r.files} files (${formatBytes(r.bytes)}) into ${r.out}`);
    out.result({ ok: true, ...r });
    return 0;
  },
};
