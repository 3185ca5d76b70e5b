import type { Command } from "../command.js";

/**
 * The command table. Each command lives in its own file; add one line here to register it. Commands load lazily so
 * `megahub --help` does not import onnxruntime or the Hub client.
 */
export const COMMANDS: Record<string, () => Promise<Command>> = {
  inspect: async () => (await import("./inspect.js")).inspectCommand,
  convert: async () => (await import("./convert.js")).convertCommand,
  demo: async () => (await import("./demo.js")).demoCommand,
};
