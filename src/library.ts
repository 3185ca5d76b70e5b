/**
 * The operations whose own functions take positional arguments, in the params-object style of the rest of the
 * library (and of huggingface.js): one object in, `onProgress(done, total)` in it, a result object out.
 */
import { countCorpus, openSentencePiece, type CountOptions, type VocabCounts } from "./ops/vocab/count.js";
import { packDir, planPack, type PackPlan, type PackResult } from "./formats/tar/pack.js";
import { planUnpack, unpackTar, type UnpackPlan, type UnpackResult } from "./formats/tar/unpack.js";

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
  /** Check and list what would be packed (the result's `members`); write nothing. */
  dryRun?: boolean;
  onProgress?: (done: number, total: number) => void;
}

/** `megahub pack`: an uncompressed tar with a sha256 manifest, readable in place by inspect and convert. */
export function pack(params: PackParams): Promise<PackResult | PackPlan> {
  return params.dryRun === true ? planPack(params.dir, params.out) : packDir(params.dir, params.out, params.onProgress);
}

export interface UnpackParams {
  /** The .tar megahub packed. */
  file: string;
  /** The folder to create; it appears only when every file checked out. */
  out: string;
  /** Check the headers against the manifest and list what would be written (`members`); write nothing. */
  dryRun?: boolean;
  onProgress?: (done: number, total: number) => void;
}

/** `megahub unpack`: extracts and checks every file against the archive's manifest. */
export function unpack(params: UnpackParams): Promise<UnpackResult | UnpackPlan> {
  return params.dryRun === true ? planUnpack(params.file, params.out) : unpackTar(params.file, params.out, params.onProgress);
}
