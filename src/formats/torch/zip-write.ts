/**
 * A streaming writer for torch.save's zip container: the writing half of zip.ts. It lays records out as torch's
 * PyTorchStreamWriter (miniz) does — stored, 64-byte aligned data behind an "FB" extra field of "Z" bytes, sizes and
 * CRC in a data descriptor after the data, a ZIP64 end record always — so every size is known from the record
 * sizes alone and the file is written front to back without seeking.
 */
import { open, rm, type FileHandle } from "node:fs/promises";
import * as zlib from "node:zlib";
import { MegahubError } from "../../errors.js";

/** torch aligns every record's data to this many bytes (caffe2/serialize/inline_container.cc kFieldAlignment). */
export const RECORD_ALIGNMENT = 64;
/** The format version torch 1.13 writes for a plain torch.save (kProducedFileFormatVersion). */
export const TORCH_ZIP_VERSION = "3\n";

const U32_MAX = 0xffffffff;
const LOCAL_HEADER = 30;
const CENTRAL_HEADER = 46;
/** Bit 3 (sizes and CRC in a data descriptor after the data) and bit 11 (UTF-8 names), as torch sets them. */
const FLAGS = 0x0808;

export interface ZipRecord {
  /** Full record name, prefix included. */
  readonly name: string;
  readonly bytes: number;
  /** The record's bytes: exactly `bytes` of them, in blocks. */
  readonly data: Uint8Array | AsyncIterable<Uint8Array>;
}

export interface ZipOptions {
  /** Write ZIP64 fields for every record and the end record even when nothing needs them (for tests). */
  forceZip64?: boolean;
}

/** What fixes a torch archive's layout: names and sizes, no data. */
export interface TorchZipShape extends ZipOptions {
  /** The record folder: torch uses the file name up to its first dot, or "archive" for streams. */
  readonly prefix: string;
  readonly pickleBytes: number;
  /** One record `data/<key>` per storage, in the order given (torch sorts keys as strings). */
  readonly storages: readonly { readonly key: string; readonly bytes: number }[];
  /** Write the `byteorder` record ("little") that torch ≥ 2.0 writes; torch 1.13 neither writes nor needs it. */
  readonly byteorder?: boolean;
}

export interface TorchZipSpec extends Omit<TorchZipShape, "pickleBytes" | "storages"> {
  readonly pickle: Uint8Array;
  readonly storages: readonly { key: string; bytes: number; data: AsyncIterable<Uint8Array> | Uint8Array }[];
}

/** Where one record lands: everything the writer needs, computed before the first byte is written. */
export interface RecordLayout {
  readonly name: string;
  readonly nameBytes: Uint8Array;
  readonly bytes: number;
  readonly offset: number;
  readonly dataOffset: number;
  readonly zip64: boolean;
  /** Local extra field length: the ZIP64 field (if any) and the FB padding field. */
  readonly extraLength: number;
}

export interface ZipLayout {
  readonly records: readonly RecordLayout[];
  readonly centralOffset: number;
  readonly centralSize: number;
  readonly zip64End: boolean;
  readonly totalBytes: number;
}

const enc = new TextEncoder();

const BYTEORDER = enc.encode("little");
const VERSION = enc.encode(TORCH_ZIP_VERSION);

/** The torch records in the order torch writes them: data.pkl, byteorder, data/<key>…, version. */
function torchRecordShapes(shape: TorchZipShape): { name: string; bytes: number }[] {
  const plain = (s: string) => s.length > 0 && !/[/\\\0\n]/.test(s);
  if (!plain(shape.prefix)) {
    throw new MegahubError("USAGE", `torch archive prefix ${JSON.stringify(shape.prefix)} must be a plain folder name`);
  }
  const rec = (n: string) => `${shape.prefix}/${n}`;
  const records = [{ name: rec("data.pkl"), bytes: shape.pickleBytes }];
  if (shape.byteorder ?? true) records.push({ name: rec("byteorder"), bytes: BYTEORDER.length });
  const seen = new Set<string>();
  for (const s of shape.storages) {
    if (!plain(s.key) || seen.has(s.key)) {
      throw new MegahubError("USAGE", `storage key ${JSON.stringify(s.key)} is empty, repeated or not a plain name`);
    }
    seen.add(s.key);
    records.push({ name: rec(`data/${s.key}`), bytes: s.bytes });
  }
  records.push({ name: rec("version"), bytes: VERSION.length });
  return records;
}

/** The records of a torch archive with their data. */
export function torchRecords(spec: TorchZipSpec): ZipRecord[] {
  const shapes = torchRecordShapes({ ...spec, pickleBytes: spec.pickle.byteLength });
  const data = [spec.pickle, ...(spec.byteorder ?? true ? [BYTEORDER] : []), ...spec.storages.map((s) => s.data), VERSION];
  return shapes.map((s, i) => ({ ...s, data: data[i] as ZipRecord["data"] }));
}

/** The size a torch archive will have on disk, from its pickle size and storage sizes. */
export function torchZipSize(shape: TorchZipShape): number {
  return zipLayout(torchRecordShapes(shape), shape).totalBytes;
}

/** Computes every offset of the archive from names and sizes alone (the plan needs the size before writing). */
export function zipLayout(records: readonly Pick<ZipRecord, "name" | "bytes">[], options: ZipOptions = {}): ZipLayout {
  const force = options.forceZip64 ?? false;
  const out: RecordLayout[] = [];
  let pos = 0;
  let central = 0;
  for (const r of records) {
    if (!Number.isSafeInteger(r.bytes) || r.bytes < 0) {
      throw new MegahubError("USAGE", `record ${r.name} has an invalid size ${r.bytes}`);
    }
    const nameBytes = enc.encode(r.name);
    if (nameBytes.length > 0xffff) throw new MegahubError("USAGE", `record name ${r.name.slice(0, 40)}… is too long`);
    const zip64 = force || r.bytes >= U32_MAX || pos >= U32_MAX;
    const z64Local = zip64 ? 4 + 16 : 0;
    // The FB field is always present, padding the data start up to the next multiple of 64 (possibly with no Z).
    const unpadded = pos + LOCAL_HEADER + nameBytes.length + z64Local + 4;
    const pad = (RECORD_ALIGNMENT - (unpadded % RECORD_ALIGNMENT)) % RECORD_ALIGNMENT;
    const extraLength = z64Local + 4 + pad;
    const dataOffset = unpadded + pad;
    out.push({ name: r.name, nameBytes, bytes: r.bytes, offset: pos, dataOffset, zip64, extraLength });
    pos = dataOffset + r.bytes + (zip64 ? 24 : 16);
    const fields = centralExtra(r.bytes, out.at(-1) as RecordLayout, force).length;
    central += CENTRAL_HEADER + nameBytes.length + (fields > 0 ? 4 + 8 * fields : 0);
  }
  const zip64End = true; // torch always writes the ZIP64 end record and locator
  const totalBytes = pos + central + (zip64End ? 56 + 20 : 0) + 22;
  if (!Number.isSafeInteger(totalBytes)) throw new MegahubError("USAGE", "archive is too large");
  return { records: out, centralOffset: pos, centralSize: central, zip64End, totalBytes };
}

/** Writes a torch.save archive to `path` (normally a temporary name the caller renames), or into a sink; returns its size. */
export function writeTorchZip(path: string | ZipSink, spec: TorchZipSpec): Promise<number> {
  return typeof path === "string" ? writeZip(path, torchRecords(spec), spec) : writeZipTo(path, torchRecords(spec), spec);
}

/** CRC-32 as zip uses it; node:zlib has it from Node 20.15, a table covers older releases. */
export const crc32: (data: Uint8Array, value: number) => number =
  typeof zlib.crc32 === "function" ? (d, v) => zlib.crc32(d, v) : tableCrc32;

let table: Uint32Array | undefined;
function tableCrc32(data: Uint8Array, value: number): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let c = ~value >>> 0;
  for (const b of data) c = (table[(c ^ b) & 0xff] as number) ^ (c >>> 8);
  return ~c >>> 0;
}

/** Where the zip writer puts bytes, front to back (a file, or the executor's hashed output file). */
export interface ZipSink {
  /** `checksum`: the id of a `crc32` computation this block feeds. */
  append(data: Uint8Array, checksum?: number): Promise<void>;
  /** CRC-32 done elsewhere (worker threads, in append order): a record's value is asked after its last block. */
  crc32?: { start(): number; value(id: number): Promise<number> };
}

/**
 * Writes stored records front to back to a new file. Memory holds one data block at a time (plus headers); a
 * record whose data is longer or shorter than its declared size is an error, since every offset was fixed from the
 * sizes. On failure the partial file is removed.
 */
export async function writeZip(path: string, records: readonly ZipRecord[], options: ZipOptions = {}): Promise<number> {
  const handle = await open(path, "wx");
  let written: number;
  try {
    written = await writeZipTo(fileSink(handle, 0), records, options, path);
  } catch (e) {
    await handle.close().catch(() => undefined);
    await rm(path, { force: true });
    throw e;
  }
  await handle.close();
  return written;
}

/** A sink writing positionally into an open file from byte `base` on. */
function fileSink(handle: FileHandle, base: number): ZipSink {
  let pos = base;
  return {
    async append(b) {
      let off = 0;
      while (off < b.byteLength) {
        const { bytesWritten } = await handle.write(b, off, b.byteLength - off, pos);
        off += bytesWritten;
        pos += bytesWritten;
      }
    },
  };
}

/**
 * Writes the archive into an open file starting at byte `base` (offsets inside the archive stay relative to its
 * start, as for a standalone file): PyTorch DCP embeds one such archive per tensor chunk in its data files.
 * Returns the archive's size; the caller owns the handle and cleans up on failure.
 */
export function writeZipAt(handle: FileHandle, base: number, records: readonly ZipRecord[], options: ZipOptions = {}, path = "<zip>"): Promise<number> {
  return writeZipTo(fileSink(handle, base), records, options, path);
}

/** A small archive (common.pt, a few KB) built in memory. */
export async function zipBytes(records: readonly ZipRecord[], options: ZipOptions = {}): Promise<Uint8Array> {
  const out = new Uint8Array(zipLayout(records, options).totalBytes);
  let pos = 0;
  await writeZipTo({ append: async (b) => void (out.set(b, pos), (pos += b.byteLength)) }, records, options, "<memory>");
  return out;
}

/** writeZip into a sink; returns the bytes appended. `name` labels errors. */
export async function writeZipTo(sink: ZipSink, records: readonly ZipRecord[], options: ZipOptions = {}, name = "<zip>"): Promise<number> {
  const layout = zipLayout(records, options);
  let pos = 0;
  const write = async (b: Uint8Array, checksum?: number) => {
    pos += b.byteLength;
    await sink.append(b, checksum);
  };
  const crcs: number[] = [];
  for (const [i, r] of layout.records.entries()) {
    await write(localHeader(r));
    let crc = 0;
    let n = 0;
    const id = sink.crc32?.start();
    const data = (records[i] as ZipRecord).data;
    for await (const block of data instanceof Uint8Array ? [data] : data) {
      n += block.byteLength;
      if (n > r.bytes) break;
      if (id === undefined) crc = crc32(block, crc);
      await write(block, id);
    }
    if (n !== r.bytes) {
      throw new MegahubError("OUTPUT", `record ${r.name}: data has ${n > r.bytes ? "more than" : "only"} ${n} bytes, planned ${r.bytes}`, { file: name });
    }
    if (id !== undefined && sink.crc32) crc = await sink.crc32.value(id);
    crcs.push(crc);
    await write(descriptor(r, crc));
  }
  await write(centralDirectory(layout, crcs, options.forceZip64 ?? false));
  if (pos !== layout.totalBytes) {
    throw new MegahubError("OUTPUT", `wrote ${pos} bytes, laid out ${layout.totalBytes}`, { file: name });
  }
  return pos;
}

function localHeader(r: RecordLayout): Uint8Array {
  const b = new Uint8Array(LOCAL_HEADER + r.nameBytes.length + r.extraLength);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 0x04034b50, true);
  dv.setUint16(4, r.zip64 ? 45 : 0, true); // version needed: torch writes 0; ZIP64 needs 4.5
  dv.setUint16(6, FLAGS, true);
  // method 0 (stored), DOS time and date 0 (torch's choice: output is deterministic), CRC 0 (in the descriptor)
  dv.setUint32(18, r.zip64 ? U32_MAX : 0, true);
  dv.setUint32(22, r.zip64 ? U32_MAX : 0, true);
  dv.setUint16(26, r.nameBytes.length, true);
  dv.setUint16(28, r.extraLength, true);
  b.set(r.nameBytes, LOCAL_HEADER);
  let p = LOCAL_HEADER + r.nameBytes.length;
  if (r.zip64) {
    // A local ZIP64 field must carry both sizes (APPNOTE 4.5.3); they are known, so they are real.
    dv.setUint16(p, 1, true);
    dv.setUint16(p + 2, 16, true);
    dv.setBigUint64(p + 4, BigInt(r.bytes), true);
    dv.setBigUint64(p + 12, BigInt(r.bytes), true);
    p += 20;
  }
  const pad = r.extraLength - (p - LOCAL_HEADER - r.nameBytes.length) - 4;
  b[p] = 0x46; // "F"
  b[p + 1] = 0x42; // "B"
  dv.setUint16(p + 2, pad, true);
  b.fill(0x5a, p + 4, p + 4 + pad); // "Z"
  return b;
}

function descriptor(r: RecordLayout, crc: number): Uint8Array {
  const b = new Uint8Array(r.zip64 ? 24 : 16);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, 0x08074b50, true);
  dv.setUint32(4, crc, true);
  if (r.zip64) {
    dv.setBigUint64(8, BigInt(r.bytes), true);
    dv.setBigUint64(16, BigInt(r.bytes), true);
  } else {
    dv.setUint32(8, r.bytes, true);
    dv.setUint32(12, r.bytes, true);
  }
  return b;
}

/** The central ZIP64 field holds, in order, only the values whose 32-bit slot is saturated. */
function centralExtra(bytes: number, r: Pick<RecordLayout, "offset">, force: boolean): bigint[] {
  const big = force || bytes >= U32_MAX;
  const fields: bigint[] = big ? [BigInt(bytes), BigInt(bytes)] : [];
  if (force || r.offset >= U32_MAX) fields.push(BigInt(r.offset));
  return fields;
}

function centralDirectory(layout: ZipLayout, crcs: readonly number[], force: boolean): Uint8Array {
  const b = new Uint8Array(layout.totalBytes - layout.centralOffset);
  const dv = new DataView(b.buffer);
  let p = 0;
  for (const [i, r] of layout.records.entries()) {
    const extra = centralExtra(r.bytes, r, force);
    const sizeSat = force || r.bytes >= U32_MAX;
    const offSat = force || r.offset >= U32_MAX;
    dv.setUint32(p, 0x02014b50, true);
    dv.setUint16(p + 4, extra.length > 0 ? 45 : 0, true); // version made by
    dv.setUint16(p + 6, extra.length > 0 ? 45 : 0, true); // version needed
    dv.setUint16(p + 8, FLAGS, true);
    dv.setUint32(p + 16, crcs[i] as number, true);
    dv.setUint32(p + 20, sizeSat ? U32_MAX : r.bytes, true);
    dv.setUint32(p + 24, sizeSat ? U32_MAX : r.bytes, true);
    dv.setUint16(p + 28, r.nameBytes.length, true);
    dv.setUint16(p + 30, extra.length > 0 ? 4 + 8 * extra.length : 0, true);
    dv.setUint32(p + 42, offSat ? U32_MAX : r.offset, true);
    b.set(r.nameBytes, p + CENTRAL_HEADER);
    p += CENTRAL_HEADER + r.nameBytes.length;
    if (extra.length > 0) {
      dv.setUint16(p, 1, true);
      dv.setUint16(p + 2, 8 * extra.length, true);
      for (const [k, v] of extra.entries()) dv.setBigUint64(p + 4 + 8 * k, v, true);
      p += 4 + 8 * extra.length;
    }
  }
  const count = layout.records.length;
  const end64 = layout.centralOffset + layout.centralSize;
  // ZIP64 end of central directory (version made by 0x031e and needed 45, as miniz writes them) and its locator.
  dv.setUint32(p, 0x06064b50, true);
  dv.setBigUint64(p + 4, 44n, true);
  dv.setUint16(p + 12, 0x031e, true);
  dv.setUint16(p + 14, 45, true);
  dv.setBigUint64(p + 24, BigInt(count), true);
  dv.setBigUint64(p + 32, BigInt(count), true);
  dv.setBigUint64(p + 40, BigInt(layout.centralSize), true);
  dv.setBigUint64(p + 48, BigInt(layout.centralOffset), true);
  p += 56;
  dv.setUint32(p, 0x07064b50, true);
  dv.setBigUint64(p + 8, BigInt(end64), true);
  dv.setUint32(p + 16, 1, true);
  p += 20;
  const countSat = force || count >= 0xffff;
  const sizeSat = force || layout.centralSize >= U32_MAX;
  const offSat = force || layout.centralOffset >= U32_MAX;
  dv.setUint32(p, 0x06054b50, true);
  dv.setUint16(p + 8, countSat ? 0xffff : count, true);
  dv.setUint16(p + 10, countSat ? 0xffff : count, true);
  dv.setUint32(p + 12, sizeSat ? U32_MAX : layout.centralSize, true);
  dv.setUint32(p + 16, offSat ? U32_MAX : layout.centralOffset, true);
  return b;
}
