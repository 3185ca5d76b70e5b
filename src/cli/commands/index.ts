import type { Command } from "../command.js";
import { SUMMARIES } from "./summaries.js";

export { SUMMARIES };

/**
 * The command table. Each command lives in its own file; add one line here and its summary in summaries.ts to register it. Commands load lazily so
 * `megahub --help` does not import onnxruntime or the Hub client.
 */
export const COMMANDS: Record<keyof typeof SUMMARIES, () => Promise<Command>> = {
  inspect: async () => (await import("./inspect.js")).inspectCommand,
  convert: async () => (await import("./convert.js")).convertCommand,
  demo: async () => (await import("./demo.js")).demoCommand,
  reshard: async () => (await import("./reshard.js")).reshardCommand,
  "to-megatron": async () => (await import("./to-megatron.js")).toMegatronCommand,
  verify: async () => (await import("./verify.js")).verifyCommand,
  "export-onnx": async () => (await import("./export-onnx.js")).exportOnnxCommand,
  generate: async () => (await import("./generate.js")).generateCommand,
  push: async () => (await import("./push.js")).pushCommand,
  pull: async () => (await import("./pull.js")).pullCommand,
  hub: async () => (await import("./hub.js")).hubCommand,
  pack: async () => (await import("./pack.js")).packCommand,
  unpack: async () => (await import("./unpack.js")).unpackCommand,
  prune: async () => (await import("./prune.js")).pruneCommand,
  vocab: async () => (await import("./vocab.js")).vocabCommand,
  "prune-vocab": async () => (await import("./prune-vocab.js")).pruneVocabCommand,
  doctor: async () => (await import("./doctor.js")).doctorCommand,
  gpu: async () => (await import("./gpu.js")).gpuCommand,
};
