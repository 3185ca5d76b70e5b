/** Shared by the prune tests: the torch reference runner and byte comparisons of HF and Megatron outputs. */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "vitest";
import { openMegatron } from "../src/formats/megatron/read.js";
import { blocks } from "../src/plan/execute.js";
import type { Recipe } from "../src/plan/recipe.js";
import type { MasksManifest } from "../src/ops/prune/structure.js";
import { FIXTURES, ROOT, fixture, openSafetensors } from "./helpers/fixtures.js";
import { runPython } from "./helpers/torch.js";

export const REFERENCE = join(ROOT, "scripts", "prune_reference.py");

const MEGATRON = join(FIXTURES, "megatron");
/** A fixture checkpoint directory. */
export const ckpt = (name: string) => join(MEGATRON, name);
/** The HF tensors torch computed for a fixture (committed for release-tp1 only; the rest ship sha256 lists). */
export const expectedHf = (name: string) => join(MEGATRON, name, "expected-hf.safetensors");

export interface FixtureDims {
  hidden: number;
  heads: number;
  kv_channels: number;
  ffn: number;
  encoder_layers: number;
  decoder_layers: number;
  padded_vocab: number;
  true_vocab: number;
  tp: number;
}

/**
 * The ordinary fixture checkpoints (every dtype and TP, release, shared views), by name. pp2 (unsupported) and
 * pruned-uneven-tp2 (tested on its own) are left out.
 */
export function megatronFixtures(): string[] {
  if (!existsSync(MEGATRON)) return [];
  return readdirSync(MEGATRON)
    .filter((d) => existsSync(join(MEGATRON, d, "expected-hf.json")) && d !== "pp2" && d !== "pruned-uneven-tp2")
    .sort();
}

export function fixtureDims(name: string): FixtureDims {
  return (JSON.parse(readFileSync(join(MEGATRON, name, "expected-hf.json"), "utf8")) as { dims: FixtureDims }).dims;
}

export function workDir(prefix: string): { dir: string; next(): string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  let n = 0;
  return { dir, next: () => join(dir, `out${n++}`), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Runs scripts/prune_reference.py: the same masks applied by torch with its own slicing. `from` is either the
 * fixture's expected-hf.safetensors (HF names) or a Megatron checkpoint directory.
 */
export function torchReference(
  from: { hf: string } | { megatron: string },
  masks: MasksManifest,
  out: { hf?: string; megatron?: { dir: string; tp: number; vocabRows?: number; trueVocab?: number }; magnitude?: string },
  scratch: string,
): void {
  const masksPath = join(scratch, `masks-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(masksPath, JSON.stringify(masks));
  const args = ["hf" in from ? "--hf" : "--megatron", "hf" in from ? from.hf : from.megatron, "--masks", masksPath];
  if (out.hf) args.push("--out-hf", out.hf);
  if (out.megatron) {
    args.push("--out-megatron", out.megatron.dir, "--tp", String(out.megatron.tp));
    if (out.megatron.vocabRows !== undefined) args.push("--vocab-rows", String(out.megatron.vocabRows));
    if (out.megatron.trueVocab !== undefined) args.push("--true-vocab", String(out.megatron.trueVocab));
  }
  if (out.magnitude) args.push("--magnitude-out", out.magnitude);
  runPython(`import runpy, sys; sys.argv = [${JSON.stringify(REFERENCE)}] + sys.argv[1:]; runpy.run_path(${JSON.stringify(REFERENCE)}, run_name="__main__")`, args);
}

/** Every tensor of `expected` is in `got` with the same dtype, shape and bytes, and `got` has nothing else. */
export async function expectSameSafetensors(got: string, expected: string, skip: (name: string) => boolean = () => false): Promise<number> {
  const e = await openSafetensors(expected);
  const g = await openSafetensors(got);
  try {
    expect(g.st.entries.map((x) => x.name).sort()).toEqual(e.st.entries.map((x) => x.name).sort());
    for (const t of e.st.entries) {
      if (skip(t.name)) continue;
      const mine = g.st.get(t.name);
      expect(mine?.dtype, t.name).toBe(t.dtype);
      expect(mine?.shape, t.name).toEqual(t.shape);
      expect(Buffer.compare(await g.bytes(t.name), await e.bytes(t.name)), `${t.name} differs from torch's`).toBe(0);
    }
    return e.st.entries.length;
  } finally {
    await e.close();
    await g.close();
  }
}

export async function recipeBytes(r: Recipe): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const b of blocks(r, 1 << 20, { overflows: 0 })) parts.push(b);
  return Buffer.concat(parts);
}

/**
 * A Megatron checkpoint megahub wrote, rank by rank, against torch's per-rank expectation (rank{r}.safetensors).
 * `skip` names tensors the reference cannot know bit for bit (computed rotary buffers of an HF source).
 */
export async function expectSameMegatron(ckptDir: string, expectedDir: string, tp: number, skip: (key: string) => boolean = () => false): Promise<void> {
  const ckpt = await openMegatron(ckptDir);
  try {
    expect(ckpt.shards.length).toBe(tp);
    for (const shard of ckpt.shards) {
      const e = await openSafetensors(join(expectedDir, `rank${shard.tp}.safetensors`));
      try {
        const want = e.st.entries.map((x) => x.name).filter((k) => !skip(k)).sort();
        expect([...shard.tensors.keys()].filter((k) => !skip(k)).sort(), `rank ${shard.tp} tensors`).toEqual(want);
        for (const name of want) {
          const r = ckpt.recipe(shard, name);
          const t = e.st.get(name);
          expect(r.dtype, name).toBe(t?.dtype);
          expect(r.shape, `rank ${shard.tp} ${name}`).toEqual(t?.shape);
          expect(Buffer.compare(await recipeBytes(r), await e.bytes(name)), `rank ${shard.tp} ${name} differs from torch's`).toBe(0);
        }
      } finally {
        await e.close();
      }
    }
  } finally {
    await ckpt.close();
  }
}

export { fixture };
