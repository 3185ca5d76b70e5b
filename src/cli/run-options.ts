import { MegahubError } from "../errors.js";
import { parsePart } from "../plan/parts.js";
import type { RunControl } from "../plan/run.js";
import type { OptionSpec, ParsedValues } from "./command.js";

/**
 * The options of every command that writes a plan (convert, reshard, to-megatron, prune, prune-vocab): how the
 * plan runs — whole, split over machines, split over local processes — and what it hashes.
 */
export const RUN_OPTIONS = {
  part: { type: "string" },
  finalize: { type: "boolean" },
  workers: { type: "string" },
  "no-hash": { type: "boolean" },
  "tensor-hashes": { type: "boolean" },
} satisfies OptionSpec;

export const RUN_DETAILS: readonly string[] = [
  "--part i/N        write only part i of N (output files balanced by bytes) into the staging area beside --out;",
  "                  parts may run at once on machines sharing the filesystem; re-running a part resumes",
  "--finalize        check every part (sizes, sha256) and put the output in place, with index, config and megahub.json",
  "--workers N       run the N parts as local processes, then finalize",
  "--no-hash         skip the sha256 of output files (faster; push and finalize then hash them themselves)",
  "--tensor-hashes   also record the sha256 of every tensor in megahub.json (hashes every byte a second time)",
];

/** Reads RUN_OPTIONS; `--workers` relaunches this very command line with `--part i/N` in its place. */
export function runControl(values: ParsedValues): RunControl {
  const part = typeof values.part === "string" ? parsePart(values.part) : undefined;
  const workersText = typeof values.workers === "string" ? values.workers : undefined;
  if (workersText !== undefined && !/^[1-9]\d*$/.test(workersText)) {
    throw new MegahubError("USAGE", `--workers must be a positive integer, got "${workersText}"`);
  }
  const given = [part !== undefined, values.finalize === true, workersText !== undefined].filter(Boolean).length;
  if (given > 1) throw new MegahubError("USAGE", "--part, --finalize and --workers exclude one another");
  if (given > 0 && values["dry-run"] === true) throw new MegahubError("USAGE", "--dry-run prints the whole plan: give it without --part, --finalize or --workers");
  const control: RunControl = {
    ...(part ? { part } : {}),
    ...(values.finalize === true ? { finalize: true } : {}),
    ...(values["no-hash"] === true ? { hash: false } : {}),
    ...(values["tensor-hashes"] === true ? { tensorHashes: true } : {}),
  };
  if (workersText !== undefined) {
    control.workers = Number(workersText);
    const args = withoutWorkers(process.argv.slice(1));
    control.relaunch = (p) => ({ command: process.execPath, args: [...process.execArgv, ...args, "--part", p, "--quiet"] });
  }
  return control;
}

/** The command line minus `--workers N` / `--workers=N`. */
function withoutWorkers(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === "--workers") i++;
    else if (!a.startsWith("--workers=")) out.push(a);
  }
  return out;
}
