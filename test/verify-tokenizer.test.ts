import { execFileSync } from "node:child_process";
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_CHAT_TEMPLATE, renderChatTemplate, resolveChatTemplate } from "../src/tokenizers/chat-template.js";
import { loadTokenizer, splitOnSpecials, type Tokenizer } from "../src/tokenizers/tokenizer.js";

const SPIECE = "fixtures/tokenizer/spiece.model";

/** Ids from Python sentencepiece 0.2.2 (`sp.encode(text)`) on fixtures/tokenizer/spiece.model: an independent oracle. */
const PYTHON_SENTENCEPIECE: Record<string, number[]> = {
  "Hello world": [259, 457, 271, 577, 273, 259, 305, 330, 284, 272],
  "Covered Software means": [604, 273, 328, 288, 300, 718, 747],
  "naïve café — 中文 🙂": [259, 289, 267, 198, 178, 328, 271, 259, 270, 267, 290, 198, 172, 259, 229, 131, 151, 259, 766, 259, 243, 162, 156, 133],
  "  two  spaces\tand\ttabs": [259, 268, 305, 273, 259, 261, 283, 267, 360, 261, 297, 259, 268, 267, 302, 261],
  "Ｆｕｌｌ width ﬁ": [615, 282, 577, 259, 305, 269, 272, 344, 259, 290, 269],
};

let tok: Tokenizer;
let dir: string;

beforeAll(async () => {
  tok = await loadTokenizer(SPIECE);
  dir = await mkdtemp(join(tmpdir(), "megahub-tok-"));
  await copyFile(SPIECE, join(dir, "spiece.model"));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe("sentencepiece (WASM build of the C++ library)", () => {
  it("reads sp_size from the model and places OpenBA's added ids after it", () => {
    expect(tok.spSize).toBe(1000);
    expect(tok.specials.get("<extra_id_0>")).toBe(1099);
    expect(tok.specials.get("<extra_id_99>")).toBe(1000);
    expect(tok.specials.get("<R>")).toBe(1100);
    expect(tok.specials.get("<S>")).toBe(1101);
    expect(tok.specials.get("<X>")).toBe(1102);
    expect(tok.specials.get("</s>")).toBe(1);
  });

  for (const [text, ids] of Object.entries(PYTHON_SENTENCEPIECE)) {
    it(`encodes ${JSON.stringify(text)} exactly as Python sentencepiece, then appends </s>`, () => {
      expect(tok.encode(text)).toEqual([...ids, 1]);
      expect(tok.encode(text, { addEos: false })).toEqual(ids);
    });
  }

  it("round-trips text through byte fallback", () => {
    expect(tok.decode(tok.encode("naïve café — 中文 🙂"))).toBe("naïve café — 中文 🙂");
  });

  it.skipIf(!existsSync("/usr/bin/spm_encode"))("matches Debian's spm_encode on every line of the held-out corpus", async () => {
    const lines = (await readFile("fixtures/corpus/heldout.txt", "utf8")).split("\n").filter((l) => l.trim().length > 0);
    const out = execFileSync("spm_encode", [`--model=${SPIECE}`, "--output_format=id"], { input: lines.join("\n") + "\n" });
    const expected = out.toString("utf8").trimEnd().split("\n");
    expect(expected.length).toBe(lines.length);
    const mismatches = lines.filter((l, i) => tok.encode(l, { addEos: false }).join(" ") !== (expected[i] ?? "").trim());
    expect(mismatches).toEqual([]);
  });
});

describe("special tokens", () => {
  it("maps special-token strings to their ids instead of sentencepiece pieces, stripping the spaces around them", () => {
    const hello = PYTHON_SENTENCEPIECE["Hello world"] as number[];
    expect(tok.encode("<S> Hello world <extra_id_0>")).toEqual([1101, ...hello, 1099, 1]);
    expect(tok.encode("<S>Hello world<extra_id_0>")).toEqual([1101, ...hello, 1099, 1]);
    expect(tok.encode("Hello world</s>", { addEos: false })).toEqual([...hello, 1]);
  });

  it("strips whitespace on both sides of a special token, as HF's slow tokenizer does", () => {
    expect(splitOnSpecials("a  <S>  hi  <extra_id_0> ", ["<S>", "<extra_id_0>"])).toEqual([
      { text: "a", special: false },
      { text: "<S>", special: true },
      { text: "hi", special: false },
      { text: "<extra_id_0>", special: true },
    ]);
  });

  it("takes the longest special token (<extra_id_10> is not <extra_id_1> + '0>')", () => {
    expect(tok.encode("<extra_id_10>", { addEos: false })).toEqual([1089]);
    expect(splitOnSpecials("a<extra_id_1>b", ["<extra_id_10>", "<extra_id_1>"])).toEqual([
      { text: "a", special: false },
      { text: "<extra_id_1>", special: true },
      { text: "b", special: false },
    ]);
  });

  it("drops special tokens when decoding unless asked to keep them", () => {
    const ids = tok.encode("<S> Hello world <extra_id_0>");
    expect(tok.decode(ids)).toBe("Hello world");
    expect(tok.decode(ids, { keepSpecial: true })).toBe("<S>Hello world<extra_id_0></s>");
  });

  it("honours added_tokens.json in a model dir", async () => {
    await writeFile(join(dir, "added_tokens.json"), JSON.stringify({ "<R>": 1100, "<S>": 1101, "<X>": 1102, "<new>": 1103 }));
    const t = await loadTokenizer(dir);
    expect(t.encode("<new> Hello world", { addEos: false })).toEqual([1103, ...(PYTHON_SENTENCEPIECE["Hello world"] as number[])]);
    await rm(join(dir, "added_tokens.json"));
  });
});

describe("chat template", () => {
  it("renders OpenBA's default <S> {input} <extra_id_0>", () => {
    expect(renderChatTemplate(DEFAULT_CHAT_TEMPLATE, "What is 2+2?")).toBe("<S> What is 2+2? <extra_id_0>");
  });

  it("uses tokenizer_config.json's chat_template, then chat_template.jinja, then a --chat-template file", async () => {
    expect((await resolveChatTemplate(dir)).source).toBe("default");
    await writeFile(join(dir, "chat_template.jinja"), "<X> {{ input }} <extra_id_1>");
    let t = await resolveChatTemplate(dir);
    expect(t.source).toBe("chat_template.jinja");
    expect(renderChatTemplate(t.template, "hi")).toBe("<X> hi <extra_id_1>");
    await writeFile(
      join(dir, "tokenizer_config.json"),
      JSON.stringify({ chat_template: "{% for m in messages %}<R> {{ m.content | upper }}{% endfor %}" }),
    );
    t = await resolveChatTemplate(dir);
    expect(t.source).toBe("tokenizer_config.json");
    expect(renderChatTemplate(t.template, "hi")).toBe("<R> HI");
    const file = join(dir, "mine.jinja");
    await writeFile(file, "{{ messages[0]['content'] }} <extra_id_0>");
    t = await resolveChatTemplate(dir, file);
    expect(t.source).toBe("file");
    expect(tok.encode(renderChatTemplate(t.template, "Hello world"))).toEqual([
      ...(PYTHON_SENTENCEPIECE["Hello world"] as number[]),
      1099,
      1,
    ]);
  });
});
