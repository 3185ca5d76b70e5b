import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { createGunzip } from "node:zlib";
import { MegahubError } from "../../errors.js";
import { parseSentencePieceModel, type SentencePieceModel } from "../../formats/sentencepiece/model.js";
import { inlineSink, workerSink } from "./pool.js";

/**
 * Google's sentencepiece, compiled to WebAssembly (@agnai/sentencepiece-js, the build `generate` already uses), for
 * counting exactly as `spm_encode` does: one call per line, no special-token splitting.
 *
 * Why not `src/tokenizers/tokenizer.ts`'s Tokenizer: its `encode` splits OpenBA's special strings out of the text first
 * (right for prompts, wrong for counting — `spm_encode` and OpenBA's get_vocab_freq.py see `</s>` in a text as
 * plain characters) and builds a JS array per call. The hot loop here walks the returned vector straight into the
 * counts. Why not a tokenizer written in TypeScript: unigram Viterbi, the precompiled NFKC char map and byte fallback
 * would all be re-implementations whose equality with Google's code could only be hoped for.
 */
export interface SentencePieceEncoder {
  readonly path: string;
  /** sha256 of the .model file, recorded in frequency files so a mismatched tokenizer is caught later. */
  readonly sha256: string;
  readonly model: SentencePieceModel;
  /** Number of pieces (ids 0 … spSize − 1). */
  readonly spSize: number;
  /** Plain sentencepiece ids of `text` (what `spm_encode --output_format=id` prints for one line). */
  encode(text: string): number[];
  /** Adds the ids of `text` to `counts` (indexed by id); returns how many ids there were. */
  countInto(text: string, counts: Float64Array): number;
  decode(ids: readonly number[]): string;
}

interface Deletable {
  delete(): void;
}
interface VectorInt extends Deletable {
  size(): number;
  get(i: number): number;
}
interface SpModule {
  StringView: new (text: string) => Deletable & { getView(): Deletable };
  vecFromJSArray(ids: number[]): Deletable;
}
interface SpRaw {
  EncodeAsIds(view: Deletable): VectorInt;
  DecodeIds(ids: Deletable): string;
  status(): Deletable & { ToString(): string };
}
interface SpWrapper {
  load(path: string): Promise<void>;
  sentencepiece: SpModule;
  processor: SpRaw;
}

/** Loads a sentencepiece .model: parsed with our protobuf reader (clear errors), then loaded into the WASM build. */
export async function openSentencePiece(path: string): Promise<SentencePieceEncoder> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new MegahubError("USAGE", `cannot read the sentencepiece model (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { file: path });
  }
  const model = parseSentencePieceModel(bytes, path);
  // The package is CommonJS without types; createRequire keeps it out of the ESM loader and out of `--help`.
  const require = createRequire(import.meta.url);
  const mod = require("@agnai/sentencepiece-js") as { SentencePieceProcessor: new () => SpWrapper };
  const sp = new mod.SentencePieceProcessor();
  await sp.load(path);
  const M = sp.sentencepiece;
  const P = sp.processor;
  // The package swallows a failed Load; without this check every line would silently encode to nothing.
  const status = P.status();
  const text = status.ToString();
  status.delete();
  if (text !== "OK") throw new MegahubError("FORMAT", `sentencepiece cannot load this model: ${text}`, { file: path });
  const encodeVector = <T>(line: string, use: (v: VectorInt) => T): T => {
    const sv = new M.StringView(line);
    const view = sv.getView();
    const ids = P.EncodeAsIds(view);
    try {
      return use(ids);
    } finally {
      ids.delete();
      view.delete();
      sv.delete();
    }
  };
  return {
    path,
    sha256: createHash("sha256").update(bytes).digest("hex"),
    model,
    spSize: model.pieces.length,
    encode: (line) =>
      line.length === 0
        ? []
        : encodeVector(line, (v) => {
            const n = v.size();
            const out = new Array<number>(n);
            for (let i = 0; i < n; i++) out[i] = v.get(i);
            return out;
          }),
    countInto(line, counts) {
      // An empty line has no ids; skipping the WASM call for it saves a quarter of the time on prose with blank lines.
      if (line.length === 0) return 0;
      return encodeVector(line, (v) => {
        const n = v.size();
        for (let i = 0; i < n; i++) {
          const id = v.get(i);
          counts[id] = (counts[id] as number) + 1;
        }
        return n;
      });
    },
    decode(ids) {
      const vec = M.vecFromJSArray([...ids]);
      try {
        return P.DecodeIds(vec);
      } finally {
        vec.delete();
      }
    },
  };
}

/** How `countCorpus` reads its files and reports progress. */
export interface CountOptions {
  /** JSON lines: count this string field of each record (dots address nested fields: `meta.text`). */
  field?: string;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /**
   * Worker threads, each with its own sentencepiece instance. @default 1 below 4 MiB of input (starting workers
   * costs more than it saves), else up to 4, one per available core
   */
  threads?: number;
}

/** Token counts of a corpus for every sentencepiece id. */
export interface VocabCounts {
  /** counts[id] for id in 0 … spSize − 1. */
  counts: Float64Array;
  /** Sum of counts. */
  tokens: number;
  /** Lines read (plain text) or records read (JSON lines). */
  lines: number;
  bytes: number;
  seconds: number;
  threads: number;
  tokenizer: { path: string; sha256: string; spSize: number };
  corpus: string[];
  field?: string;
}

/**
 * Counts sentencepiece ids over corpus files, streaming: plain text line by line (exactly `spm_encode`'s unit), or
 * JSON lines (`--field`, or `text` for `.jsonl`/`.ndjson` files) one record's string at a time. `.gz` files are
 * decompressed on the fly. A corpus with no tokens is an error: pruning to it would drop every piece.
 */
/** The corpus's files and bytes and the thread count a count would use, after the same checks; nothing is read. */
export async function planCount(files: readonly string[], options: Pick<CountOptions, "threads"> = {}): Promise<{ files: { file: string; bytes: number }[]; bytes: number; threads: number }> {
  if (files.length === 0) throw new MegahubError("USAGE", "no corpus files given");
  const sized: { file: string; bytes: number }[] = [];
  for (const f of files) {
    const s = await stat(f).catch((e: NodeJS.ErrnoException) => {
      throw new MegahubError("USAGE", `cannot read the corpus file (${e.code ?? String(e)})`, { file: f });
    });
    if (!s.isFile()) throw new MegahubError("USAGE", "corpus path is not a file", { file: f });
    sized.push({ file: f, bytes: s.size });
  }
  const bytes = sized.reduce((a, f) => a + f.bytes, 0);
  const threads = options.threads ?? (bytes < 4 << 20 ? 1 : Math.min(4, availableParallelism()));
  if (!Number.isInteger(threads) || threads < 1) throw new MegahubError("USAGE", `threads must be a positive integer, got ${threads}`);
  return { files: sized, bytes, threads };
}

export async function countCorpus(files: readonly string[], sp: SentencePieceEncoder, options: CountOptions = {}): Promise<VocabCounts> {
  const { bytes: totalBytes, threads } = await planCount(files, options);
  const t0 = performance.now();
  const sink = threads === 1 ? inlineSink(sp.spSize, (t, c) => sp.countInto(t, c)) : await workerSink(sp.path, sp.spSize, threads);
  let lines = 0;
  let done = 0;
  let field: string | undefined;
  let result: { counts: Float64Array; tokens: number };
  try {
    for (const file of files) {
      const f = options.field ?? (/\.(jsonl|ndjson)(\.gz)?$/.test(file) ? "text" : undefined);
      field ??= f;
      const path = f?.split(".");
      let lineNo = 0;
      for await (const { lines: batch, bytes } of lineBatches(file)) {
        let texts: string[];
        if (path === undefined) {
          texts = batch;
        } else {
          texts = [];
          for (const line of batch) {
            lineNo++;
            if (line.trim() !== "") texts.push(jsonField(line, path, file, lineNo));
          }
        }
        lines += texts.length;
        await sink.add(texts);
        done += bytes;
        if (bytes > 0) options.onProgress?.(done, totalBytes);
      }
    }
    result = await sink.finish();
  } catch (e) {
    await sink.close();
    throw e;
  }
  if (done !== totalBytes) options.onProgress?.(totalBytes, totalBytes);
  if (result.tokens === 0) {
    throw new MegahubError("USAGE", `the corpus has no tokens (${lines} ${field ? "records" : "lines"}, ${totalBytes} bytes): nothing to count`, {
      file: files.join(", "),
    });
  }
  return {
    counts: result.counts,
    tokens: result.tokens,
    lines,
    bytes: totalBytes,
    seconds: (performance.now() - t0) / 1000,
    threads,
    tokenizer: { path: sp.path, sha256: sp.sha256, spSize: sp.spSize },
    corpus: [...files],
    ...(field ? { field } : {}),
  };
}

function jsonField(line: string, path: readonly string[], file: string, lineNo: number): string {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new MegahubError("FORMAT", `line ${lineNo} is not JSON (${(e as Error).message})`, { file });
  }
  for (const k of path) v = typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>)[k] : undefined;
  if (typeof v !== "string") throw new MegahubError("FORMAT", `line ${lineNo} has no string field "${path.join(".")}"`, { file });
  return v;
}

/**
 * The lines of a file without their "\n" (a "\r" stays, as std::getline in spm_encode keeps it), one batch per
 * 1 MiB read, with the bytes that batch consumed (compressed bytes for .gz). The decoder keeps a byte-order mark
 * (spm_encode sees it too) and replaces invalid UTF-8.
 */
async function* lineBatches(file: string): AsyncGenerator<{ lines: string[]; bytes: number }> {
  const raw = createReadStream(file, { highWaterMark: 1 << 20 });
  const gz = file.endsWith(".gz");
  let rawBytes = 0;
  if (gz) raw.on("data", (b: Buffer | string) => (rawBytes += b.length));
  const stream = gz ? raw.pipe(createGunzip()) : raw;
  const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  let rest = "";
  let reported = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      const text = rest + decoder.decode(chunk, { stream: true });
      const lines = text.split("\n");
      rest = lines.pop() ?? "";
      const consumed = gz ? rawBytes - reported : chunk.length;
      reported += consumed;
      yield { lines, bytes: consumed };
    }
  } catch (e) {
    if (e instanceof MegahubError) throw e;
    throw new MegahubError("FORMAT", `cannot read the corpus: ${(e as Error).message}`, { file });
  } finally {
    raw.destroy();
  }
  rest += decoder.decode();
  yield { lines: rest.length > 0 ? [rest] : [], bytes: gz ? rawBytes - reported : 0 };
}
