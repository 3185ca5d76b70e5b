import { open, type FileHandle } from "node:fs/promises";
import { formatError } from "../errors.js";

/**
 * Just enough of ELF to answer what the dynamic loader will ask of a shared library (its NEEDED list, SONAME,
 * RUNPATH, machine) and which ONNX Runtime version a provider library was built as — read with positioned reads, so
 * a 230 MB CUDA provider is never loaded into memory. 64-bit little-endian only: the only kind ORT ships for Linux.
 */
export interface ElfInfo {
  /** e_machine: 62 x86-64, 183 aarch64. */
  machine: number;
  /** e_type: 3 for a shared object. */
  type: number;
  needed: string[];
  soname?: string;
  /** DT_RUNPATH entries, unexpanded ("$ORIGIN" stays as written). */
  runpath: string[];
  /** DT_RPATH entries (only consulted by the loader when there is no RUNPATH). */
  rpath: string[];
}

export const ELF_MACHINE: Readonly<Record<string, number>> = { x64: 62, arm64: 183 };

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const DT = { NULL: 0n, NEEDED: 1n, STRTAB: 5n, STRSZ: 10n, SONAME: 14n, RPATH: 15n, RUNPATH: 29n } as const;

interface Header {
  type: number;
  machine: number;
  phoff: number;
  phentsize: number;
  phnum: number;
  shoff: number;
  shentsize: number;
  shnum: number;
  shstrndx: number;
}

async function readAt(fh: FileHandle, offset: number, length: number, file: string): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, offset);
  if (bytesRead !== length) throw formatError(`ELF file ends at byte ${offset + bytesRead}, expected ${length} bytes there`, { file });
  return buf;
}

async function readHeader(fh: FileHandle, file: string): Promise<Header> {
  const size = (await fh.stat()).size;
  if (size < 64) throw formatError(`not an ELF file (${size} bytes)`, { file });
  const h = await readAt(fh, 0, 64, file);
  if (h.readUInt32BE(0) !== 0x7f454c46) throw formatError("not an ELF file (no \\x7fELF magic)", { file });
  if (h[4] !== 2 || h[5] !== 1) throw formatError(`ELF class ${h[4]} / data ${h[5]}: only 64-bit little-endian is read`, { file });
  return {
    type: h.readUInt16LE(16),
    machine: h.readUInt16LE(18),
    phoff: Number(h.readBigUInt64LE(32)),
    shoff: Number(h.readBigUInt64LE(40)),
    phentsize: h.readUInt16LE(54),
    phnum: h.readUInt16LE(56),
    shentsize: h.readUInt16LE(58),
    shnum: h.readUInt16LE(60),
    shstrndx: h.readUInt16LE(62),
  };
}

/** The dynamic-section facts the loader uses, from the program headers (which survive `strip`). */
export async function readElfInfo(file: string): Promise<ElfInfo> {
  const fh = await open(file, "r");
  try {
    const h = await readHeader(fh, file);
    if (h.phnum === 0 || h.phentsize < 56) throw formatError("ELF file has no program headers", { file });
    const ph = await readAt(fh, h.phoff, h.phnum * h.phentsize, file);
    const loads: { vaddr: number; offset: number; filesz: number }[] = [];
    let dyn: { offset: number; size: number } | undefined;
    for (let i = 0; i < h.phnum; i++) {
      const o = i * h.phentsize;
      const type = ph.readUInt32LE(o);
      const offset = Number(ph.readBigUInt64LE(o + 8));
      const vaddr = Number(ph.readBigUInt64LE(o + 16));
      const filesz = Number(ph.readBigUInt64LE(o + 32));
      if (type === PT_LOAD) loads.push({ vaddr, offset, filesz });
      if (type === PT_DYNAMIC) dyn = { offset, size: filesz };
    }
    const info: ElfInfo = { machine: h.machine, type: h.type, needed: [], runpath: [], rpath: [] };
    if (!dyn) return info; // a static object: it needs nothing
    const d = await readAt(fh, dyn.offset, dyn.size, file);
    const entries: [bigint, bigint][] = [];
    for (let o = 0; o + 16 <= d.length; o += 16) {
      const tag = d.readBigInt64LE(o);
      if (tag === DT.NULL) break;
      entries.push([tag, d.readBigUInt64LE(o + 8)]);
    }
    const strtab = entries.find(([t]) => t === DT.STRTAB)?.[1];
    const strsz = entries.find(([t]) => t === DT.STRSZ)?.[1];
    if (strtab === undefined || strsz === undefined) throw formatError("ELF dynamic section has no string table", { file });
    // DT_STRTAB is a virtual address: map it to a file offset through the segment that holds it.
    const seg = loads.find((l) => Number(strtab) >= l.vaddr && Number(strtab) < l.vaddr + l.filesz);
    if (!seg) throw formatError("ELF string table lies outside every loaded segment", { file });
    const strings = await readAt(fh, Number(strtab) - seg.vaddr + seg.offset, Number(strsz), file);
    const str = (at: bigint) => {
      const start = Number(at);
      const end = strings.indexOf(0, start);
      if (start >= strings.length || end < 0) throw formatError(`ELF dynamic string at ${start} is outside the table`, { file });
      return strings.toString("utf8", start, end);
    };
    for (const [tag, value] of entries) {
      if (tag === DT.NEEDED) info.needed.push(str(value));
      else if (tag === DT.SONAME) info.soname = str(value);
      else if (tag === DT.RUNPATH) info.runpath.push(...str(value).split(":").filter(Boolean));
      else if (tag === DT.RPATH) info.rpath.push(...str(value).split(":").filter(Boolean));
    }
    return info;
  } finally {
    await fh.close();
  }
}

/**
 * The ONNX Runtime version a core or provider library was built as: the first NUL-terminated "1.x.y" string in its
 * .rodata (ORT_VERSION is compiled in as such a literal; the kit builder and a 1.29 / 1.30 survey agree on it).
 * Streams .rodata in 1 MiB pieces. Undefined when there is no such string.
 */
export async function readOrtVersionString(file: string): Promise<string | undefined> {
  const fh = await open(file, "r");
  try {
    const h = await readHeader(fh, file);
    if (h.shnum === 0 || h.shentsize < 64) return undefined;
    const sh = await readAt(fh, h.shoff, h.shnum * h.shentsize, file);
    const sec = (i: number) => ({
      name: sh.readUInt32LE(i * h.shentsize),
      offset: Number(sh.readBigUInt64LE(i * h.shentsize + 24)),
      size: Number(sh.readBigUInt64LE(i * h.shentsize + 32)),
    });
    const names = sec(h.shstrndx);
    const table = await readAt(fh, names.offset, names.size, file);
    let rodata: { offset: number; size: number } | undefined;
    for (let i = 0; i < h.shnum; i++) {
      const s = sec(i);
      if (table.toString("latin1", s.name, table.indexOf(0, s.name)) === ".rodata") rodata = s;
    }
    if (!rodata) return undefined;
    const pattern = /\0(1\.\d{1,3}\.\d{1,3})\0/;
    const chunk = 1 << 20;
    let carry = "\0"; // the section start counts as a string boundary
    for (let pos = 0; pos < rodata.size; pos += chunk) {
      const n = Math.min(chunk, rodata.size - pos);
      const text = carry + (await readAt(fh, rodata.offset + pos, n, file)).toString("latin1");
      const m = pattern.exec(text);
      if (m) return m[1];
      carry = text.slice(-16); // longer than any "\01.xxx.yyy\0"
    }
    return undefined;
  } finally {
    await fh.close();
  }
}
