import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { cp, readdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { convertMegatronToHf } from "../src/ops/openba/convert.js";
import { isMegahubError } from "../src/errors.js";
import { castBytes } from "../src/tensors/cast.js";
import { fixture, hasFixture, openSafetensors } from "./helpers/fixtures.js";
import { megahub } from "./helpers/cli.js";

const work = mkdtempSync(join(tmpdir(), "megahub-convert-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const out = () => join(work, `out${n++}`);

interface Expected {
  dims: {
    hidden: number;
    heads: number;
    kv_channels: number;
    ffn: number;
    encoder_layers: number;
    decoder_layers: number;
    padded_vocab: number;
  };
  tensors: { name: string; dtype: string; shape: number[]; sha256: string }[];
}

const expectedOf = (name: string) => JSON.parse(readFileSync(fixture("megatron", name, "expected-hf.json"), "utf8")) as Expected;

/** Every fixture checkpoint with the HF tensors torch computed for it (name, dtype, shape, sha256 of the bytes). */
const CHECKPOINTS = hasFixture("megatron")
  ? readdirSync(fixture("megatron")).filter((d) => existsSync(fixture("megatron", d, "expected-hf.json")) && expectedOf(d).tensors.length > 0)
  : [];

/** Compares a converted directory with torch's expectation for a fixture: same names, dtypes, shapes and bytes. */
async function expectTorchTensors(hfDir: string, name: string): Promise<number> {
  const expected = expectedOf(name);
  const got = await openSafetensors(join(hfDir, "model.safetensors"));
  try {
    expect(got.st.entries.map((e) => e.name).sort()).toEqual(expected.tensors.map((t) => t.name).sort());
    for (const t of expected.tensors) {
      const e = got.st.get(t.name);
      expect([e?.dtype, e?.shape], t.name).toEqual([t.dtype, t.shape]);
      const sha = createHash("sha256").update(await got.bytes(t.name)).digest("hex");
      expect(sha, `${t.name} differs from torch's`).toBe(t.sha256);
    }
    return expected.tensors.length;
  } finally {
    await got.close();
  }
}

function hashTree(dir: string): string {
  const h = createHash("sha256");
  const walk = (d: string) => {
    for (const e of readdirSync(d).sort()) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else h.update(p).update(readFileSync(p));
    }
  };
  walk(dir);
  return h.digest("hex");
}

/** Compares two converted directories tensor by tensor, optionally casting the expected side first. */
async function expectSameTensors(hfDir: string, expectedDir: string, cast?: "F32" | "BF16" | "F16"): Promise<number> {
  const expectedPath = join(expectedDir, "model.safetensors");
  const expected = await openSafetensors(expectedPath);
  const got = await openSafetensors(join(hfDir, "model.safetensors"));
  try {
    expect(got.st.entries.map((e) => e.name).sort()).toEqual(expected.st.entries.map((e) => e.name).sort());
    for (const e of expected.st.entries) {
      const g = got.st.get(e.name);
      expect(g?.shape, e.name).toEqual(e.shape);
      let want = await expected.bytes(e.name);
      if (cast) want = castBytes(want, e.dtype, cast, { overflows: 0 });
      expect(g?.dtype, e.name).toBe(cast ?? e.dtype);
      expect(Buffer.compare(await got.bytes(e.name), want), `${e.name} differs from torch's`).toBe(0);
    }
    return expected.st.entries.length;
  } finally {
    await expected.close();
    await got.close();
  }
}

describe.skipIf(CHECKPOINTS.length === 0)("convert is bit-exact with torch", () => {
  it.each(CHECKPOINTS)("%s", async (name) => {
    const input = fixture("megatron", name);
    const before = hashTree(input);
    const dir = out();
    const res = await convertMegatronToHf({ input, out: dir });
    const count = await expectTorchTensors(dir, name);
    expect(count).toBeGreaterThan(20);
    const { dims } = expectedOf(name);
    const config = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    expect(config).toMatchObject({
      hidden_size: dims.hidden,
      num_heads: dims.heads,
      kv_channels: dims.kv_channels,
      ffn_hidden_size: dims.ffn,
      num_layers: dims.encoder_layers,
      num_decoder_layers: dims.decoder_layers,
      vocab_size: dims.padded_vocab,
      tie_word_embeddings: false,
      model_type: "openba",
    });
    expect(res.converted.dims.vocab).toBe(dims.padded_vocab);
    expect(hashTree(input)).toBe(before); // the input is never written
  });
});

describe.skipIf(!hasFixture("megatron", "fp16-tp2"))("convert options and layouts", () => {
  const input = fixture("megatron", "fp16-tp2");
  let reference = "";
  const converted = async () => {
    if (!reference) {
      reference = out();
      await convertMegatronToHf({ input, out: reference });
      await expectTorchTensors(reference, "fp16-tp2");
    }
    return reference;
  };

  it.each(["F32", "BF16"] as const)("--dtype casts exactly (%s)", async (dtype) => {
    const dir = out();
    await convertMegatronToHf({ input, out: dir, dtype: dtype === "F32" ? "fp32" : "bf16" });
    await expectSameTensors(dir, await converted(), dtype);
  });

  it("shards with an exact index when --max-shard-size is small", async () => {
    const dir = out();
    await convertMegatronToHf({ input, out: dir, maxShardBytes: 200_000 });
    const files = (await readdir(dir)).filter((f) => f.endsWith(".safetensors")).sort();
    expect(files.length).toBeGreaterThan(1);
    expect(files[0]).toBe(`model-00001-of-${String(files.length).padStart(5, "0")}.safetensors`);
    const index = JSON.parse(await readFile(join(dir, "model.safetensors.index.json"), "utf8")) as {
      metadata: { total_size: number };
      weight_map: Record<string, string>;
    };
    let total = 0;
    for (const f of files) {
      const st = await openSafetensors(join(dir, f));
      for (const e of st.st.entries) {
        expect(index.weight_map[e.name]).toBe(f);
        total += e.end - e.begin;
      }
      await st.close();
    }
    expect(index.metadata.total_size).toBe(total);
  });

  it("writes tokenizer files with OpenBA's ids when given a sentencepiece model", async () => {
    const dir = out();
    const res = await convertMegatronToHf({ input, out: dir, tokenizer: fixture("tokenizer", "spiece.model") });
    const sp = res.converted.tokenizer?.spSize ?? 0;
    expect(sp).toBeGreaterThan(100);
    const added = JSON.parse(await readFile(join(dir, "added_tokens.json"), "utf8")) as Record<string, number>;
    expect(added).toEqual({ "<R>": sp + 100, "<S>": sp + 101, "<X>": sp + 102 });
    const tc = JSON.parse(await readFile(join(dir, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
    expect(tc.chat_template).toContain("<extra_id_0>");
    expect((tc.added_tokens_decoder as Record<string, { content: string }>)[String(sp + 99)]?.content).toBe("<extra_id_0>");
    expect(readFileSync(join(dir, "spiece.model")).equals(readFileSync(fixture("tokenizer", "spiece.model")))).toBe(true);
  });

  it("reads a checkpoint inside an uncompressed .tar in place", async () => {
    const tar = join(work, "ckpt.tar");
    execFileSync("tar", ["-cf", tar, "-C", fixture("megatron"), "fp16-tp2"]);
    const dir = out();
    await convertMegatronToHf({ input: tar, out: dir });
    await expectTorchTensors(dir, "fp16-tp2");
  });

  it("accepts the iteration directory and --iteration", async () => {
    const iter = (await readdir(input)).find((d) => d.startsWith("iter_")) as string;
    const dir = out();
    await convertMegatronToHf({ input: join(input, iter), out: dir });
    await expectTorchTensors(dir, "fp16-tp2");
    const err = await convertMegatronToHf({ input, out: out(), iteration: 999 }).catch((e: unknown) => e);
    expect(isMegahubError(err) && err.message).toMatch(/no iter_0000999 directory; available: iter_/);
  });

  it("names the missing rank and writes nothing", async () => {
    const copy = join(work, "missing-rank");
    await cp(fixture("megatron", "fp16-tp4"), copy, { recursive: true });
    const iter = (await readdir(copy)).find((d) => d.startsWith("iter_")) as string;
    rmSync(join(copy, iter, "mp_rank_02"), { recursive: true });
    const target = out();
    const err = await convertMegatronToHf({ input: copy, out: target }).catch((e: unknown) => e);
    expect(isMegahubError(err) && err.message).toMatch(/missing mp_rank_02/);
    expect(existsSync(target)).toBe(false);
  });

  it("refuses pipeline parallelism clearly", async () => {
    const err = await convertMegatronToHf({ input: fixture("megatron", "pp2"), out: out() }).catch((e: unknown) => e);
    expect(isMegahubError(err) && err.code).toBe("UNSUPPORTED");
    expect((err as Error).message).toMatch(/PP 2.*not supported yet/);
  });

  it("refuses to overwrite a non-empty output", async () => {
    const dir = out();
    await convertMegatronToHf({ input, out: dir });
    const err = await convertMegatronToHf({ input, out: dir }).catch((e: unknown) => e);
    expect(isMegahubError(err) && err.code).toBe("OUTPUT");
  });

  it("CLI: --dry-run prints the plan as JSON and writes nothing", () => {
    const target = out();
    const r = megahub(["convert", input, "--out", target, "--dry-run", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const plan = r.json<{ dryRun: boolean; plan: { files: { path: string }[]; bytesToWrite: number } }>();
    expect(plan.dryRun).toBe(true);
    expect(plan.plan.files.map((f) => f.path)).toContain("model.safetensors");
    expect(plan.plan.bytesToWrite).toBeGreaterThan(0);
    expect(existsSync(target)).toBe(false);
  });

  it("CLI: errors are one line naming the file, with a non-zero exit", () => {
    const r = megahub(["convert", fixture("megatron", "pp2"), "--out", out()]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/pp2.*PP 2/);
  });
});

describe.skipIf(!hasFixture("reference", "fp32-tp1.safetensors"))("convert --verify", () => {
  it("checks the written model against reference logits right away", () => {
    const target = out();
    const r = megahub(["convert", fixture("megatron", "fp32-tp1"), "--out", target, "--verify", fixture("reference", "fp32-tp1.safetensors"), "--device", "cpu", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const res = r.json<{ verification: { passed: boolean; provider: string; maxAbsDiff: number; top1: number } }>();
    expect(res.verification).toMatchObject({ passed: true, provider: "cpu", top1: 1 });
    expect(res.verification.maxAbsDiff).toBeLessThan(1e-4);
  });

  it("the built CLI's manifest holds the sha256 of every file, hashed on worker threads while writing", () => {
    const target = out();
    const r = megahub(["convert", fixture("megatron", "fp16-tp3"), "--out", target, "--quiet"]);
    expect(r.code, r.stderr).toBe(0);
    const manifest = JSON.parse(readFileSync(join(target, "megahub.json"), "utf8")) as { files: Record<string, { bytes: number; sha256: string }>; tensors: Record<string, { sha256?: string }> };
    const onDisk = readdirSync(target).filter((f) => f !== "megahub.json").sort();
    expect(Object.keys(manifest.files).sort()).toEqual(onDisk);
    for (const f of onDisk) {
      const bytes = readFileSync(join(target, f));
      expect(manifest.files[f], f).toEqual({ bytes: bytes.byteLength, sha256: createHash("sha256").update(bytes).digest("hex") });
    }
    // Tensor digests cost a second pass over every byte: only on request.
    expect(Object.values(manifest.tensors).some((t) => t.sha256 !== undefined)).toBe(false);
  });

  it("--tensor-hashes adds the sha256 of every tensor's bytes; --no-hash leaves all digests out", async () => {
    const target = out();
    const r = megahub(["convert", fixture("megatron", "fp16-tp3"), "--out", target, "--quiet", "--tensor-hashes"]);
    expect(r.code, r.stderr).toBe(0);
    const manifest = JSON.parse(readFileSync(join(target, "megahub.json"), "utf8")) as { tensors: Record<string, { sha256: string }> };
    const got = await openSafetensors(join(target, "model.safetensors"));
    for (const e of got.st.entries) {
      expect(manifest.tensors[e.name]?.sha256, e.name).toBe(createHash("sha256").update(await got.bytes(e.name)).digest("hex"));
    }
    await got.close();
    const bare = out();
    expect(megahub(["convert", fixture("megatron", "fp16-tp3"), "--out", bare, "--quiet", "--no-hash"]).code).toBe(0);
    expect(readFileSync(join(bare, "megahub.json"), "utf8")).not.toMatch(/sha256/);
  });

  it("exits non-zero when the reference does not match the checkpoint", () => {
    const r = megahub(["convert", fixture("megatron", "bf16-tp1"), "--out", out(), "--verify", fixture("reference", "fp32-tp1.safetensors"), "--device", "cpu"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/verification FAILED/);
  });
});
