import { formatError } from "../../errors.js";
import { subSource, type ByteSource } from "../../io/byte-source.js";
import { MAX_HEADER_BYTES, parseHeader, type SafetensorsEntry, type SafetensorsHeader } from "./header.js";

export interface SafetensorsFile extends SafetensorsHeader {
  readonly source: ByteSource;
  /** The bytes of one tensor as a lazy source. */
  tensorSource(entry: SafetensorsEntry): ByteSource;
  get(name: string): SafetensorsEntry | undefined;
}

/** Reads and validates a safetensors header; tensor bytes stay on disk until asked for. */
export async function readSafetensors(source: ByteSource): Promise<SafetensorsFile> {
  const file = source.name;
  if (source.size < 8) {
    throw formatError(`file is ${source.size} bytes, too short for the 8-byte header length`, { file });
  }
  const lenBytes = await source.read(0, 8);
  const headerLength = new DataView(lenBytes.buffer, lenBytes.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES) || headerLength + 8n > BigInt(source.size)) {
    throw formatError(
      `header length ${headerLength} exceeds ${headerLength > BigInt(MAX_HEADER_BYTES) ? `the ${MAX_HEADER_BYTES}-byte limit` : `the file size ${source.size}`}`,
      { file },
    );
  }
  const n = Number(headerLength);
  const headerBytes = await source.read(8, n);
  if (n === 0 || headerBytes[0] !== 0x7b) {
    throw formatError("header must start with '{'", { file });
  }
  let json: string;
  try {
    json = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw formatError("header is not valid UTF-8", { file });
  }
  const header = parseHeader(json, n, source.size, file);
  const byName = new Map(header.entries.map((e) => [e.name, e]));
  return {
    ...header,
    source,
    tensorSource: (e) => subSource(source, header.dataStart + e.begin, e.end - e.begin, `${file}#${e.name}`),
    get: (name) => byName.get(name),
  };
}
