import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { convertMegatronToHf } from "../src/ops/openba/convert.js";
import { openHfDir } from "../src/checkpoints/hf-safetensors.js";
import { readModelDir } from "../src/models/openba/hf-dir.js";

/** Checkpoints that have reference logits (fixtures/reference/<name>.safetensors). */
export const REFERENCE_NAMES = ["fp32-tp1", "fp16-tp2", "bf16-tp1"] as const;
export type ReferenceName = (typeof REFERENCE_NAMES)[number];

export const referencePath = (name: string): string => `fixtures/reference/${name}.safetensors`;
export const greedyPath = (name: string): string => `fixtures/reference/greedy-${name}.json`;
export const SPIECE = "fixtures/tokenizer/spiece.model";

interface ExpectedHf {
  dims: { hidden: number; heads: number; kv_channels: number; ffn: number; padded_vocab?: number; [k: string]: unknown };
  safetensors: string | null;
  tensors: { name: string; dtype: string; shape: number[]; sha256: string }[];
}

const built = new Map<string, Promise<string>>();
const scratch: string[] = [];

/**
 * An HF dir for fixture checkpoint `name`, built once per test file: expected-hf.safetensors copied as
 * model.safetensors plus a config.json from expected-hf.json when the fixture ships the safetensors; otherwise the
 * Megatron checkpoint converted with `convertMegatronToHf`, every tensor's sha256 checked against expected-hf.json
 * so a converter bug cannot pass as a graph bug. spiece.model is added for generation.
 */
export function fixtureHfDir(name: string): Promise<string> {
  let p = built.get(name);
  if (!p) {
    p = buildHfDir(name);
    built.set(name, p);
  }
  return p;
}

async function buildHfDir(name: string): Promise<string> {
  const src = `fixtures/megatron/${name}`;
  const expected = JSON.parse(await readFile(join(src, "expected-hf.json"), "utf8")) as ExpectedHf;
  const root = await mkdtemp(join(tmpdir(), `megahub-verify-${name}-`));
  scratch.push(root);
  const dir = join(root, "hf");
  const full = expected.safetensors !== null ? join(src, expected.safetensors) : undefined;
  if (full !== undefined && existsSync(full)) {
    await mkdir(dir);
    await copyFile(full, join(dir, "model.safetensors"));
    const d = expected.dims;
    const byName = new Map(expected.tensors.map((t) => [t.name, t]));
    const count = (stack: string) => expected.tensors.filter((t) => t.name.startsWith(`${stack}.block.`) && t.name.endsWith("qkv.weight")).length;
    const config = {
      architectures: ["OpenBAForConditionalGeneration"],
      model_type: "openba",
      vocab_size: byName.get("shared_embedding.weight")?.shape[0],
      hidden_size: d.hidden,
      kv_channels: d.kv_channels,
      ffn_hidden_size: d.ffn,
      num_layers: count("encoder"),
      num_decoder_layers: count("decoder"),
      num_heads: d.heads,
      pad_token_id: 0,
      eos_token_id: 1,
      decoder_start_token_id: 0,
    };
    await writeFile(join(dir, "config.json"), JSON.stringify(config, null, 2));
  } else {
    await convertMegatronToHf({ input: src, out: dir, tokenizer: SPIECE });
    await checkAgainstExpected(dir, expected);
  }
  if (!existsSync(join(dir, "spiece.model"))) await copyFile(SPIECE, join(dir, "spiece.model"));
  return dir;
}

async function checkAgainstExpected(dir: string, expected: ExpectedHf): Promise<void> {
  const model = await readModelDir(dir);
  const wrong: string[] = [];
  for (const t of expected.tensors) {
    const ref = model.tensors.get(t.name);
    if (!ref) {
      wrong.push(`${t.name} missing`);
      continue;
    }
    const bytes = await readFile(join(dir, ref.file));
    const sha = createHash("sha256").update(bytes.subarray(ref.offset, ref.offset + ref.length)).digest("hex");
    if (sha !== t.sha256 || ref.dtype !== t.dtype) wrong.push(t.name);
  }
  if (wrong.length > 0) throw new Error(`converted HF tensors differ from expected-hf.json: ${wrong.slice(0, 5).join(", ")}`);
}

/** A private copy of an HF dir (for corruption or pruning), removed with the others by cleanupHfDirs. */
export async function copyHfDir(dir: string, label: string): Promise<string> {
  const out = await mkdtemp(join(tmpdir(), `megahub-verify-${label}-`));
  scratch.push(out);
  for (const f of await readdir(dir)) {
    if (f !== "megahub.json") await copyFile(join(dir, f), join(out, f));
  }
  return out;
}

export async function cleanupHfDirs(): Promise<void> {
  await Promise.all(scratch.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  built.clear();
}

/**
 * Rewrites rows of a [rows, cols] tensor in place in its shard: `perm(row)` gives the source row of each row.
 * Used to corrupt a checkpoint the way a broken converter would (swapped heads, q/k order).
 */
export async function permuteRows(dir: string, tensor: string, perm: (row: number) => number): Promise<void> {
  // Any HF dir (OpenBA, dense GPT, MoE): only the safetensors index is read.
  const ref = (await openHfDir(dir)).tensors.get(tensor);
  if (!ref) throw new Error(`no tensor ${tensor}`);
  const path = join(dir, ref.file);
  const bytes = await readFile(path);
  const rows = ref.shape[0] ?? 0;
  const rowBytes = ref.length / rows;
  const original = Buffer.from(bytes.subarray(ref.offset, ref.offset + ref.length));
  for (let r = 0; r < rows; r++) {
    original.copy(bytes, ref.offset + r * rowBytes, perm(r) * rowBytes, (perm(r) + 1) * rowBytes);
  }
  await writeFile(path, bytes);
}

/** Runs the CLI in-process and captures what it prints. */
export async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const { main } = await import("../src/cli/main.js");
  let stdout = "";
  let stderr = "";
  const out = process.stdout.write.bind(process.stdout);
  const err = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  }) as typeof process.stderr.write;
  try {
    const code = await main(args);
    return { code, stdout, stderr };
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
}

/**
 * A vocabulary-pruned copy of an HF dir, the way prune-vocab makes one: rows of shared_embedding, lm_head.weight and
 * lm_head.bias picked by `keep` (index = new id, value = old id), config vocab_size updated. Returns the dir.
 */
export async function pruneVocabCopy(dir: string, keep: readonly number[]): Promise<string> {
  const { encodeHeader } = await import("../src/formats/safetensors/header.js");
  const model = await readModelDir(dir);
  const out = await copyHfDir(dir, "pruned");
  const shards = new Map<string, Buffer>();
  const entries: { name: string; dtype: import("../src/tensors/dtypes.js").Dtype; shape: number[]; data: Buffer }[] = [];
  for (const ref of [...model.tensors.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    let bytes = shards.get(ref.file);
    if (!bytes) {
      bytes = await readFile(join(dir, ref.file));
      shards.set(ref.file, bytes);
    }
    let data = bytes.subarray(ref.offset, ref.offset + ref.length);
    let shape = [...ref.shape];
    if (ref.name === "shared_embedding.weight" || ref.name.startsWith("lm_head.")) {
      const rowBytes = ref.length / (ref.shape[0] ?? 1);
      data = Buffer.concat(keep.map((old) => data.subarray(old * rowBytes, (old + 1) * rowBytes)));
      shape = [keep.length, ...ref.shape.slice(1)];
    }
    entries.push({ name: ref.name, dtype: ref.dtype, shape, data });
  }
  for (const f of await readdir(out)) {
    if (f.endsWith(".safetensors") || f === "model.safetensors.index.json") await rm(join(out, f));
  }
  const header = encodeHeader(entries);
  await writeFile(join(out, "model.safetensors"), Buffer.concat([header.bytes, ...entries.map((e) => e.data)]));
  const config = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  await writeFile(join(out, "config.json"), JSON.stringify({ ...config, vocab_size: keep.length }, null, 2));
  return out;
}
