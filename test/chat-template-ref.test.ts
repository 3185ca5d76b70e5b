// OpenBA's chat template, checked against transformers itself: apply_chat_template(tokenize=True) must give the
// ids of OpenBA's documented usage, tokenizer("<S> {input} <extra_id_0>") (which appends </s>), and megahub's
// generate must feed the model those same ids.
import { copyFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { planTokenizerFiles } from "../src/models/openba/tokenizer.js";
import { OPENBA_CHAT_TEMPLATE } from "../src/models/openba/spec.js";
import { renderChatTemplate } from "../src/tokenizers/chat-template.js";
import { loadTokenizer } from "../src/tokenizers/tokenizer.js";
import { HAS_REF, runRefPython } from "./helpers/refpy.js";

const PROMPTS = ["Translate to German: the house is small.", "  leading spaces", "数学题：1+1=?", "<S> nested", "x"];

describe.skipIf(!HAS_REF)("the OpenBA chat template in transformers", () => {
  let dir = "";
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "megahub-chat-"));
    const { files } = await planTokenizerFiles(join(import.meta.dirname, "..", "fixtures", "tokenizer", "spiece.model"), 1 << 20);
    for (const f of files) {
      if (f.kind === "copy") await copyFile(f.from, join(dir, f.path));
      else if (f.kind === "text") await writeFile(join(dir, f.path), f.content);
    }
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("apply_chat_template ids = OpenBA's documented tokenizer call = megahub generate's input ids", async () => {
    const out = runRefPython(
      `import json, sys
from transformers import T5Tokenizer
t = T5Tokenizer.from_pretrained(sys.argv[1])
res = []
for x in json.loads(sys.argv[2]):
    a = t.apply_chat_template([{"role": "user", "content": x}], tokenize=True)
    a = list(a["input_ids"]) if hasattr(a, "keys") else list(a)
    res.append({"chat": a, "documented": t("<S> " + x + " <extra_id_0>").input_ids})
print(json.dumps(res))`,
      [dir, JSON.stringify(PROMPTS)],
    );
    const ref = JSON.parse(out.trim().split("\n").at(-1) as string) as Array<{ chat: number[]; documented: number[] }>;
    const tok = await loadTokenizer(dir);
    for (const [i, x] of PROMPTS.entries()) {
      const r = ref[i] as { chat: number[]; documented: number[] };
      expect(r.chat, x).toEqual(r.documented);
      expect(r.chat.at(-1)).toBe(1);
      // generate's path: render the template, tokenize without adding special tokens. Characters the tiny
      // fixture vocabulary lacks are left out here: sentencepiece spells them in byte-fallback pieces (as megahub
      // does, test/verify-tokenizer.test.ts), transformers 5's converted T5Tokenizer gives <unk> — a tokenizer
      // difference, not a template one.
      if (r.chat.includes(2)) continue;
      expect(tok.encode(renderChatTemplate(OPENBA_CHAT_TEMPLATE, x), { addEos: false }), x).toEqual(r.chat);
    }
  });
});
