import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { FileSource } from "../../src/io/byte-source.js";
import { readSafetensors, type SafetensorsFile } from "../../src/formats/safetensors/read.js";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const FIXTURES = join(ROOT, "fixtures");
export const fixture = (...parts: string[]) => join(FIXTURES, ...parts);
export const hasFixture = (...parts: string[]) => existsSync(fixture(...parts));

/** Opens a safetensors file and returns a reader of raw tensor bytes by name (the caller closes `file`). */
export async function openSafetensors(path: string): Promise<{ st: SafetensorsFile; bytes(name: string): Promise<Uint8Array>; close(): Promise<void> }> {
  const src = await FileSource.open(path);
  const st = await readSafetensors(src);
  return {
    st,
    async bytes(name) {
      const e = st.get(name);
      if (!e) throw new Error(`${path}: no tensor ${name}`);
      return st.tensorSource(e).read(0, e.end - e.begin);
    },
    close: () => src.close(),
  };
}
