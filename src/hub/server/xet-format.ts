import { HttpError } from "./http-util.js";

/**
 * Readers for the two binary formats hf_xet uploads (xet-core, xet_core_structures): a xorb is a run of chunks,
 * each an 8-byte header (version 0, 3-byte LE compressed length, scheme, 3-byte LE uncompressed length) and its
 * bytes, optionally followed by a footer starting with "XETBLOB"; a shard holds file reconstructions: per file a
 * 48-byte header (file hash, flags, entry count), 48-byte entries (xorb hash, flags, unpacked bytes, chunk range
 * [start, end)), optional verification entries and an optional metadata entry carrying the file's sha256, the
 * list closed by a bookend header whose hash is all 0xff. Every length is checked against the buffer; bad input
 * answers 400, never an exception.
 */

/** Largest uncompressed chunk accepted (xet-core's chunks are at most 128 KiB; this leaves room). */
const MAX_CHUNK_BYTES = 1 << 20;
const XORB_FOOTER_IDENT = Buffer.from("XETBLOB");
const SHARD_TAG = Buffer.from([
  72, 70, 82, 101, 112, 111, 77, 101, 116, 97, 68, 97, 116, 97, 0, 85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92,
  205, 209, 74, 169,
]);
const ENTRY = 48;
const FLAG_VERIFICATION = 1 << 31;
const FLAG_METADATA_EXT = 1 << 30;

/** One chunk of a xorb: where its stored bytes are and how to expand them. */
export interface XorbChunk {
  readonly offset: number;
  readonly storedLength: number;
  readonly scheme: number;
  readonly length: number;
}

/**
 * A xet hash as xet-core prints it: each of the four little-endian u64 words in hex, most significant digit
 * first (DataHash::hex), so the raw bytes of every 8-byte group appear reversed.
 */
export function xetHashHex(raw: Buffer): string {
  let out = "";
  for (let g = 0; g < 4; g++) out += Buffer.from(raw.subarray(g * 8, g * 8 + 8)).reverse().toString("hex");
  return out;
}

function bad(message: string): HttpError {
  return new HttpError(400, message);
}

/** Lists the chunks of a serialized xorb, checking every header; does not expand them. */
export function xorbChunks(xorb: Buffer): XorbChunk[] {
  const out: XorbChunk[] = [];
  let at = 0;
  while (at < xorb.length) {
    if (xorb.length - at >= XORB_FOOTER_IDENT.length && xorb.subarray(at, at + 7).equals(XORB_FOOTER_IDENT)) break;
    if (xorb.length - at < 8) throw bad(`xorb: truncated chunk header at byte ${at}`);
    const version = xorb[at] as number;
    const storedLength = xorb.readUIntLE(at + 1, 3);
    const scheme = xorb[at + 4] as number;
    const length = xorb.readUIntLE(at + 5, 3);
    if (version !== 0) throw bad(`xorb: chunk ${out.length} has header version ${version}, expected 0`);
    if (scheme > 2) throw bad(`xorb: chunk ${out.length} has unknown compression scheme ${scheme}`);
    if (length > MAX_CHUNK_BYTES || storedLength > 2 * MAX_CHUNK_BYTES) throw bad(`xorb: chunk ${out.length} is too large`);
    if (at + 8 + storedLength > xorb.length) throw bad(`xorb: chunk ${out.length} runs past the end of the xorb`);
    out.push({ offset: at + 8, storedLength, scheme, length });
    at += 8 + storedLength;
  }
  if (out.length === 0) throw bad("xorb: no chunks");
  return out;
}

/** The bytes of one chunk, expanded (scheme 0 stored, 1 LZ4 frame, 2 byte-grouped LZ4 frame). */
export function expandChunk(xorb: Buffer, c: XorbChunk): Buffer {
  const stored = xorb.subarray(c.offset, c.offset + c.storedLength);
  if (c.scheme === 0) {
    if (stored.length !== c.length) throw bad("xorb: an uncompressed chunk's lengths disagree");
    return stored;
  }
  const data = lz4FrameDecode(stored, c.length);
  return c.scheme === 2 ? bg4Regroup(data) : data;
}

/**
 * Undoes xet's 4-way byte grouping: the input is group 0 (bytes 0, 4, 8, …), then groups 1, 2, 3, where the
 * first `n % 4` groups hold one byte more.
 */
export function bg4Regroup(g: Buffer): Buffer {
  const n = g.length;
  const split = Math.floor(n / 4);
  const rem = n % 4;
  const starts = [0, 0, 0, 0];
  for (let k = 1; k < 4; k++) starts[k] = (starts[k - 1] as number) + split + (rem > k - 1 ? 1 : 0);
  const out = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) out[i] = g[(starts[i % 4] as number) + Math.floor(i / 4)] as number;
  return out;
}

/** Decodes LZ4 frames (lz4_flex's FrameEncoder output) into exactly `expected` bytes. */
export function lz4FrameDecode(src: Buffer, expected: number): Buffer {
  const out = Buffer.allocUnsafe(expected);
  let o = 0;
  let i = 0;
  while (i < src.length) {
    if (src.length - i < 7 || src.readUInt32LE(i) !== 0x184d2204) throw bad("lz4: bad frame magic");
    const flg = src[i + 4] as number;
    i += 6; // magic, FLG, BD
    if (flg >> 6 !== 1) throw bad("lz4: unsupported frame version");
    if (flg & 0x08) i += 8; // content size
    if (flg & 0x01) throw bad("lz4: dictionaries are not supported");
    i += 1; // header checksum
    const blockChecksum = (flg & 0x10) !== 0;
    for (;;) {
      if (i + 4 > src.length) throw bad("lz4: truncated block size");
      const word = src.readUInt32LE(i);
      i += 4;
      if (word === 0) break;
      const size = word & 0x7fffffff;
      if (i + size > src.length) throw bad("lz4: block runs past the end");
      if (word & 0x80000000) {
        if (o + size > expected) throw bad("lz4: output longer than announced");
        src.copy(out, o, i, i + size);
        o += size;
      } else {
        o = lz4Block(src, i, i + size, out, o);
      }
      i += size + (blockChecksum ? 4 : 0);
    }
    if (flg & 0x04) i += 4; // content checksum
  }
  if (o !== expected) throw bad(`lz4: chunk expands to ${o} bytes, header says ${expected}`);
  return out;
}

/** One LZ4 block; matches may reach back into earlier blocks of the same frame (linked blocks). */
function lz4Block(src: Buffer, i: number, end: number, out: Buffer, o: number): number {
  const cap = out.length;
  while (i < end) {
    const token = src[i++] as number;
    let lit = token >> 4;
    if (lit === 15) {
      let b: number;
      do {
        if (i >= end) throw bad("lz4: truncated literal length");
        b = src[i++] as number;
        lit += b;
      } while (b === 255);
    }
    if (i + lit > end || o + lit > cap) throw bad("lz4: literals run past the end");
    src.copy(out, o, i, i + lit);
    i += lit;
    o += lit;
    if (i >= end) break; // the last sequence has literals only
    if (i + 2 > end) throw bad("lz4: truncated match offset");
    const offset = (src[i] as number) | ((src[i + 1] as number) << 8);
    i += 2;
    let len = (token & 15) + 4;
    if ((token & 15) === 15) {
      let b: number;
      do {
        if (i >= end) throw bad("lz4: truncated match length");
        b = src[i++] as number;
        len += b;
      } while (b === 255);
    }
    if (offset === 0 || offset > o) throw bad("lz4: match offset outside the output");
    if (o + len > cap) throw bad("lz4: match runs past the announced length");
    for (let k = 0; k < len; k++, o++) out[o] = out[o - offset] as number;
  }
  return o;
}

/** One term of a file reconstruction: chunks [start, end) of a xorb. */
export interface ReconstructionTerm {
  readonly xorb: string;
  readonly bytes: number;
  readonly start: number;
  readonly end: number;
}

/** A file described by a shard. */
export interface ShardFile {
  readonly fileHash: string;
  readonly terms: ReconstructionTerm[];
  readonly size: number;
  /** The sha256 the client recorded (metadata extension), as hex the way sha256sum prints it. */
  readonly sha256: string | undefined;
}

/** The file reconstructions of a shard (its xorb listing and lookup tables are not needed here). */
export function shardFiles(shard: Buffer): ShardFile[] {
  if (shard.length < 48 || !shard.subarray(0, 32).equals(SHARD_TAG)) throw bad("shard: not a xet shard (wrong magic)");
  const files: ShardFile[] = [];
  let at = 48;
  const need = (n: number) => {
    if (at + n > shard.length) throw bad("shard: truncated file section");
  };
  for (;;) {
    need(ENTRY);
    const hash = shard.subarray(at, at + 32);
    if (hash.every((b) => b === 0xff)) break;
    const flags = shard.readUInt32LE(at + 32);
    const count = shard.readUInt32LE(at + 36);
    at += ENTRY;
    need(count * ENTRY);
    const terms: ReconstructionTerm[] = [];
    let size = 0;
    for (let k = 0; k < count; k++, at += ENTRY) {
      const t = {
        xorb: xetHashHex(shard.subarray(at, at + 32)),
        bytes: shard.readUInt32LE(at + 36),
        start: shard.readUInt32LE(at + 40),
        end: shard.readUInt32LE(at + 44),
      };
      if (t.end <= t.start) throw bad("shard: empty or reversed chunk range");
      terms.push(t);
      size += t.bytes;
    }
    if (flags & FLAG_VERIFICATION) {
      need(count * ENTRY);
      at += count * ENTRY;
    }
    let sha256: string | undefined;
    if (flags & FLAG_METADATA_EXT) {
      need(ENTRY);
      // Stored as a DataHash, so it prints (and compares with sha256sum) in the same word order as xet hashes.
      sha256 = xetHashHex(shard.subarray(at, at + 32));
      at += ENTRY;
    }
    files.push({ fileHash: xetHashHex(hash), terms, size, sha256 });
    if (files.length > 100_000) throw bad("shard: too many files");
  }
  return files;
}
