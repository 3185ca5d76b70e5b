import { formatError } from "../../errors.js";
import { subSource, type ByteSource } from "../../io/byte-source.js";

export interface TarMember {
  readonly name: string;
  readonly type: "file" | "directory" | "other";
  readonly size: number;
  readonly source: ByteSource;
}

/** More members than this is not a checkpoint archive; the bound keeps a hostile archive from looping for long. */
export const MAX_TAR_MEMBERS = 1_000_000;

/** Member names longer than PATH_MAX cannot be real paths; deeper ones would make the tree's folder set quadratic. */
export const MAX_TAR_NAME = 4096;

/**
 * Indexes an uncompressed tar (ustar, GNU long names, pax headers) by reading only its 512-byte headers, so a
 * member's bytes can later be read as a byte range in place — tar-stream only offers sequential extraction.
 */
export async function indexTar(source: ByteSource): Promise<TarMember[]> {
  const members: TarMember[] = [];
  const file = source.name;
  let pos = 0;
  let longName: string | undefined;
  let paxPath: string | undefined;
  let paxSize: number | undefined;
  const text = new TextDecoder();
  while (pos + 512 <= source.size) {
    const h = await source.read(pos, 512);
    if (h.every((b) => b === 0)) {
      break;
    }
    if (!checksumOk(h)) {
      throw formatError("tar header checksum mismatch", { file, offset: pos });
    }
    const field = (at: number, len: number) => {
      const s = h.subarray(at, at + len);
      const nul = s.indexOf(0);
      return text.decode(nul >= 0 ? s.subarray(0, nul) : s);
    };
    let size = paxSize ?? parseOctal(h.subarray(124, 136), file, pos);
    const typeflag = String.fromCharCode(h[156] as number);
    const prefix = field(345, 155);
    let name = paxPath ?? longName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    const dataStart = pos + 512;
    if (dataStart + size > source.size) {
      throw formatError(`tar member "${name}" (${size} bytes) runs past the end of the archive`, { file, offset: pos });
    }
    pos = dataStart + Math.ceil(size / 512) * 512;
    if ((typeflag === "L" || typeflag === "x" || typeflag === "g") && size > 1 << 20) {
      throw formatError(`a ${size}-byte name/pax header is not a real archive's`, { file, offset: pos });
    }
    if (typeflag === "L") {
      longName = text.decode(await source.read(dataStart, size)).replace(/\0+$/, "");
      continue;
    }
    if (typeflag === "x") {
      const pax = parsePax(text.decode(await source.read(dataStart, size)));
      paxPath = pax.get("path");
      const s = pax.get("size");
      paxSize = s !== undefined ? Number(s) : undefined;
      continue;
    }
    if (typeflag === "g") {
      continue;
    }
    longName = paxPath = paxSize = undefined;
    name = name.replace(/^\.\//, "");
    if (name.length > MAX_TAR_NAME) {
      throw formatError(`member name of ${name.length} characters is longer than a path can be (${MAX_TAR_NAME})`, { file, offset: pos });
    }
    const type = typeflag === "0" || typeflag === "\0" ? "file" : typeflag === "5" ? "directory" : "other";
    if (type !== "file") {
      size = 0;
    }
    members.push({ name, type, size, source: subSource(source, dataStart, size, `${file}#${name}`) });
    if (members.length > MAX_TAR_MEMBERS) {
      throw formatError(`more than ${MAX_TAR_MEMBERS} members`, { file });
    }
  }
  return members;
}

/** Cheap sniff: a ustar magic at 257 or a valid header checksum at 0. */
export async function looksLikeTar(source: ByteSource): Promise<boolean> {
  if (source.size < 512) {
    return false;
  }
  const h = await source.read(0, 512);
  return !h.every((b) => b === 0) && checksumOk(h);
}

function checksumOk(h: Uint8Array): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) {
    sum += i >= 148 && i < 156 ? 0x20 : (h[i] as number);
  }
  const stored = h.subarray(148, 156);
  const s = new TextDecoder().decode(stored).replace(/[\0 ]+$/, "").trim();
  return /^[0-7]+$/.test(s) && parseInt(s, 8) === sum;
}

function parseOctal(b: Uint8Array, file: string, offset: number): number {
  if (((b[0] as number) & 0x80) !== 0) {
    // GNU base-256 for sizes over 8 GiB
    let v = 0;
    for (let i = 1; i < b.length; i++) v = v * 256 + (b[i] as number);
    return v;
  }
  const s = new TextDecoder().decode(b).replace(/[\0 ]+$/, "").trim();
  if (!/^[0-7]*$/.test(s)) {
    throw formatError(`bad octal size field ${JSON.stringify(s)}`, { file, offset });
  }
  return s === "" ? 0 : parseInt(s, 8);
}

function parsePax(body: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const rec of body.split("\n")) {
    const m = /^\d+ ([^=]+)=(.*)$/.exec(rec);
    if (m) out.set(m[1] as string, m[2] as string);
  }
  return out;
}
