/** JSON files from a model folder, read with typed errors: a damaged config is bad input, never a crash. */
import { readFile } from "node:fs/promises";
import { MegahubError } from "../errors.js";

/** Parses `text`; a syntax error becomes a FORMAT error naming the file. */
export function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new MegahubError("FORMAT", `not valid JSON (${(e as Error).message.split("\n")[0]?.slice(0, 120) ?? "syntax error"})`, { file });
  }
}

/** Parses a JSON object (not an array, string or null). */
export function parseJsonObject(text: string, file: string): Record<string, unknown> {
  const v = parseJson(text, file);
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new MegahubError("FORMAT", "expected a JSON object", { file });
  return v as Record<string, unknown>;
}

/** Reads and parses a JSON object file; undefined when it does not exist. */
export async function readJsonObjectIfExists(path: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new MegahubError("LAYOUT", `cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { file: path });
  }
  return parseJsonObject(text, path);
}
