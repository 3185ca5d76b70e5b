import { MegahubError } from "../errors.js";
import { renderChatTemplate, resolveChatTemplate, type ChatTemplateSource } from "../tokenizers/chat-template.js";
import { generateGpt } from "./generate-gpt.js";
import { readAnyModelDir } from "./gpt-model-dir.js";
import { openModelGraph } from "./load-graph.js";
import type { Device, OrtRunner, Provider } from "./ort-session.js";
import { loadTokenizer, type Tokenizer } from "../tokenizers/tokenizer.js";

export interface GenerateOptions {
  /** The user's prompt; it goes through the chat template unless `raw` is set. */
  prompt?: string;
  /** Token ids to feed the encoder as they are (no template, no tokenizer needed for the input). */
  inputIds?: readonly number[];
  /** @default 32 */
  maxNewTokens?: number;
  /** @default "auto" */
  device?: Device;
  /** A chat template file that overrides the model's. */
  chatTemplate?: string;
  /** Tokenize the prompt as is, without a chat template. */
  raw?: boolean;
  /** Stop when the model emits `</s>` (a decoder-only model: any of its eos_token_id). @default true */
  stopAtEos?: boolean;
  /** Called with each new token as it is chosen. */
  onToken?: (id: number, step: number) => void;
  onWarning?: (line: string) => void;
}

export interface GenerateResult {
  /** The prompt after the chat template ("" when inputIds were given). */
  renderedPrompt: string;
  templateSource?: ChatTemplateSource;
  inputIds: number[];
  /** New tokens, without the decoder start token; ends with `</s>` when the model stopped. */
  generatedIds: number[];
  /** Generated text, special tokens removed ("" without a tokenizer). */
  text: string;
  provider: Provider;
  fallbackReason?: string;
  /** encoderMs is 0 for a decoder-only model (its prompt is part of every step). */
  timings: { sessionMs: number; encoderMs: number; decodeMs: number; perTokenMs: number };
}

/**
 * Greedy decoding in ONNX Runtime. The encoder runs once (its own graph); the decoder graph then runs once per new
 * token over the whole prefix and returns only the last position's logits — KV-free recompute: O(T²) work, but one
 * graph, no cache plumbing, and exactly the maths that `verify` checks. argmax is over all V rows (padding rows
 * included), as torch's greedy search does.
 *
 * @example
 * const r = await generate("out/hf", { prompt: "What is 2+2?", maxNewTokens: 16 });
 * console.log(r.text, r.provider);
 */
export async function generate(dir: string, options: GenerateOptions): Promise<GenerateResult> {
  const opened = await readAnyModelDir(dir);
  if (opened.kind === "gpt") return generateGpt(opened.model, options);
  const model = opened.model;
  const device = options.device ?? "auto";
  const maxNew = options.maxNewTokens ?? 32;
  if (!Number.isSafeInteger(maxNew) || maxNew < 1) throw new RangeError(`maxNewTokens must be ≥ 1, got ${maxNew}`);
  let tokenizer: Tokenizer | undefined;
  let renderedPrompt = "";
  let templateSource: ChatTemplateSource | undefined;
  let inputIds: number[];
  if (options.inputIds !== undefined) {
    inputIds = [...options.inputIds];
    tokenizer = await loadTokenizer(dir).catch(() => undefined);
  } else {
    if (options.prompt === undefined) throw new MegahubError("USAGE", "generate needs a prompt or input ids");
    tokenizer = await loadTokenizer(dir);
    if (options.raw === true) {
      renderedPrompt = options.prompt;
    } else {
      const t = await resolveChatTemplate(dir, options.chatTemplate);
      templateSource = t.source;
      renderedPrompt = renderChatTemplate(t.template, options.prompt);
    }
    inputIds = tokenizer.encode(renderedPrompt);
  }
  const bad = inputIds.find((id) => !Number.isSafeInteger(id) || id < 0 || id >= model.dims.vocab);
  if (bad !== undefined) throw new MegahubError("USAGE", `input id ${bad} is outside the model's ${model.dims.vocab} rows`);
  const warn = options.onWarning ? { onWarning: options.onWarning } : {};
  const t0 = performance.now();
  const encoder = await openModelGraph(model, { part: "encoder", device, ...warn });
  let decoder: OrtRunner | undefined;
  try {
    // The decoder follows whatever provider the encoder got, so an auto fallback is probed (and reported) once.
    decoder = await openModelGraph(model, { part: "decoder", logits: "last", device: encoder.provider, ...warn });
    const t1 = performance.now();
    const S = inputIds.length;
    const mask = { type: "int64" as const, data: new BigInt64Array(S).fill(1n), dims: [1, S] };
    const enc = await encoder.run({
      input_ids: { type: "int64", data: BigInt64Array.from(inputIds, BigInt), dims: [1, S] },
      attention_mask: mask,
    });
    const states = enc.encoder_hidden_states;
    if (!states) throw new MegahubError("VERIFY", "the encoder graph produced no encoder_hidden_states");
    const t2 = performance.now();
    const generated: number[] = [];
    const prefix = [model.decoderStartId];
    for (let step = 0; step < maxNew; step++) {
      const out = await decoder.run({
        encoder_hidden_states: { type: "float32", data: states.data, dims: states.dims },
        attention_mask: mask,
        decoder_input_ids: { type: "int64", data: BigInt64Array.from(prefix, BigInt), dims: [1, prefix.length] },
      });
      const logits = out.logits;
      if (!logits) throw new MegahubError("VERIFY", "the decoder graph produced no logits");
      const next = argmax(logits.data);
      generated.push(next);
      prefix.push(next);
      options.onToken?.(next, step);
      if (next === model.eosId && (options.stopAtEos ?? true)) break;
    }
    const t3 = performance.now();
    return {
      renderedPrompt,
      ...(templateSource !== undefined ? { templateSource } : {}),
      inputIds,
      generatedIds: generated,
      text: tokenizer?.decode(generated) ?? "",
      provider: encoder.provider,
      ...(encoder.fallbackReason !== undefined ? { fallbackReason: encoder.fallbackReason } : {}),
      timings: {
        sessionMs: t1 - t0,
        encoderMs: t2 - t1,
        decodeMs: t3 - t2,
        perTokenMs: (t3 - t2) / Math.max(1, generated.length),
      },
    };
  } finally {
    await encoder.release();
    await decoder?.release();
  }
}

/** Index of the largest value; the first one on ties, as torch.argmax. */
function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if ((a[i] as number) > (a[best] as number)) best = i;
  return best;
}
