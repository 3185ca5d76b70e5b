import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { formatError } from "../../errors.js";

/** sentencepiece_model.proto SentencePiece.Type */
export const PieceType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export interface Piece {
  piece: string;
  score: number;
  type: number;
  /** Fields of the SentencePiece message we do not interpret, kept verbatim. */
  unknown: Uint8Array[];
}

/**
 * A sentencepiece ModelProto: the pieces are decoded (field 1); every other top-level field (trainer_spec,
 * normalizer_spec, denormalizer_spec, self_test_data …) is kept as raw bytes so a rewritten model changes only its
 * pieces.
 */
export interface SentencePieceModel {
  pieces: Piece[];
  /** [fieldNo, wireType, raw bytes of the field value] in original order. */
  otherFields: [number, WireType, Uint8Array][];
}

export function parseSentencePieceModel(bytes: Uint8Array, file: string): SentencePieceModel {
  const model: SentencePieceModel = { pieces: [], otherFields: [] };
  try {
    const r = new BinaryReader(bytes);
    while (r.pos < r.len) {
      const [no, wt] = r.tag();
      if (no === 1 && wt === WireType.LengthDelimited) {
        model.pieces.push(parsePiece(r.bytes()));
      } else {
        model.otherFields.push([no, wt, r.skip(wt, no)]);
      }
    }
  } catch (e) {
    if (e instanceof Error && e.name === "MegahubError") throw e;
    throw formatError(`not a sentencepiece model (${(e as Error).message})`, { file });
  }
  if (model.pieces.length === 0) {
    throw formatError("sentencepiece model has no pieces", { file });
  }
  return model;
}

function parsePiece(bytes: Uint8Array): Piece {
  const r = new BinaryReader(bytes);
  const p: Piece = { piece: "", score: 0, type: PieceType.NORMAL, unknown: [] };
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no === 1 && wt === WireType.LengthDelimited) p.piece = r.string();
    else if (no === 2 && wt === WireType.Bit32) p.score = r.float();
    else if (no === 3 && wt === WireType.Varint) p.type = r.int32();
    else {
      const start = r.pos;
      r.skip(wt, no);
      p.unknown.push(rawField(no, wt, bytes.subarray(start, r.pos)));
    }
  }
  return p;
}

function rawField(no: number, wt: WireType, value: Uint8Array): Uint8Array {
  return new BinaryWriter().tag(no, wt).raw(value).finish();
}

export function serializeSentencePieceModel(model: SentencePieceModel): Uint8Array {
  const w = new BinaryWriter();
  for (const p of model.pieces) {
    w.tag(1, WireType.LengthDelimited).fork();
    w.tag(1, WireType.LengthDelimited).string(p.piece);
    w.tag(2, WireType.Bit32).float(p.score);
    if (p.type !== PieceType.NORMAL) w.tag(3, WireType.Varint).int32(p.type);
    for (const u of p.unknown) w.raw(u);
    w.join();
  }
  for (const [no, wt, raw] of model.otherFields) {
    // skip() returned the value bytes (for length-delimited: including the length prefix), so re-emit tag + raw.
    w.tag(no, wt).raw(raw);
  }
  return w.finish();
}
