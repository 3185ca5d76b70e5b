import { parseArgs } from "node:util";
import { isMegahubError } from "../errors.js";
import { COMMON_OPTIONS, type Command, type ParsedValues } from "./command.js";
import { COMMANDS, SUMMARIES } from "./commands/index.js";
import { createReporter } from "./reporter.js";
import { installExitHandlers } from "./process-exit.js";
import { onStagingNotice } from "../io/atomic.js";
import { osErrorLine } from "./os-errors.js";

import { VERSION } from "../version.js";

/** Commands that take at most this many positional arguments (the others check their own). */
const MAX_POSITIONALS: Readonly<Record<string, number>> = {
  convert: 1, inspect: 1, pack: 1, prune: 1, pull: 1, push: 1, reshard: 1, "to-megatron": 1, unpack: 1, demo: 0,
};

/** Runs one CLI invocation and returns the exit code: 0 ok, 1 failure (verification, bad input), 2 usage error. */
export async function main(argv: string[]): Promise<number> {
  installExitHandlers();
  const [name, ...rest] = argv;
  const wantsJson = rest.includes("--json");
  const usageError = (message: string, usage?: string): number => {
    if (wantsJson) process.stdout.write(`${JSON.stringify({ ok: false, error: { code: "USAGE", message } }, null, 2)}\n`);
    else process.stderr.write(`megahub${name ? ` ${name}` : ""}: ${message}\n${usage ? `usage: ${usage}\n` : ""}`);
    return 2;
  };
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(globalHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "-v") {
    process.stdout.write(`megahub ${VERSION}\n`);
    return 0;
  }
  // Own keys only: "constructor" or "toString" must be unknown commands, not Object.prototype members.
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name as keyof typeof COMMANDS] : undefined;
  if (!load) {
    return usageError(`unknown command "${name}". Run "megahub --help" for the list.`);
  }
  const command = await load();
  let positionals: string[];
  let values: ParsedValues;
  try {
    ({ positionals, values } = parseArgs({
      args: rest,
      options: { ...COMMON_OPTIONS, ...command.options },
      allowPositionals: true,
      strict: true,
    }) as { positionals: string[]; values: ParsedValues });
  } catch (e) {
    return usageError((e as Error).message, command.usage);
  }
  if (values.help === true) {
    process.stdout.write(commandHelp(command));
    return 0;
  }
  const max = MAX_POSITIONALS[name];
  if (max !== undefined && positionals.length > max) {
    return usageError(`unexpected argument${positionals.length - max > 1 ? "s" : ""} ${positionals.slice(max).map((p) => JSON.stringify(p)).join(" ")}`, command.usage);
  }
  const json = values.json === true;
  const reporter = createReporter({ json, quiet: values.quiet === true });
  onStagingNotice((line) => reporter.warn(line));
  try {
    return await command.run(positionals, values, reporter);
  } catch (e) {
    // Commands throw RangeError for bad option values; an engine RangeError (stack, array size) is not usage.
    const engine = e instanceof RangeError && /call stack|Invalid (array|string|typed array) length|allocation/i.test(e.message);
    const usage = (e instanceof RangeError && !engine) || (isMegahubError(e) && e.code === "USAGE");
    const os = osErrorLine(e);
    if (values.debug === true || (!isMegahubError(e) && !usage && os === undefined)) {
      process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
    }
    const message = os ?? (e instanceof Error ? e.message : String(e));
    if (json) {
      const code = isMegahubError(e) ? e.code : usage ? "USAGE" : os !== undefined ? "OUTPUT" : "INTERNAL";
      process.stdout.write(`${JSON.stringify({ ok: false, error: { code, message } }, null, 2)}\n`);
    } else {
      process.stderr.write(`megahub ${name}: error: ${message}\n`);
    }
    return usage ? 2 : 1;
  }
}

function globalHelp(): string {
  const lines = ["megahub — Megatron-LM checkpoints (Megatron-Core GPT and MoE, OpenBA) to the Hugging Face Hub, no Python needed", "", "commands:"];
  for (const name of Object.keys(COMMANDS) as (keyof typeof COMMANDS)[]) lines.push(`  ${name.padEnd(12)} ${SUMMARIES[name]}`);
  lines.push("", 'Run "megahub <command> --help" for its options. Every command takes --json and --debug.', "");
  return lines.join("\n");
}

function commandHelp(c: Command): string {
  return [`usage: ${c.usage}`, "", c.summary, ...(c.details ? ["", ...c.details] : []), ""].join("\n");
}
