import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseSentencePieceModel, PieceType, serializeSentencePieceModel } from "../src/formats/sentencepiece/model.js";
import { chatTemplatePieces, nonNormalPieces, readKeepTokens, selectPieces, type ForcedPieces } from "../src/ops/vocab/select.js";
import { checkPrunable, prunedSentencePiece, sentencePieceFacts } from "../src/ops/vocab/tokenizer.js";
import { openSentencePiece, type SentencePieceEncoder } from "../src/ops/vocab/count.js";
import { OPENBA_CHAT_TEMPLATE } from "../src/models/openba/spec.js";
import { fixture } from "./helpers/fixtures.js";
import { runPython } from "./helpers/torch.js";

const SPIECE = fixture("tokenizer", "spiece.model");
let sp: SentencePieceEncoder;
let dir: string;
beforeAll(async () => {
  sp = await openSentencePiece(SPIECE);
  dir = await mkdtemp(join(tmpdir(), "megahub-vocab-select-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Debian's python3-sentencepiece in the system interpreter (Google's C++ behind a Python API). */
const HAS_PY_SPM = (() => {
  try {
    runPython("import sentencepiece");
    return true;
  } catch {
    return false;
  }
})();

const none = (byType: number[] = []): ForcedPieces => ({ byType, keepTokens: [], template: [] });

describe("choosing the kept pieces", () => {
  it("--keep N takes forced pieces first, then the most counted (ties: lower id), and returns old-id order", () => {
    const counts = new Float64Array([0, 0, 0, 5, 9, 9, 1, 0, 7, 0]);
    const s = selectPieces(10, counts, none([0, 1, 2]), { kind: "keep", pieces: 6 });
    expect(s.kept).toEqual([0, 1, 2, 4, 5, 8]);
    expect(s.coverage).toBeCloseTo(25 / 31, 12);
    expect(s.usedPieces).toBe(5);
    const t = selectPieces(10, counts, { byType: [0, 1, 2], keepTokens: [9], template: [7] }, { kind: "keep", pieces: 6 });
    expect(t.kept).toEqual([0, 1, 2, 4, 7, 9]);
    expect(() => selectPieces(10, counts, none([0, 1, 2, 3]), { kind: "keep", pieces: 3 })).toThrow(/--keep 3 is fewer than the 4 pieces that must stay/);
    expect(() => selectPieces(10, counts, none(), { kind: "keep", pieces: 11 })).toThrow(/more than the tokenizer's 10 pieces/);
  });

  it("--coverage F keeps the shortest prefix that reaches the share; the curve ends at 100%", () => {
    const counts = new Float64Array([0, 0, 0, 50, 30, 15, 5, 0]);
    const s = selectPieces(8, counts, none([0, 1, 2]), { kind: "coverage", share: 0.8 });
    expect(s.kept).toEqual([0, 1, 2, 3, 4]);
    expect(s.coverage).toBe(0.8);
    expect(selectPieces(8, counts, none([0, 1, 2]), { kind: "coverage", share: 0.81 }).kept).toEqual([0, 1, 2, 3, 4, 5]);
    expect(selectPieces(8, counts, none([0, 1, 2]), { kind: "coverage", share: 1 }).kept).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(s.curve.at(-1)).toEqual({ pieces: 8, coverage: 1 });
    expect(s.curve.some((p) => p.pieces === 5 && p.coverage === 0.8)).toBe(true);
    expect(() => selectPieces(8, counts, none(), { kind: "coverage", share: 1.5 })).toThrow(/--coverage must be in \(0, 1\]/);
    expect(() => selectPieces(8, new Float64Array(8), none(), { kind: "keep", pieces: 4 })).toThrow(/counts no tokens/);
  });

  it("always keeps every non-NORMAL piece of the real tokenizer: <pad> </s> <unk> and the 256 byte pieces", () => {
    const forced = nonNormalPieces(sp.model);
    expect(forced).toHaveLength(259);
    expect(forced.map((id) => sp.model.pieces[id]?.type).filter((t) => t === PieceType.BYTE)).toHaveLength(256);
    expect(sentencePieceFacts(sp.model)).toEqual({ modelType: "unigram", byteFallback: true, bytePieces: 256 });
  });

  it("reads --keep-tokens (spiece.vocab lines work), accepts OpenBA's added tokens, and names an unknown token's line", async () => {
    const file = join(dir, "keep.txt");
    const vocab = (await readFile(fixture("tokenizer", "spiece.vocab"), "utf8")).split("\n");
    await writeFile(file, `${vocab[700]}\n▁the\r\n\n<extra_id_3>\n<S>\n${sp.model.pieces[950]?.piece}\n`);
    const ids = await readKeepTokens(file, sp.model);
    expect(ids).toContain(700);
    expect(ids).toContain(950);
    await writeFile(file, "▁the\nthe\n");
    await expect(readKeepTokens(file, sp.model)).rejects.toThrow(/line 2: "the" is not a token of this tokenizer \(did you mean "▁the"/);
    await writeFile(file, "▁the\nqqqzzz\n");
    await expect(readKeepTokens(file, sp.model)).rejects.toThrow(/line 2: "qqqzzz" is not a token of this tokenizer$/);
  });

  it("keeps the pieces a chat template's own text emits (none for OpenBA's, whose text is only added tokens)", () => {
    expect(chatTemplatePieces(OPENBA_CHAT_TEMPLATE, sp.model, (t) => sp.encode(t))).toEqual([]);
    const template =
      "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}" +
      "{{ 'Human: ' if m['role'] == 'user' else 'Assistant: ' }}{{ m['content'] }}\n{% endfor %}<S>";
    const ids = chatTemplatePieces(template, sp.model, (t) => sp.encode(t));
    const expected = new Set([...sp.encode("Human: "), ...sp.encode("Assistant: "), ...sp.encode("\n")]);
    expect(ids).toEqual([...expected].sort((a, b) => a - b));
    expect(ids.length).toBeGreaterThan(3);
    expect(() => chatTemplatePieces("{{ raise_exception('never') }}", sp.model, (t) => sp.encode(t))).toThrow(/renders no conversation/);
  });
});

describe("the pruned sentencepiece model", () => {
  it("keeps the chosen pieces in order with scores and types, sets trainer_spec.vocab_size, keeps the rest byte for byte", () => {
    const kept = [...nonNormalPieces(sp.model), 259, 300, 301, 999].sort((a, b) => a - b);
    const out = prunedSentencePiece(sp.model, kept);
    const back = parseSentencePieceModel(out.bytes, "pruned");
    expect(back.pieces.map((p) => [p.piece, p.score, p.type])).toEqual(kept.map((id) => [sp.model.pieces[id]?.piece, sp.model.pieces[id]?.score, sp.model.pieces[id]?.type]));
    const spec = (m: typeof back) => m.otherFields.find(([no]) => no === 2)?.[2] as Uint8Array;
    const fields = (raw: Uint8Array) => {
      const inner = new BinaryReader(raw).bytes();
      const r = new BinaryReader(inner);
      const f: [number, string][] = [];
      while (r.pos < r.len) {
        const start = r.pos;
        const [no, wt] = r.tag();
        r.skip(wt, no);
        f.push([no, Buffer.from(inner.subarray(start, r.pos)).toString("hex")]);
      }
      return f;
    };
    const before = fields(spec(sp.model));
    const after = fields(spec(back));
    expect(after.map(([no]) => no)).toEqual(before.map(([no]) => no));
    expect(after.filter(([no], i) => no !== 4 && after[i]?.[1] !== before[i]?.[1])).toEqual([]);
    const vocabSize = new BinaryReader(Buffer.from(after.find(([no]) => no === 4)?.[1] ?? "", "hex"));
    vocabSize.tag();
    expect(vocabSize.int32()).toBe(kept.length);
    const hex = (m: typeof back) => m.otherFields.filter(([no]) => no !== 2).map(([no, wt, raw]) => [no, wt, Buffer.from(raw).toString("hex")]);
    expect(hex(back)).toEqual(hex(sp.model));
    expect(hex(back).length).toBeGreaterThan(0); // normalizer_spec (and the denormalizer, when present) came through
  });

  it("drops self_test_data (sentencepiece re-checks it at load and pruning may change its pieces)", () => {
    const withTest = { ...sp.model, otherFields: [...sp.model.otherFields, [4, WireType.LengthDelimited, new BinaryWriter().bytes(new Uint8Array([10, 0])).finish()] as [number, WireType, Uint8Array]] };
    const out = prunedSentencePiece(parseSentencePieceModel(serializeSentencePieceModel(withTest), "x"), [0, 1, 2]);
    expect(out.notes.join(" ")).toContain("self_test_data dropped");
    expect(parseSentencePieceModel(out.bytes, "y").otherFields.some(([no]) => no === 4)).toBe(false);
  });

  it("refuses BPE models and tokenizers without OpenBA's fixed ids", () => {
    const spec = sp.model.otherFields.find(([no]) => no === 2)?.[2] as Uint8Array;
    const bpeSpec = new BinaryWriter().bytes(new BinaryWriter().raw(new BinaryReader(spec).bytes()).tag(3, WireType.Varint).int32(2).finish()).finish();
    const bpe = { ...sp.model, otherFields: sp.model.otherFields.map((f): [number, WireType, Uint8Array] => (f[0] === 2 ? [2, f[1], bpeSpec] : f)) };
    expect(sentencePieceFacts(bpe).modelType).toBe("bpe");
    expect(() => checkPrunable(bpe, "bpe.model")).toThrow(/BPE sentencepiece model/);
    const swapped = { ...sp.model, pieces: [sp.model.pieces[1], sp.model.pieces[0], ...sp.model.pieces.slice(2)].filter((p) => p !== undefined) };
    expect(() => checkPrunable(swapped, "x.model")).toThrow(/id 0 is "<\/s>", OpenBA expects "<pad>"/);
  });

  it.skipIf(!HAS_PY_SPM)("loads in Python's sentencepiece with the kept pieces at their new ids", async () => {
    const kept = [...nonNormalPieces(sp.model), ...Array.from({ length: 300 }, (_, i) => 259 + 2 * i)].sort((a, b) => a - b);
    const file = join(dir, "p.model");
    await writeFile(file, prunedSentencePiece(sp.model, kept).bytes);
    const py = JSON.parse(
      runPython(
        "import sys, json, sentencepiece as s\nm = s.SentencePieceProcessor(model_file=sys.argv[1])\n" +
          "print(json.dumps({'n': m.vocab_size(), 'pieces': [m.id_to_piece(i) for i in range(m.vocab_size())], 'bytes': sum(m.is_byte(i) for i in range(m.vocab_size()))}))",
        [file],
      ),
    ) as { n: number; pieces: string[]; bytes: number };
    expect(py.n).toBe(kept.length);
    expect(py.bytes).toBe(256);
    expect(py.pieces).toEqual(kept.map((id) => sp.model.pieces[id]?.piece));
  });
});
