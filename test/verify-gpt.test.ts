/**
 * Decoder-only models (Llama, Mistral, Qwen2, Qwen3) in ONNX Runtime against transformers itself: tiny random models
 * made by transformers' own classes at test time (scripts/gpt_reference.py make), their logits on a padded batch,
 * greedy generate(do_sample=False) ids and tokenizer ids, all computed by transformers / tokenizers in the reference
 * venv. Nothing here is compared with megahub's own output alone.
 */
import { execFileSync } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exportOnnx } from "../src/verify/export-onnx.js";
import { generate } from "../src/verify/generate.js";
import { loadHfTokenizer } from "../src/verify/hf-tokenizer.js";
import { openHfDir as readTensorIndex } from "../src/checkpoints/hf-safetensors.js";
import { openSession } from "../src/verify/ort-session.js";
import { readReference, forwardFeeds } from "../src/verify/reference.js";
import { compareLogits } from "../src/verify/metrics.js";
import { verifyModel } from "../src/verify/verify-model.js";
import { HAS_REF, REF_PYTHON } from "./helpers/refpy.js";
import { runCli } from "./verify-helpers.js";

interface Made {
  dir: string;
  family: string;
  dtype: "float32" | "float16" | "bfloat16";
  refs: { fp32: string; native?: string };
  prompt: string;
  prompt_ids: number[];
  chat_ids: number[];
  greedy: { generated_ids: number[]; min_margin: number };
  tokenizer: { text: string; ids: number[]; decoded: string }[];
}

const NAMES = ["llama-float32", "llama-bfloat16", "qwen2-float32", "qwen2-float16", "qwen3-float32", "qwen3-bfloat16", "mistral-float32", "mistral-float16"];
let root = "";
let made: Record<string, Made> = {};
const get = (name: string): Made => {
  const m = made[name];
  if (!m) throw new Error(`gpt_reference.py made no ${name}`);
  return m;
};

/** A private copy of a made model dir, to corrupt. */
async function copyOf(name: string, label: string): Promise<string> {
  const out = join(root, `${name}-${label}`);
  await cp(get(name).dir, out, { recursive: true });
  return out;
}

async function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): Promise<void> {
  const c = JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  edit(c);
  await writeFile(join(dir, "config.json"), JSON.stringify(c));
}

/** Rewrites a tensor's rows in place: row r becomes source row perm(r) (a converter that mixed up heads). */
async function permuteRows(dir: string, tensor: string, perm: (row: number) => number): Promise<void> {
  const ref = (await readTensorIndex(dir)).tensors.get(tensor);
  if (!ref) throw new Error(`no tensor ${tensor}`);
  const path = join(dir, ref.file);
  const bytes = await readFile(path);
  const rows = ref.shape[0] ?? 0;
  const rowBytes = ref.length / rows;
  const original = Buffer.from(bytes.subarray(ref.offset, ref.offset + ref.length));
  for (let r = 0; r < rows; r++) original.copy(bytes, ref.offset + r * rowBytes, perm(r) * rowBytes, (perm(r) + 1) * rowBytes);
  await writeFile(path, bytes);
}

/** Swaps head a and head b (d rows each). */
const swapHeads = (a: number, b: number, d: number) => (r: number) => {
  const h = Math.floor(r / d);
  return h === a ? r + (b - a) * d : h === b ? r - (b - a) * d : r;
};

if (!HAS_REF) process.stderr.write("note: verify-gpt tests skip (no reference venv with transformers)\n");

describe.skipIf(!HAS_REF)("decoder-only models vs transformers", () => {
  beforeAll(() => {
    return (async () => {
      root = await mkdtemp(join(tmpdir(), "megahub-gpt-"));
      const out = execFileSync(REF_PYTHON, ["scripts/gpt_reference.py", "make", root], {
        encoding: "utf8",
        maxBuffer: 64 << 20,
        timeout: 600_000,
        stdio: ["ignore", "pipe", "ignore"],
      });
      // The summary is the last line; progress output from transformers may come before it.
      made = JSON.parse(out.trim().split("\n").at(-1) ?? "{}") as Record<string, Made>;
      expect(Object.keys(made).sort()).toEqual([...NAMES].sort());
    })();
  }, 600_000);
  afterAll(async () => {
    if (root !== "") await rm(root, { recursive: true, force: true });
  });

  describe.each(NAMES)("%s", (name) => {
    it("matches transformers' fp32 logits on a padded batch: max |Δ| ≤ 1e-4, top-1 100 %", async () => {
      const m = get(name);
      // bf16 dirs are sharded by the generator: the graph then points into several files.
      if (m.dtype === "bfloat16") expect((await readTensorIndex(m.dir)).files.length).toBeGreaterThan(1);
      const r = await verifyModel(m.dir, { reference: m.refs.fp32, device: "cpu", record: false });
      expect(r.failures).toEqual([]);
      expect(r.tolerance.comparison).toBe("exact");
      expect(r.metrics.maxAbs).toBeLessThanOrEqual(1e-4);
      expect(r.metrics.top1Agreement).toBe(1);
      // 3 rows × 12, minus 4 right-padded and 3 left-padded positions.
      expect(r.metrics.positions).toBe(29);
      expect(r.dtype).toBe({ float32: "F32", float16: "F16", bfloat16: "BF16" }[m.dtype]);
    });

    // fp32 models have no lossy native run: the case is not generated for them rather than skipped.
    const lossy = name.endsWith("float32") ? [] : [name];
    it.each(lossy)("passes the dtype's lossy gates against transformers' native-precision logits (%s)", async () => {
      const m = get(name);
      const r = await verifyModel(m.dir, { reference: m.refs.native as string, device: "cpu", record: false });
      expect(r.tolerance.comparison).toBe("lossy");
      expect(r.failures).toEqual([]);
      // The native reference really is lossy: an exact gate would be meaningless if it equalled fp32.
      expect(r.metrics.maxAbs).toBeGreaterThan(1e-4);
    });

    it("greedy generation gives transformers' generate(do_sample=False) ids", async () => {
      const m = get(name);
      // A near-tie would make equality luck, not evidence.
      expect(m.greedy.min_margin).toBeGreaterThan(1e-3);
      const r = await generate(m.dir, { inputIds: m.prompt_ids, maxNewTokens: m.greedy.generated_ids.length, device: "cpu" });
      expect(r.generatedIds).toEqual(m.greedy.generated_ids);
    });
  });

  it("tokenizes and decodes tokenizer.json as Python tokenizers does", async () => {
    const m = get("llama-float32");
    const tok = await loadHfTokenizer(m.dir);
    for (const t of m.tokenizer) {
      expect(tok.encode(t.text), JSON.stringify(t.text)).toEqual(t.ids);
      expect(tok.decode(t.ids)).toBe(t.decoded);
    }
  });

  it("generate --prompt: the chat template gives apply_chat_template's ids, --raw gives tokenizer(prompt)'s", async () => {
    const m = get("qwen3-float32");
    const chat = await generate(m.dir, { prompt: m.prompt, maxNewTokens: 2, device: "cpu" });
    expect(chat.templateSource).toBe("chat_template.jinja");
    expect(chat.inputIds).toEqual(m.chat_ids);
    const raw = await generate(m.dir, { prompt: m.prompt, raw: true, maxNewTokens: m.greedy.generated_ids.length, device: "cpu" });
    expect(raw.inputIds).toEqual(m.prompt_ids);
    expect(raw.generatedIds).toEqual(m.greedy.generated_ids);
    expect(raw.text).toBe((await loadHfTokenizer(m.dir)).decode(m.greedy.generated_ids));
  });

  it("CLI: verify --reference passes and generate prints the ids", async () => {
    const m = get("mistral-float16");
    const v = await runCli(["verify", m.dir, "--reference", m.refs.fp32, "--device", "cpu", "--no-record", "--json"]);
    expect(v.code).toBe(0);
    expect((JSON.parse(v.stdout) as { ok: boolean }).ok).toBe(true);
    const g = await runCli(["generate", m.dir, "--prompt", m.prompt, "--raw", "--max-new-tokens", "4", "--device", "cpu", "--json"]);
    expect(g.code).toBe(0);
    expect((JSON.parse(g.stdout) as { generatedIds: number[] }).generatedIds).toEqual(m.greedy.generated_ids.slice(0, 4));
  });

  it("verify --against: a bf16 copy against its fp32 original passes bf16's lossy gates, the original against itself exactly", async () => {
    const self = await verifyModel(get("llama-float32").dir, { against: get("llama-float32").dir, device: "cpu", record: false });
    expect(self.failures).toEqual([]);
    expect(self.metrics.maxAbs).toBe(0);
    const r = await verifyModel(get("llama-bfloat16").dir, { against: get("llama-float32").dir, device: "cpu", record: false });
    expect(r.tolerance).toMatchObject({ dtype: "BF16", comparison: "lossy" });
    expect(r.failures).toEqual([]);
    expect(r.notes.join(" ")).toContain("where attention_mask is 1");
  });

  it("export-onnx writes a model.onnx that onnxruntime runs on its own, with transformers' logits", async () => {
    for (const name of ["qwen2-float16", "qwen3-bfloat16"]) {
      const m = get(name);
      const out = join(root, `${name}-onnx`);
      const r = await exportOnnx(m.dir, out);
      expect(r.files).toEqual(["model.onnx", "model.onnx.data"]);
      const runner = await openSession(join(out, "model.onnx"), "cpu");
      try {
        const ref = await readReference(m.refs.fp32, true);
        const logits = (await runner.run(forwardFeeds(ref))).logits;
        if (!logits) throw new Error("no logits");
        expect(logits.dims).toEqual([ref.batch, ref.encoderLength, ref.vocab]);
        const metrics = compareLogits(logits.data, ref.logits, ref.batch, ref.encoderLength, ref.vocab, (b, t) => ref.attentionMask[b * ref.encoderLength + t] !== 0n);
        expect(metrics.maxAbs).toBeLessThanOrEqual(1e-4);
      } finally {
        await runner.release();
      }
      // The data file holds the weights in their stored dtype: the size of the shards' tensor bytes (+ alignment).
      const index = await readTensorIndex(m.dir);
      const bytes = [...index.tensors.values()].reduce((a, t) => a + t.length, 0);
      expect(r.dataBytes).toBeGreaterThanOrEqual(bytes);
      expect(r.dataBytes).toBeLessThan(bytes + 64 * r.tensors);
    }
  });

  // Each corruption is one a converter or a graph could make; each must fail against transformers' fp32 logits.
  const corruptions: [string, string, (dir: string) => Promise<void>][] = [
    ["GQA: kv heads 0 and 1 swapped in k_proj", "llama-float32", (d) => permuteRows(d, "model.layers.0.self_attn.k_proj.weight", swapHeads(0, 1, 16))],
    ["Qwen2: q bias of heads 0 and 1 swapped", "qwen2-float32", (d) => permuteRows(d, "model.layers.1.self_attn.q_proj.bias", swapHeads(0, 1, 16))],
    ["Qwen3: q_norm weight reversed", "qwen3-float32", (d) => permuteRows(d, "model.layers.0.self_attn.q_norm.weight", (r) => 23 - r)],
    ["Mistral: sliding window dropped from config", "mistral-float32", (d) => editConfig(d, (c) => (c.sliding_window = null))],
    [
      "Llama: llama3 rope scaling dropped from config",
      "llama-float32",
      (d) => editConfig(d, (c) => (c.rope_parameters = { rope_type: "default", rope_theta: 500000.0 })),
    ],
    ["Qwen3: rms_norm_eps changed", "qwen3-float32", (d) => editConfig(d, (c) => (c.rms_norm_eps = 0.5))],
  ];
  it.each(corruptions)("fails when %s", async (_what, name, corrupt) => {
    const dir = await copyOf(name, `bad-${Math.random().toString(36).slice(2, 8)}`);
    await corrupt(dir);
    const r = await verifyModel(dir, { reference: get(name).refs.fp32, device: "cpu", record: false });
    expect(r.passed).toBe(false);
    expect(r.failures.join(" ")).toContain("max |Δ|");
  });

  it("refuses a reference whose kind does not fit the model, naming the file", async () => {
    const m = get("llama-float32");
    await expect(verifyModel(m.dir, { reference: "fixtures/reference/fp32-tp1.safetensors", device: "cpu", record: false })).rejects.toThrow(
      /fp32-tp1\.safetensors: the model is decoder-only/,
    );
  });
});
