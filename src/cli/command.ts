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

/** "5GB", "500MB", "2GiB", "1000000" → bytes (decimal units as huggingface_hub uses; *iB binary). */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?$/i.exec(text.trim());
  if (!m) throw new RangeError(`--max-shard-size: cannot read "${text}" (try 5GB or 500MB)`);
  const base = m[3] ? 1024 : 1000;
  const power = " KMGT".indexOf((m[2] ?? "").toUpperCase() || " ");
  const n = Math.floor(Number(m[1]) * base ** power);
  if (n <= 0) throw new MegahubError("USAGE", "--max-shard-size must be positive");
  return n;
}

/** Options every command accepts. */
export const COMMON_OPTIONS = {
  json: { type: "boolean" },
  debug: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  quiet: { type: "boolean", short: "q" },
} satisfies OptionSpec;
