import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { MegahubError } from "../../errors.js";
import { PieceType, serializeSentencePieceModel, type SentencePieceModel } from "../../formats/sentencepiece/model.js";
import type { PlannedFile } from "../../plan/plan.js";
import { planTokenizerFiles, type TokenizerFacts } from "../../models/openba/tokenizer.js";

/** sentencepiece_model.proto field numbers this module reads or rewrites. */
const MODEL_TRAINER_SPEC = 2;
const MODEL_SELF_TEST_DATA = 4;
const TRAINER_MODEL_TYPE = 3;
const TRAINER_VOCAB_SIZE = 4;
const TRAINER_BYTE_FALLBACK = 35;
const MODEL_TYPES: Record<number, string> = { 1: "unigram", 2: "bpe", 3: "word", 4: "char" };

/** The trainer_spec facts pruning depends on. */
export interface SentencePieceFacts {
  /** trainer_spec.model_type (proto default: unigram). */
  modelType: string;
  /** trainer_spec.byte_fallback. */
  byteFallback: boolean;
  /** BYTE pieces present (256 with byte fallback). */
  bytePieces: number;
}

/** What the trainer_spec says about a model, read with the protobuf wire reader. */
export function sentencePieceFacts(model: SentencePieceModel): SentencePieceFacts {
  let modelType = 1;
  let byteFallback = false;
  const spec = model.otherFields.find(([no, wt]) => no === MODEL_TRAINER_SPEC && wt === WireType.LengthDelimited);
  if (spec) {
    const r = new BinaryReader(new BinaryReader(spec[2]).bytes());
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      if (no === TRAINER_MODEL_TYPE && wt === WireType.Varint) modelType = r.int32();
      else if (no === TRAINER_BYTE_FALLBACK && wt === WireType.Varint) byteFallback = r.bool();
      else r.skip(wt, no);
    }
  }
  const bytePieces = model.pieces.filter((p) => p.type === PieceType.BYTE).length;
  return { modelType: MODEL_TYPES[modelType] ?? `type ${modelType}`, byteFallback, bytePieces };
}

/**
 * Checks that a tokenizer can be pruned piece by piece and is OpenBA's: `<pad>` `</s>` `<unk>` at 0, 1, 2. BPE is
 * refused: its encoder reaches a piece only through its merge parents, so dropping a parent silently changes how
 * kept pieces are produced; unigram (OpenBA's mT5 model), word and char models only lose alternatives.
 */
export function checkPrunable(model: SentencePieceModel, file: string): SentencePieceFacts {
  const facts = sentencePieceFacts(model);
  if (facts.modelType === "bpe") {
    throw new MegahubError("UNSUPPORTED", "this is a BPE sentencepiece model: pruning it needs every kept piece's merge parents kept too, which megahub does not do (OpenBA's tokenizer is unigram)", { file });
  }
  const expect = ["<pad>", "</s>", "<unk>"];
  expect.forEach((piece, id) => {
    if (model.pieces[id]?.piece !== piece) {
      throw new MegahubError("MODEL", `id ${id} is "${model.pieces[id]?.piece ?? "missing"}", OpenBA expects "${piece}"`, { file });
    }
  });
  return facts;
}

/**
 * The pruned ModelProto: the kept pieces in their original order (scores, types and unknown piece fields as they
 * were), trainer_spec.vocab_size set to the new piece count (every other trainer_spec field byte for byte), the
 * normalizer untouched. self_test_data is dropped: sentencepiece re-runs those samples at load time and rejects the
 * model when a sample's pieces changed, which pruning may legitimately cause.
 */
export function prunedSentencePiece(model: SentencePieceModel, kept: readonly number[]): { model: SentencePieceModel; bytes: Uint8Array; notes: string[] } {
  const notes: string[] = [];
  const pieces = kept.map((id) => {
    const p = model.pieces[id];
    if (!p) throw new RangeError(`kept piece ${id} outside 0..${model.pieces.length - 1}`);
    return p;
  });
  const otherFields: SentencePieceModel["otherFields"] = [];
  for (const field of model.otherFields) {
    const [no, wt, raw] = field;
    if (no === MODEL_SELF_TEST_DATA) {
      notes.push("self_test_data dropped from spiece.model (its expected pieces were for the full vocabulary)");
    } else if (no === MODEL_TRAINER_SPEC && wt === WireType.LengthDelimited) {
      otherFields.push([no, wt, new BinaryWriter().bytes(withVocabSize(new BinaryReader(raw).bytes(), pieces.length)).finish()]);
    } else {
      otherFields.push(field);
    }
  }
  const next: SentencePieceModel = { pieces, otherFields };
  return { model: next, bytes: serializeSentencePieceModel(next), notes };
}

/** A TrainerSpec with vocab_size replaced; every other field re-emitted from its original bytes, tag included. */
function withVocabSize(spec: Uint8Array, vocabSize: number): Uint8Array {
  const r = new BinaryReader(spec);
  const w = new BinaryWriter();
  let written = false;
  while (r.pos < r.len) {
    const start = r.pos;
    const [no, wt] = r.tag();
    r.skip(wt, no);
    if (no === TRAINER_VOCAB_SIZE && wt === WireType.Varint) {
      if (!written) w.tag(TRAINER_VOCAB_SIZE, WireType.Varint).int32(vocabSize);
      written = true;
    } else {
      w.raw(spec.subarray(start, r.pos));
    }
  }
  if (!written) w.tag(TRAINER_VOCAB_SIZE, WireType.Varint).int32(vocabSize);
  return w.finish();
}

/**
 * HF tokenizer files for the pruned model, made by the same code `convert` uses (openba-tokenizer.ts), so
 * added_tokens.json, special_tokens_map.json and tokenizer_config.json follow from the new piece count
 * (`<extra_id_k>` = new_sp + 99 − k, `<R>` `<S>` `<X>` = new_sp + 100 … 102). That code reads a .model file; the
 * new bytes go through a private temporary file and are then planned from memory.
 */
export async function prunedTokenizerFiles(
  spiece: Uint8Array,
  embeddingRows: number,
  chatTemplate: string,
): Promise<{ files: PlannedFile[]; facts: TokenizerFacts }> {
  const dir = await mkdtemp(join(tmpdir(), "megahub-prune-vocab-"));
  try {
    const path = join(dir, "spiece.model");
    await writeFile(path, spiece);
    const planned = await planTokenizerFiles(path, embeddingRows, chatTemplate);
    const files = planned.files.map((f): PlannedFile => (f.kind === "copy" && f.path === "spiece.model" ? { kind: "text", path: f.path, content: spiece } : f));
    return { files, facts: planned.facts };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
