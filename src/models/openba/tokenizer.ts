import { readFile } from "node:fs/promises";
import { MegahubError } from "../../errors.js";
import { parseSentencePieceModel } from "../../formats/sentencepiece/model.js";
import { OPENBA_CHAT_TEMPLATE, OPENBA_SPECIAL } from "./spec.js";
import type { PlannedFile } from "../../plan/plan.js";

export interface TokenizerFacts {
  spSize: number;
  /** sp pieces + 100 sentinels + <R> <S> <X>. */
  trueVocab: number;
  added: Record<string, number>;
}

/** OpenBA's ids beyond sentencepiece: `<extra_id_k>` = sp + 99 − k, then `<R>` `<S>` `<X>` (openba-format.md §8). */
export function openbaAddedTokens(spSize: number): Record<string, number> {
  const added: Record<string, number> = {};
  for (let k = OPENBA_SPECIAL.sentinels - 1; k >= 0; k--) added[`<extra_id_${k}>`] = spSize + OPENBA_SPECIAL.sentinels - 1 - k;
  OPENBA_SPECIAL.modeTokens.forEach((t, i) => (added[t] = spSize + OPENBA_SPECIAL.sentinels + i));
  return added;
}

/**
 * Reads a sentencepiece model and plans the HF tokenizer files with OpenBA's ids, after checking that the model fits
 * the embedding (every token has a row) and that its fixed ids are where OpenBA expects them.
 */
export async function planTokenizerFiles(
  spiecePath: string,
  embeddingRows: number,
  chatTemplate = OPENBA_CHAT_TEMPLATE,
): Promise<{ files: PlannedFile[]; facts: TokenizerFacts }> {
  const bytes = await readFile(spiecePath);
  const model = parseSentencePieceModel(bytes, spiecePath);
  const spSize = model.pieces.length;
  const trueVocab = spSize + OPENBA_SPECIAL.extraRows;
  if (trueVocab > embeddingRows) {
    throw new MegahubError(
      "MODEL",
      `tokenizer has ${spSize} pieces + ${OPENBA_SPECIAL.extraRows} OpenBA special tokens = ${trueVocab}, but the embedding has only ${embeddingRows} rows: wrong tokenizer for this checkpoint`,
      { file: spiecePath },
    );
  }
  const expect: [number, string][] = [
    [OPENBA_SPECIAL.pad, "<pad>"],
    [OPENBA_SPECIAL.eos, "</s>"],
    [OPENBA_SPECIAL.unk, "<unk>"],
  ];
  for (const [id, piece] of expect) {
    if (model.pieces[id]?.piece !== piece) {
      throw new MegahubError("MODEL", `id ${id} is "${model.pieces[id]?.piece}", OpenBA expects "${piece}"`, { file: spiecePath });
    }
  }
  const added = openbaAddedTokens(spSize);
  const sentinels = Array.from({ length: OPENBA_SPECIAL.sentinels }, (_, k) => `<extra_id_${k}>`);
  const special = { eos_token: "</s>", unk_token: "<unk>", pad_token: "<pad>", additional_special_tokens: sentinels };
  const addedDecoder: Record<string, unknown> = {};
  for (const [content, id] of Object.entries(added).sort((a, b) => a[1] - b[1])) {
    addedDecoder[String(id)] = { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
  }
  const tokenizerConfig = {
    tokenizer_class: "OpenBATokenizer",
    auto_map: { AutoTokenizer: [`${"OpenNLG/OpenBA-V2-Based"}--tokenization_openba.OpenBATokenizer`, null] },
    extra_ids: OPENBA_SPECIAL.sentinels,
    ...special,
    added_tokens_decoder: addedDecoder,
    model_max_length: 1_000_000_000_000_000,
    sp_model_kwargs: {},
    chat_template: chatTemplate,
  };
  const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;
  const files: PlannedFile[] = [
    { kind: "copy", path: "spiece.model", from: spiecePath, bytes: bytes.byteLength },
    { kind: "text", path: "tokenizer_config.json", content: json(tokenizerConfig) },
    { kind: "text", path: "special_tokens_map.json", content: json(special) },
    { kind: "text", path: "added_tokens.json", content: json(Object.fromEntries(OPENBA_SPECIAL.modeTokens.map((t) => [t, added[t]]))) },
    { kind: "text", path: "chat_template.jinja", content: chatTemplate },
  ];
  return { files, facts: { spSize, trueVocab, added } };
}
