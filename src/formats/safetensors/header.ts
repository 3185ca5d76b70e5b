import { formatError } from "../../errors.js";
import { byteSize, isDtype, type Dtype } from "../../tensors/dtypes.js";

/** The reference implementation refuses headers over 100 MB; a larger one is hostile, not a model. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface SafetensorsEntry {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  /** Offsets relative to the start of the data buffer, as in the header. */
  readonly begin: number;
  readonly end: number;
}

export interface SafetensorsHeader {
  readonly headerLength: number;
  /** Absolute file offset of the data buffer (8 + headerLength). */
  readonly dataStart: number;
  readonly entries: readonly SafetensorsEntry[];
  readonly metadata: Readonly<Record<string, string>>;
}

/**
 * Validates a parsed header the way the safetensors crate does: known dtypes, integer dims, shape × dtype = bytes,
 * offsets that tile the buffer exactly (no holes, no overlap), and a buffer that ends where the file ends.
 */
export function parseHeader(json: string, headerLength: number, fileSize: number, file: string): SafetensorsHeader {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (e) {
    throw formatError(`header is not valid JSON (${(e as Error).message})`, { file });
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw formatError("header must be a JSON object", { file });
  }
  const entries: SafetensorsEntry[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    if (name === "__metadata__") {
      metadata = parseMetadata(value, file);
      continue;
    }
    entries.push(parseEntry(name, value, file));
  }
  const dataStart = 8 + headerLength;
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of sorted) {
    if (e.begin !== cursor) {
      throw formatError(
        e.begin < cursor ? `data overlaps the previous tensor at offset ${e.begin}` : `hole in the data buffer at ${cursor}`,
        { file, tensor: e.name },
      );
    }
    cursor = e.end;
  }
  if (dataStart + cursor !== fileSize) {
    throw formatError(`tensors cover ${cursor} bytes of data but the file holds ${fileSize - dataStart}`, { file });
  }
  return { headerLength, dataStart, entries, metadata };
}

function parseEntry(name: string, value: unknown, file: string): SafetensorsEntry {
  const fail = (detail: string) => formatError(detail, { file, tensor: name });
  if (typeof value !== "object" || value === null) {
    throw fail("entry must be an object with dtype, shape and data_offsets");
  }
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== "string" || !isDtype(dtype)) {
    throw fail(`unknown dtype ${JSON.stringify(dtype)}`);
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw fail(`shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`);
  }
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0) ||
    (offsets[0] as number) > (offsets[1] as number)
  ) {
    throw fail(`data_offsets must be [begin, end] with 0 ≤ begin ≤ end, got ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  let expected: number;
  try {
    expected = byteSize(dtype, shape as number[]);
  } catch (e) {
    throw fail((e as Error).message);
  }
  if (end - begin !== expected) {
    throw fail(`shape [${shape.join(", ")}] of ${dtype} needs ${expected} bytes but data_offsets span ${end - begin}`);
  }
  return { name, dtype, shape: shape as number[], begin, end };
}

function parseMetadata(value: unknown, file: string): Record<string, string> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw formatError("__metadata__ must be an object of strings", { file });
  }
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== "string") {
      throw formatError(`__metadata__["${k}"] must be a string`, { file });
    }
  }
  return value as Record<string, string>;
}

/**
 * Serialises a header: entries in the given order laid back to back, padded with spaces so the data buffer starts
 * on an 8-byte boundary (every tensor then starts aligned for its dtype).
 */
export function encodeHeader(
  entries: readonly { name: string; dtype: Dtype; shape: readonly number[] }[],
  metadata?: Readonly<Record<string, string>>,
): { bytes: Uint8Array; offsets: Map<string, [number, number]>; dataBytes: number } {
  const obj: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    obj.__metadata__ = metadata;
  }
  const offsets = new Map<string, [number, number]>();
  let cursor = 0;
  for (const e of entries) {
    if (offsets.has(e.name)) {
      throw formatError(`duplicate tensor name`, { tensor: e.name });
    }
    const end = cursor + byteSize(e.dtype, e.shape);
    offsets.set(e.name, [cursor, end]);
    obj[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [cursor, end] };
    cursor = end;
  }
  const json = new TextEncoder().encode(JSON.stringify(obj));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const bytes = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(padded), true);
  bytes.set(json, 8);
  return { bytes, offsets, dataBytes: cursor };
}
