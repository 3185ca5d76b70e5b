/**
 * The operations whose own functions take positional arguments, in the params-object style of the rest of the
 * library (and of huggingface.js): one object in, `onProgress(done, total)` in it, a result object out.
 */
import { countCorpus, openSentencePiece, type CountOptions, type VocabCounts } from "./ops/vocab/count.js";
import { packDir } from "./formats/tar/pack.js";
import { unpackTar } from "./formats/tar/unpack.js";

export interface CountVocabParams extends CountOptions {
  /** Corpus files (plain text, JSON lines, .gz). */
  files: readonly string[];
  /** The sentencepiece model whose ids are counted. */
  tokenizer: string;
}

/** `megahub vocab count`: token counts per sentencepiece id over a corpus. */
export async function countVocab(params: CountVocabParams): Promise<VocabCounts> {
  const { files, tokenizer, ...options } = params;
  return countCorpus(files, await openSentencePiece(tokenizer), options);
}

export interface PackParams {
  /** The folder to archive (a megahub output). */
  dir: string;
  /** The .tar to write; refused when it exists. */
  out: string;
  onProgress?: (done: number, total: number) => void;
}

/** `megahub pack`: an uncompressed tar with a sha256 manifest, readable in place by inspect and convert. */
export function pack(params: PackParams): ReturnType<typeof packDir> {
  return packDir(params.dir, params.out, params.onProgress);
}

export interface UnpackParams {
  /** The .tar megahub packed. */
  file: string;
  /** The folder to create; it appears only when every file checked out. */
  out: string;
  onProgress?: (done: number, total: number) => void;
}

/** `megahub unpack`: extracts and checks every file against the archive's manifest. */
export function unpack(params: UnpackParams): ReturnType<typeof unpackTar> {
  return unpackTar(params.file, params.out, params.onProgress);
}
