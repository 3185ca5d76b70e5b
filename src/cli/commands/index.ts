import type { Command } from "../command.js";

/**
 * The command table. Each command lives in its own file; add one line here to register it. Commands load lazily so
 * `megahub --help` does not import onnxruntime or the Hub client.
 */
export const COMMANDS: Record<string, () => Promise<Command>> = {
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

/**
 * Each command's one-line summary, for `megahub --help` without importing any command module (loading them all cost
 * about 0.3 s of start-up). index.spec.ts checks that these equal the commands' own summaries.
 */
export const SUMMARIES: Record<keyof typeof COMMANDS, string> = {
  inspect: "describe a Megatron checkpoint, an HF model directory, or a torch/safetensors file (headers only)",
  convert: "convert a Megatron checkpoint (OpenBA, or Megatron-Core GPT: Llama/Mistral/Qwen2/Qwen3) to Hugging Face layout",
  demo: "run the main job on the tiny OpenBA and Llama checkpoints shipped in fixtures/ and show what happened",
  reshard: "re-split a Megatron checkpoint to another TP (× PP × VPP for GPT models); writes Megatron checkpoints",
  "to-megatron": "convert an HF model (OpenBA, Llama, Mistral, Qwen2, Qwen3) back to a Megatron checkpoint (to continue training)",
  verify: "run a converted model in ONNX Runtime and compare its logits with a reference or another model",
  "export-onnx": "write an HF model as ONNX (model.onnx, OpenBA's encoder/decoder graphs, one external data file)",
  generate: "greedy text generation in ONNX Runtime with the model's tokenizer and chat template",
  push: "upload a folder to a Hugging Face Hub model repo (resumable, retried, with a model card)",
  pull: "download every file of a Hub model repo revision, resumably, verifying sha256",
  hub: "run a local Hugging Face Hub-compatible server (to rehearse pushes and pulls offline)",
  pack: "pack a folder into an uncompressed tar with a sha256 manifest (checked by unpack)",
  unpack: "unpack a megahub tar into a new folder, verifying every file against its sha256 manifest",
  prune: "prune layers, hidden size, heads and FFN width to any target (OpenBA-v2's method), or --plan the parameter counts",
  vocab: "count how often a corpus uses each token (exactly as sentencepiece tokenizes), for prune-vocab",
  "prune-vocab": "keep the tokens a corpus uses: new spiece.model, re-indexed embedding/lm_head rows, id map, coverage report",
  doctor: "say which ONNX Runtime execution providers can run here, what CUDA libraries they need and the fix",
  gpu: "install ONNX Runtime's CUDA execution provider beside megahub's ONNX Runtime (gpu install)",
};
