import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { formatError } from "../errors.js";

/**
 * A random-access window of bytes: a file, a member of a tar archive or a record of a zip. Readers take a
 * ByteSource, never a path, so the same code reads a checkpoint on disk or inside an archive.
 */
export interface ByteSource {
  /** Where the bytes come from, for error messages (a path, or path#member). */
  readonly name: string;
  readonly size: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Reads `target.byteLength` bytes at `offset` into `target` (a reused block buffer): the executor's hot path, which
   * spares a fresh allocation and its page faults per block. Optional: {@link readInto} falls back to `read`.
   */
  readInto?(target: Uint8Array, offset: number): Promise<void>;
}

/** Fills `target` from `source` at `offset`, without allocating where the source can read in place. */
export async function readInto(source: ByteSource, target: Uint8Array, offset: number): Promise<void> {
  if (source.readInto) return source.readInto(target, offset);
  target.set(await source.read(offset, target.byteLength));
}

/** A sub-range of another source: zip records, tar members, safetensors tensors. */
export function subSource(parent: ByteSource, offset: number, length: number, name = parent.name): ByteSource {
  if (offset < 0 || length < 0 || offset + length > parent.size) {
    throw formatError(`range [${offset}, ${offset + length}) lies outside the ${parent.size} bytes available`, {
      file: parent.name,
    });
  }
  return {
    name,
    size: length,
    read(off, len) {
      checkRange(name, length, off, len);
      return parent.read(offset + off, len);
    },
    ...(parent.readInto
      ? {
          readInto(target: Uint8Array, off: number) {
            checkRange(name, length, off, target.byteLength);
            return readInto(parent, target, offset + off);
          },
        }
      : {}),
  };
}

export function bytesSource(bytes: Uint8Array, name = "<memory>"): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    read(off, len) {
      checkRange(name, bytes.byteLength, off, len);
      return Promise.resolve(bytes.subarray(off, off + len));
    },
  };
}

function checkRange(name: string, size: number, off: number, len: number): void {
  if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || off < 0 || len < 0 || off + len > size) {
    throw formatError(`expected ${len} bytes at offset ${off}, but the source holds ${size}`, { file: name });
  }
}

/** An open file. Files are opened read-only: inputs are never written. */
export class FileSource implements ByteSource {
  private constructor(
    readonly name: string,
    readonly size: number,
    private readonly handle: FileHandle,
  ) {}

  static async open(path: string): Promise<FileSource> {
    // O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer; regular files ignore the flag.
    const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const st = await handle.stat();
    if (!st.isFile()) {
      await handle.close();
      throw formatError(`not a regular file (${st.isDirectory() ? "a directory" : st.isFIFO() ? "a FIFO" : "a special file"})`, { file: path });
    }
    return new FileSource(path, st.size, handle);
  }

  /** The whole file as text, refused above `maxBytes` (tracker and config files are small; a device is not a file). */
  static async readText(path: string, maxBytes = 1 << 20): Promise<string> {
    const f = await FileSource.open(path);
    try {
      if (f.size > maxBytes) throw formatError(`${f.size} bytes is more than the ${maxBytes} expected of this file`, { file: path });
      return new TextDecoder().decode(await f.read(0, f.size));
    } finally {
      await f.close();
    }
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    // allocUnsafe: the buffer is filled completely below, so zeroing it first would only cost page faults.
    const out = Buffer.allocUnsafe(length);
    await this.readInto(out, offset);
    return out;
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    const length = target.byteLength;
    checkRange(this.name, this.size, offset, length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(target, done, length - done, offset + done);
      if (bytesRead === 0) {
        throw formatError(`file ended after ${offset + done} bytes while reading ${length} at ${offset}`, {
          file: this.name,
        });
      }
      done += bytesRead;
    }
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
