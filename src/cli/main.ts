import { parseArgs } from "node:util";
import { isMegahubError } from "../errors.js";
import { COMMON_OPTIONS, type Command, type ParsedValues } from "./command.js";
import { COMMANDS, SUMMARIES } from "./commands/index.js";
import { createReporter } from "./reporter.js";

import { VERSION } from "../version.js";

/** Runs one CLI invocation and returns the exit code: 0 ok, 1 failure (verification, bad input), 2 usage error. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(globalHelp());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "-v") {
    process.stdout.write(`megahub ${VERSION}\n`);
    return 0;
  }
  const load = COMMANDS[name];
  if (!load) {
    process.stderr.write(`megahub: unknown command "${name}". Run "megahub --help" for the list.\n`);
    return 2;
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
    process.stderr.write(`megahub ${name}: ${(e as Error).message}\nusage: ${command.usage}\n`);
    return 2;
  }
  if (values.help === true) {
    process.stdout.write(commandHelp(command));
    return 0;
  }
  const json = values.json === true;
  const reporter = createReporter({ json, quiet: values.quiet === true });
  try {
    return await command.run(positionals, values, reporter);
  } catch (e) {
    const usage = e instanceof RangeError || e instanceof TypeError || (isMegahubError(e) && e.code === "USAGE");
    if (values.debug === true || (!isMegahubError(e) && !usage)) {
      process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
    }
    const message = e instanceof Error ? e.message : String(e);
    if (json) {
      const code = isMegahubError(e) ? e.code : usage ? "USAGE" : "INTERNAL";
      process.stdout.write(`${JSON.stringify({ ok: false, error: { code, message } }, null, 2)}\n`);
    } else {
      process.stderr.write(`megahub ${name}: error: ${message}\n`);
    }
    return usage ? 2 : 1;
  }
}

function globalHelp(): string {
  const lines = ["megahub — Megatron (OpenBA) checkpoints to the Hugging Face Hub, no Python needed", "", "commands:"];
  for (const name of Object.keys(COMMANDS)) lines.push(`  ${name.padEnd(12)} ${SUMMARIES[name] ?? ""}`);
  lines.push("", 'Run "megahub <command> --help" for its options. Every command takes --json and --debug.', "");
  return lines.join("\n");
}

function commandHelp(c: Command): string {
  return [`usage: ${c.usage}`, "", c.summary, ...(c.details ? ["", ...c.details] : []), ""].join("\n");
}
