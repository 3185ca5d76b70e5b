import type { ParseArgsConfig } from "node:util";
import { MegahubError } from "../errors.js";
import type { Reporter } from "./reporter.js";

export type OptionSpec = NonNullable<ParseArgsConfig["options"]>;
export type ParsedValues = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** One CLI command: declared options, a usage line, and a run function that returns the exit code. */
export interface Command {
  readonly name: string;
  readonly summary: string;
  readonly usage: string;
  readonly options: OptionSpec;
  /** Extra help lines shown under the usage. */
  readonly details?: readonly string[];
  run(positionals: string[], values: ParsedValues, reporter: Reporter): Promise<number>;
}

export function stringOpt(values: ParsedValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : undefined;
}

export function intOpt(values: ParsedValues, name: string): number | undefined {
  const v = stringOpt(values, name);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) {
    throw new RangeError(`--${name} must be a non-negative integer, got "${v}"`);
  }
  return Number(v);
}

export function listOpt(values: ParsedValues, name: string): string[] {
  const v = values[name];
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : typeof v === "string" ? [v] : [];
}

/**
 * "5GB", "500MB", "2GiB", "1000000B" → bytes (decimal units as huggingface_hub uses; *iB binary). A bare number
 * is refused: "200" could mean 200 bytes or 200 MB, and a wrong guess writes thousands of files.
 */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(?:([KMGT])(i?)B?|B)$/i.exec(text.trim());
  if (!m) throw new MegahubError("USAGE", `--max-shard-size: cannot read "${text}"; give a unit, e.g. 5GB, 500MB or 2GiB`);
  const base = m[3] ? 1024 : 1000;
  const power = " KMGT".indexOf((m[2] ?? "").toUpperCase() || " ");
  const n = Math.floor(Number(m[1]) * base ** power);
  if (n <= 0) throw new MegahubError("USAGE", "--max-shard-size must be positive");
  return n;
}

/** The options of commands that write Megatron checkpoints (reshard, to-megatron). */
export const MEGATRON_OUT_OPTIONS = {
  out: { type: "string", short: "o" },
  tp: { type: "string" },
  pp: { type: "string" },
  vpp: { type: "string" },
  ep: { type: "string" },
  iteration: { type: "string" },
  "make-vocab-size-divisible-by": { type: "string" },
  "true-vocab-size": { type: "string" },
  "dry-run": { type: "boolean" },
  "keep-unknown-globals": { type: "boolean" },
  format: { type: "string" },
} satisfies OptionSpec;

/** The --format help line reshard and to-megatron share. */
export const FORMAT_DETAIL = "--format torch|torch_dist  legacy rank files (default) or Megatron-Core's torch_dist (stacked layers, .distcp; GPT models)";

/** The flag of every command that writes Megatron pickles carrying values from the source. */
export const KEEP_UNKNOWN_GLOBALS_HELP =
  "--keep-unknown-globals  carry pickle globals that are not on megahub's allow-list into the output (off: they are dropped, and named); torch.load of the output would import and may run them";

/** Reads MEGATRON_OUT_OPTIONS: the required --out and --tp, and the optional numbers under their job names. */
export function megatronOutJob(
  values: ParsedValues,
  usage: string,
): { out: string; tp: number; dryRun: boolean; keepUnknownGlobals: boolean; pp?: number; vpp?: number; ep?: number; iteration?: number; divisibleBy?: number; trueVocab?: number; format?: "torch" | "torch_dist" } {
  const out = stringOpt(values, "out");
  const tp = intOpt(values, "tp");
  if (!out || tp === undefined) throw new RangeError(`${usage} needs --out <dir> and --tp N`);
  const format = stringOpt(values, "format");
  if (format !== undefined && format !== "torch" && format !== "torch_dist") throw new RangeError(`--format must be torch or torch_dist, got "${format}"`);
  const optional = { pp: "pp", vpp: "vpp", ep: "ep", iteration: "iteration", divisibleBy: "make-vocab-size-divisible-by", trueVocab: "true-vocab-size" };
  const job: ReturnType<typeof megatronOutJob> = { out, tp, dryRun: values["dry-run"] === true, keepUnknownGlobals: values["keep-unknown-globals"] === true, ...(format ? { format } : {}) };
  for (const [key, flag] of Object.entries(optional) as [keyof typeof optional, string][]) {
    const v = intOpt(values, flag);
    if (v !== undefined) job[key] = v;
  }
  return job;
}

/** Options every command accepts. */
export const COMMON_OPTIONS = {
  json: { type: "boolean" },
  debug: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  quiet: { type: "boolean", short: "q" },
} satisfies OptionSpec;
