/** Scalar encodings pickle uses, shared by the reader and the writer. */

/** An integer as a JS number when it is safe, else a bigint (so 2**70 and -2**70 survive a round trip). */
export function narrowInt(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** LONG1/LONG4 payloads and text integers beyond this are refused: no checkpoint holds such an integer. */
export const MAX_LONG_BYTES = 1 << 20;

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** pickle.decode_long: little-endian two's complement (LONG1 / LONG4 payloads). Linear: via one hex string. */
export function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  if (b.length > MAX_LONG_BYTES) throw new RangeError(`integer of ${b.length} bytes is beyond megahub's limit of ${MAX_LONG_BYTES}`);
  const parts = new Array<string>(b.length);
  for (let i = 0; i < b.length; i++) parts[b.length - 1 - i] = HEX[b[i] as number] as string;
  let v = BigInt(`0x${parts.join("")}`);
  if ((b[b.length - 1] as number) & 0x80) v -= 1n << BigInt(8 * b.length);
  return narrowInt(v);
}

/** pickle.encode_long: minimal two's-complement little-endian bytes (empty for 0). */
export function encodeLong(x: bigint): Uint8Array {
  if (x === 0n) return new Uint8Array(0);
  const n = ((x < 0n ? -x : x).toString(2).length >> 3) + 1; // (x.bit_length() >> 3) + 1, as Python sizes it
  // Linear: the two's-complement value as one hex string, read two digits per byte from the end.
  const hex = BigInt.asUintN(8 * n, x).toString(16).padStart(2 * n, "0");
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = parseInt(hex.slice(hex.length - 2 * (i + 1), hex.length - 2 * i), 16);
  // Python trims a redundant 0xff sign byte of negative numbers.
  if (x < 0n && n > 1 && out[n - 1] === 0xff && ((out[n - 2] as number) & 0x80) !== 0) return out.subarray(0, n - 1);
  return out;
}

/** The bytes behind protocol 2's `_codecs.encode(text, "latin1")`. */
export function latin1Bytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

/** Protocol 0's UNICODE opcode text (raw-unicode-escape): \uXXXX and \UXXXXXXXX escapes. */
export function rawUnicodeEscape(s: string): string {
  return s.replace(/\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})/g, (m, u: string | undefined, U: string | undefined) => {
    const cp = parseInt((u ?? U) as string, 16);
    return cp <= 0x10ffff ? String.fromCodePoint(cp) : m;
  });
}
