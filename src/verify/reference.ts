import { MegahubError } from "../errors.js";
import { readSafetensors, type SafetensorsFile } from "../formats/safetensors/read.js";
import { FileSource } from "../io/byte-source.js";
import type { Feed } from "./ort-session.js";

/** Encoder/decoder inputs for one teacher-forced forward pass, all [B, ·] int64. */
export interface ForwardInputs {
  batch: number;
  encoderLength: number;
  decoderLength: number;
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  decoderInputIds: BigInt64Array;
  /**
   * A decoder-only model's inputs (the file has no decoder_input_ids): logits are per input_ids position, so
   * decoderLength = encoderLength and decoderInputIds is input_ids itself.
   */
  decoderOnly?: boolean;
}

/** A reference file: inputs plus the logits [B, T, V] an independent implementation produced for them. */
export interface ReferenceLogits extends ForwardInputs {
  vocab: number;
  logits: Float32Array;
  /** `__metadata__.compute_dtype` when the producer recorded the precision it computed in. */
  computeDtype?: string;
}

/**
 * Reads a reference safetensors file: `input_ids` I64 [B,S], optional `attention_mask` [B,S] (any integer or bool
 * dtype; all ones when absent), `decoder_input_ids` I64 [B,T] and, unless `requireLogits` is false, `logits` F32
 * [B,T,V]. Without `decoder_input_ids` the file is a decoder-only model's (scripts/gpt_reference.py): T = S and the
 * logits are per input position. Shapes are cross-checked so a mismatch fails here, not as a confusing ORT error.
 */
export async function readReference(path: string, requireLogits: true): Promise<ReferenceLogits>;
export async function readReference(path: string, requireLogits: false): Promise<ForwardInputs>;
export async function readReference(path: string, requireLogits: boolean): Promise<ForwardInputs | ReferenceLogits> {
  const source = await FileSource.open(path).catch((e: unknown) => {
    throw new MegahubError("USAGE", `cannot open reference (${(e as NodeJS.ErrnoException).code ?? String(e)})`, {
      file: path,
    });
  });
  try {
    const st = await readSafetensors(source);
    const ids = await readInts(st, "input_ids", path, true);
    const decoderOnly = st.get("decoder_input_ids") === undefined;
    const dec = decoderOnly ? ids : await readInts(st, "decoder_input_ids", path, true);
    const [B = 0, S = 0] = ids.shape;
    const [B2 = 0, T = 0] = dec.shape;
    if (ids.shape.length !== 2 || dec.shape.length !== 2 || B !== B2) {
      throw new MegahubError("FORMAT", `input_ids [${ids.shape}] and decoder_input_ids [${dec.shape}] must be [B,S] and [B,T]`, {
        file: path,
      });
    }
    const mask = st.get("attention_mask") ? await readInts(st, "attention_mask", path, false) : undefined;
    if (mask && mask.shape.join(",") !== ids.shape.join(",")) {
      throw new MegahubError("FORMAT", `attention_mask [${mask.shape}] must match input_ids [${ids.shape}]`, { file: path });
    }
    const inputs: ForwardInputs = {
      batch: B,
      encoderLength: S,
      decoderLength: T,
      inputIds: ids.data,
      attentionMask: mask?.data ?? new BigInt64Array(B * S).fill(1n),
      decoderInputIds: dec.data,
      ...(decoderOnly ? { decoderOnly: true } : {}),
    };
    if (!requireLogits) return inputs;
    const e = st.get("logits");
    if (!e || e.dtype !== "F32" || e.shape.length !== 3 || e.shape[0] !== B || e.shape[1] !== T) {
      throw new MegahubError("FORMAT", `logits must be F32 [${B}, ${T}, V]${e ? `, got ${e.dtype} [${e.shape}]` : ", missing"}`, {
        file: path,
      });
    }
    const bytes = await st.tensorSource(e).read(0, e.end - e.begin);
    const computeDtype = st.metadata.compute_dtype;
    return {
      ...inputs,
      vocab: e.shape[2] ?? 0,
      logits: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4),
      ...(computeDtype !== undefined ? { computeDtype } : {}),
    };
  } finally {
    await source.close();
  }
}

async function readInts(
  st: SafetensorsFile,
  name: string,
  file: string,
  int64Only: boolean,
): Promise<{ shape: readonly number[]; data: BigInt64Array }> {
  const e = st.get(name);
  if (!e) throw new MegahubError("FORMAT", "missing tensor", { file, tensor: name });
  if (int64Only && e.dtype !== "I64") {
    throw new MegahubError("FORMAT", `expected I64, got ${e.dtype}`, { file, tensor: name });
  }
  // FileSource.read returns a fresh, 0-offset buffer, so typed views are aligned.
  const bytes = await st.tensorSource(e).read(0, e.end - e.begin);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = e.shape.reduce((a, b) => a * b, 1);
  const out = new BigInt64Array(n);
  for (let i = 0; i < n; i++) {
    switch (e.dtype) {
      case "I64":
        out[i] = view.getBigInt64(i * 8, true);
        break;
      case "I32":
        out[i] = BigInt(view.getInt32(i * 4, true));
        break;
      case "U8":
      case "BOOL":
        out[i] = BigInt(view.getUint8(i));
        break;
      default:
        throw new MegahubError("FORMAT", `expected an integer or bool dtype, got ${e.dtype}`, { file, tensor: name });
    }
  }
  return { shape: e.shape, data: out };
}

/** The ORT feeds of a forward pass (a decoder-only graph takes input_ids and attention_mask only). */
export function forwardFeeds(x: ForwardInputs): Record<string, Feed> {
  if (x.decoderOnly === true) {
    return {
      input_ids: { type: "int64", data: x.inputIds, dims: [x.batch, x.encoderLength] },
      attention_mask: { type: "int64", data: x.attentionMask, dims: [x.batch, x.encoderLength] },
    };
  }
  return {
    input_ids: { type: "int64", data: x.inputIds, dims: [x.batch, x.encoderLength] },
    attention_mask: { type: "int64", data: x.attentionMask, dims: [x.batch, x.encoderLength] },
    decoder_input_ids: { type: "int64", data: x.decoderInputIds, dims: [x.batch, x.decoderLength] },
  };
}
