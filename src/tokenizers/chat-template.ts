import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { MegahubError } from "../errors.js";
import { OPENBA_CHAT_TEMPLATE } from "../models/openba/spec.js";

/**
 * OpenBA's prompt format, `<S> {input} <extra_id_0>`, as an HF chat template: the instruction goes between the
 * `<S>` (start-of-sample) token and the first sentinel, which the model fills in. The string itself lives in the
 * model spec (src/models/openba/spec.ts), the one place `convert` also reads when it writes tokenizer_config.json
 * (`chat_template`) and chat_template.jinja; it is re-exported here under the name the verify API uses.
 */
export const DEFAULT_CHAT_TEMPLATE: string = OPENBA_CHAT_TEMPLATE;

export type ChatTemplateSource = "file" | "tokenizer_config.json" | "chat_template.jinja" | "default";

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/**
 * Finds the chat template to use, in order: a file the user names, tokenizer_config.json's `chat_template` (a
 * string, or HF's list of named templates, taking "default"), chat_template.jinja in the model dir, then
 * {@link DEFAULT_CHAT_TEMPLATE}.
 */
export async function resolveChatTemplate(
  modelDir: string,
  file?: string,
): Promise<{ template: string; source: ChatTemplateSource }> {
  if (file !== undefined) {
    try {
      return { template: await readFile(file, "utf8"), source: "file" };
    } catch (e) {
      throw new MegahubError("USAGE", `cannot read chat template (${(e as NodeJS.ErrnoException).code ?? String(e)})`, {
        file,
      });
    }
  }
  const config = await readFile(join(modelDir, "tokenizer_config.json"), "utf8").catch(() => undefined);
  if (config !== undefined) {
    const ct = (JSON.parse(config) as { chat_template?: unknown }).chat_template;
    if (typeof ct === "string") return { template: ct, source: "tokenizer_config.json" };
    if (Array.isArray(ct)) {
      const named = ct.find((t: unknown) => (t as { name?: unknown }).name === "default") as { template?: unknown } | undefined;
      if (typeof named?.template === "string") return { template: named.template, source: "tokenizer_config.json" };
    }
  }
  const jinja = await readFile(join(modelDir, "chat_template.jinja"), "utf8").catch(() => undefined);
  if (jinja !== undefined) return { template: jinja, source: "chat_template.jinja" };
  return { template: DEFAULT_CHAT_TEMPLATE, source: "default" };
}

/**
 * Renders a template for one user prompt (or a whole conversation) with the variables HF passes:
 * `messages`, `add_generation_prompt`, `eos_token`, `pad_token`, `unk_token`, and `input` (the last user message,
 * for simple templates written as `<S> {{ input }} <extra_id_0>`). `tokens` overrides the special-token strings
 * (OpenBA's by default) with a tokenizer's own, e.g. `bos_token` for Llama templates.
 */
export function renderChatTemplate(
  template: string,
  prompt: string | readonly ChatMessage[],
  tokens: Readonly<Record<string, string>> = {},
): string {
  const messages = typeof prompt === "string" ? [{ role: "user", content: prompt }] : prompt;
  const lastUser = [...messages].reverse().find((m) => m.role === "user")?.content ?? "";
  try {
    return new Template(template).render({
      messages: messages.map((m) => ({ ...m })),
      input: lastUser,
      add_generation_prompt: true,
      eos_token: "</s>",
      pad_token: "<pad>",
      unk_token: "<unk>",
      ...tokens,
    });
  } catch (e) {
    throw new MegahubError("USAGE", `chat template failed to render: ${(e as Error).message}`);
  }
}
