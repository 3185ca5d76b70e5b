import { MegahubError } from "../../errors.js";
import { cudaReason } from "./verify.js";
import type { Command } from "../command.js";
import { intOpt, stringOpt } from "../command.js";
import { generate } from "../../verify/generate.js";
import { isDevice } from "../../verify/ort-session.js";
import { SUMMARIES } from "./summaries.js";

export const generateCommand: Command = {
  name: "generate",
  summary: SUMMARIES.generate,
  usage:
    'megahub generate <hf-dir> --prompt "…" [--max-new-tokens N] [--device auto|cuda|cpu] [--chat-template <file>] [--raw] [--json]',
  options: {
    prompt: { type: "string", short: "p" },
    "max-new-tokens": { type: "string" },
    device: { type: "string" },
    "chat-template": { type: "string" },
    raw: { type: "boolean" },
  },
  details: [
    "The prompt goes through the chat template: --chat-template <file>, else tokenizer_config.json's chat_template,",
    "else chat_template.jinja, else OpenBA's default `<S> {input} <extra_id_0>`. --raw tokenizes the prompt as is.",
    "Needs spiece.model in <hf-dir>. --max-new-tokens defaults to 32; decoding stops at </s>.",
    "Llama / Mistral / Qwen2 / Qwen3 (and MoE: Mixtral / Qwen2-MoE / Qwen3-MoE) dirs use tokenizer.json; without a chat template the prompt is tokenized as is",
    "(with the tokenizer's BOS), and decoding stops at any eos_token_id of generation_config.json / config.json.",
  ],
  async run(positionals, values, reporter) {
    const [dir, ...extra] = positionals;
    if (dir === undefined || extra.length > 0) throw new MegahubError("USAGE", "expected exactly one <hf-dir>");
    const prompt = stringOpt(values, "prompt");
    if (prompt === undefined) throw new MegahubError("USAGE", "--prompt is required");
    const device = stringOpt(values, "device") ?? "auto";
    if (!isDevice(device)) throw new MegahubError("USAGE", `--device must be auto, cuda or cpu, got "${device}"`);
    const r = await generate(dir, {
      prompt,
      maxNewTokens: intOpt(values, "max-new-tokens") ?? 32,
      device,
      chatTemplate: stringOpt(values, "chat-template"),
      raw: values.raw === true,
      onWarning: (line) => reporter.warn(line),
    });
    if (r.fallbackReason !== undefined) reporter.info(`note: --device auto found no usable CUDA (${cudaReason(r.fallbackReason)}); ran on CPU`);
    reporter.info(`prompt (${r.templateSource ?? "raw"} template): ${JSON.stringify(r.renderedPrompt)} → ${r.inputIds.length} tokens`);
    reporter.info(`execution provider: ${r.provider === "cuda" ? "CUDA" : "CPU"}, ${r.timings.perTokenMs.toFixed(1)} ms/token`);
    reporter.info(r.text);
    reporter.result({ ok: true, ...r, warnings: reporter.warnings });
    return 0;
  },
};
