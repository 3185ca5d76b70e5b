import { formatError } from "../../errors.js";
import { subSource, type ByteSource } from "../../io/byte-source.js";
import { crc32 } from "./zip-write.js";

/** A torch archive of a large model has a few thousand records; more than this is not a checkpoint. */
export const MAX_ZIP_ENTRIES = 1_000_000;
/** The end-of-central-directory record sits within the last 64 KiB + 22 bytes (max comment length). */
const EOCD_SEARCH = 65_535 + 22;

export interface ZipEntry {
  readonly name: string;
  readonly method: number;
  readonly size: number;
  readonly compressedSize: number;
  readonly crc32: number;
  readonly localHeaderOffset: number;
}

export interface ZipArchive {
  readonly source: ByteSource;
  readonly entries: ReadonlyMap<string, ZipEntry>;
  /** The stored bytes of a record as a lazy source (torch writes every record uncompressed). */
  open(name: string): Promise<ByteSource>;
}

/**
 * Checks a record's CRC-32 as it is read: every read that continues where the last one ended extends the running
 * CRC, and the read that reaches the end compares it with the central directory's. Records read out of order
 * (strided views, a second pass) are not checked; the streaming path reads each storage front to back, so a
 * damaged record fails the run instead of converting silently.
 */
function crcChecked(inner: ByteSource, expected: number): ByteSource {
  let next = 0;
  let crc = 0;
  return {
    name: inner.name,
    size: inner.size,
    async read(off, len) {
      const bytes = await inner.read(off, len);
      if (off === next && len > 0) {
        crc = crc32(bytes, crc);
        next += len;
        if (next === inner.size && crc >>> 0 !== expected >>> 0) {
          throw formatError(`record CRC-32 is ${hex(crc)} but the archive says ${hex(expected)}: the file is damaged`, { file: inner.name });
        }
      }
      return bytes;
    },
  };
}

const hex = (n: number) => `0x${(n >>> 0).toString(16).padStart(8, "0")}`;

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function u64(dv: DataView, at: number, file: string): number {
  const v = dv.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw formatError(`64-bit field at ${at} is too large (${v})`, { file });
  }
  return Number(v);
}

/** Reads the central directory of a (ZIP64-capable) archive without touching the records themselves. */
export async function readZip(source: ByteSource): Promise<ZipArchive> {
  const file = source.name;
  if (source.size < 22) {
    throw formatError("too short for a zip archive", { file });
  }
  const tailLen = Math.min(source.size, EOCD_SEARCH);
  const tailStart = source.size - tailLen;
  const tail = await source.read(tailStart, tailLen);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail[i] === 0x50 && tail[i + 1] === 0x4b && tail[i + 2] === 0x05 && tail[i + 3] === 0x06) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) {
    throw formatError("no zip end-of-central-directory record", { file });
  }
  const dv = view(tail);
  let count = dv.getUint16(eocd + 10, true);
  let cdSize = dv.getUint32(eocd + 12, true);
  let cdOffset = dv.getUint32(eocd + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || dv.getUint32(loc, true) !== 0x07064b50) {
      throw formatError("ZIP64 markers present but no ZIP64 locator", { file });
    }
    const z64Offset = u64(dv, loc + 8, file);
    if (z64Offset + 56 > source.size) {
      throw formatError(`ZIP64 end record offset ${z64Offset} is outside the file`, { file });
    }
    const z64 = view(await source.read(z64Offset, 56));
    if (z64.getUint32(0, true) !== 0x06064b50) {
      throw formatError("bad ZIP64 end-of-central-directory signature", { file, offset: z64Offset });
    }
    count = u64(z64, 32, file);
    cdSize = u64(z64, 40, file);
    cdOffset = u64(z64, 48, file);
  }
  if (count > MAX_ZIP_ENTRIES) {
    throw formatError(`${count} entries exceeds the limit of ${MAX_ZIP_ENTRIES}`, { file });
  }
  if (cdOffset + cdSize > source.size || cdSize < count * 46) {
    throw formatError(`central directory [${cdOffset}, +${cdSize}) does not fit ${count} entries in the file`, { file });
  }
  const cd = await source.read(cdOffset, cdSize);
  const entries = parseCentralDirectory(cd, count, source.size, file);
  return {
    source,
    entries,
    async open(name) {
      const entry = entries.get(name);
      if (!entry) {
        throw formatError(`archive has no record "${name}"`, { file });
      }
      if (entry.method !== 0) {
        throw formatError(`record "${name}" is compressed (method ${entry.method}); torch stores records uncompressed`, {
          file,
        });
      }
      if (entry.localHeaderOffset + 30 > source.size) {
        throw formatError(`local header of "${name}" is outside the file`, { file });
      }
      const lh = view(await source.read(entry.localHeaderOffset, 30));
      if (lh.getUint32(0, true) !== 0x04034b50) {
        throw formatError(`bad local header signature for "${name}"`, { file, offset: entry.localHeaderOffset });
      }
      const dataStart = entry.localHeaderOffset + 30 + lh.getUint16(26, true) + lh.getUint16(28, true);
      return crcChecked(subSource(source, dataStart, entry.size, `${file}#${name}`), entry.crc32);
    },
  };
}

function parseCentralDirectory(cd: Uint8Array, count: number, fileSize: number, file: string): Map<string, ZipEntry> {
  const dv = view(cd);
  const decoder = new TextDecoder();
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || dv.getUint32(p, true) !== 0x02014b50) {
      throw formatError(`central directory entry ${i} is truncated or has a bad signature`, { file });
    }
    const method = dv.getUint16(p + 10, true);
    const crc32 = dv.getUint32(p + 16, true);
    let compressedSize = dv.getUint32(p + 20, true);
    let size = dv.getUint32(p + 24, true);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    let localHeaderOffset = dv.getUint32(p + 42, true);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cd.length) {
      throw formatError(`central directory entry ${i} runs past the directory`, { file });
    }
    const name = decoder.decode(cd.subarray(p + 46, p + 46 + nameLen));
    // ZIP64 extra field (id 1) holds, in order, only the fields whose 32-bit slot is saturated.
    let q = p + 46 + nameLen;
    const extraEnd = q + extraLen;
    while (q + 4 <= extraEnd) {
      const id = dv.getUint16(q, true);
      const len = dv.getUint16(q + 2, true);
      if (q + 4 + len > extraEnd) {
        throw formatError(`extra field of "${name}" runs past its entry`, { file });
      }
      if (id === 1) {
        let r = q + 4;
        const take = (): number => {
          if (r + 8 > q + 4 + len) {
            throw formatError(`ZIP64 extra field of "${name}" is too short`, { file });
          }
          const v = u64(dv, r, file);
          r += 8;
          return v;
        };
        if (size === 0xffffffff) size = take();
        if (compressedSize === 0xffffffff) compressedSize = take();
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = take();
      }
      q += 4 + len;
    }
    if (localHeaderOffset + compressedSize > fileSize) {
      throw formatError(`record "${name}" [${localHeaderOffset}, +${compressedSize}) lies outside the file`, { file });
    }
    if (method === 0 && compressedSize !== size) {
      throw formatError(`stored record "${name}" has compressed size ${compressedSize} ≠ size ${size}`, { file });
    }
    entries.set(name, { name, method, size, compressedSize, crc32, localHeaderOffset });
    p = end;
  }
  return entries;
}
