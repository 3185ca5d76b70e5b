import { MegahubError } from "../errors.js";
import { renderChatTemplate, resolveChatTemplate, type ChatTemplateSource } from "../tokenizers/chat-template.js";
import type { GenerateOptions, GenerateResult } from "./generate.js";
import type { GptModelDir } from "./gpt-model-dir.js";
import { loadHfTokenizer, type HfTokenizer } from "./hf-tokenizer.js";
import { openGptGraph } from "./load-graph.js";

/**
 * Greedy decoding of a decoder-only model (Llama / Mistral / Qwen2 / Qwen3, or MoE) in ONNX Runtime: one graph that returns
 * the last position's logits, run over the whole prefix per new token (no KV cache: O(T²) work, but exactly the
 * maths `verify` checks). argmax over all V rows, first index on ties, as transformers' greedy search.
 *
 * The prompt: with a chat template (--chat-template, tokenizer_config.json or chat_template.jinja) it is rendered
 * and tokenized without special tokens, as transformers' apply_chat_template does; without one, or with `raw`, it
 * is tokenized as `tokenizer(prompt)` does (the post-processor adds BOS where the tokenizer says so).
 */
export async function generateGpt(model: GptModelDir, options: GenerateOptions): Promise<GenerateResult> {
  const maxNew = options.maxNewTokens ?? 32;
  if (!Number.isSafeInteger(maxNew) || maxNew < 1) throw new RangeError(`maxNewTokens must be ≥ 1, got ${maxNew}`);
  let tokenizer: HfTokenizer | undefined;
  let renderedPrompt = "";
  let templateSource: ChatTemplateSource | undefined;
  let inputIds: number[];
  if (options.inputIds !== undefined) {
    inputIds = [...options.inputIds];
    tokenizer = await loadHfTokenizer(model.dir).catch(() => undefined);
  } else {
    if (options.prompt === undefined) throw new MegahubError("USAGE", "generate needs a prompt or input ids");
    tokenizer = await loadHfTokenizer(model.dir);
    const t = options.raw === true ? undefined : await resolveChatTemplate(model.dir, options.chatTemplate);
    // resolveChatTemplate falls back to OpenBA's template, which means nothing to these models: use the raw prompt.
    if (t !== undefined && t.source !== "default") {
      templateSource = t.source;
      renderedPrompt = renderChatTemplate(t.template, options.prompt, tokenizer.specialTokens);
      inputIds = tokenizer.encode(renderedPrompt, { addSpecialTokens: false });
    } else {
      renderedPrompt = options.prompt;
      inputIds = tokenizer.encode(renderedPrompt);
    }
  }
  const vocab = model.dims.vocab;
  if (inputIds.length === 0) throw new MegahubError("USAGE", "the prompt is empty after tokenization");
  const bad = inputIds.find((id) => !Number.isSafeInteger(id) || id < 0 || id >= vocab);
  if (bad !== undefined) throw new MegahubError("USAGE", `input id ${bad} is outside the model's ${vocab} rows`);
  const t0 = performance.now();
  const runner = await openGptGraph(model, {
    logits: "last",
    device: options.device ?? "auto",
    ...(options.onWarning ? { onWarning: options.onWarning } : {}),
  });
  try {
    const t1 = performance.now();
    const prefix = [...inputIds];
    const generated: number[] = [];
    const eos = new Set(model.eosIds);
    for (let step = 0; step < maxNew; step++) {
      const n = prefix.length;
      const out = await runner.run({
        input_ids: { type: "int64", data: BigInt64Array.from(prefix, BigInt), dims: [1, n] },
        attention_mask: { type: "int64", data: new BigInt64Array(n).fill(1n), dims: [1, n] },
      });
      const logits = out.logits;
      if (!logits) throw new MegahubError("VERIFY", "the graph produced no logits");
      const next = argmax(logits.data);
      generated.push(next);
      prefix.push(next);
      options.onToken?.(next, step);
      if (eos.has(next) && (options.stopAtEos ?? true)) break;
    }
    const t2 = performance.now();
    return {
      renderedPrompt,
      ...(templateSource !== undefined ? { templateSource } : {}),
      inputIds,
      generatedIds: generated,
      text: tokenizer?.decode(generated) ?? "",
      provider: runner.provider,
      ...(runner.fallbackReason !== undefined ? { fallbackReason: runner.fallbackReason } : {}),
      timings: { sessionMs: t1 - t0, encoderMs: 0, decodeMs: t2 - t1, perTokenMs: (t2 - t1) / Math.max(1, generated.length) },
    };
  } finally {
    await runner.release();
  }
}

/** Index of the largest value; the first one on ties, as torch.argmax. */
function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if ((a[i] as number) > (a[best] as number)) best = i;
  return best;
}
