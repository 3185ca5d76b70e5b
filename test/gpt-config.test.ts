/**
 * Reading Llama / Mistral / Qwen2 / Qwen3 config.json + tensor shapes into graph dims: every field transformers
 * reads, and every way a dir can disagree with itself failing as one MegahubError that lists the problems.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isMegahubError } from "../src/errors.js";
import { encodeHeader } from "../src/formats/safetensors/header.js";
import { expectedGptTensors, gptConfigDims, gptDims, gptFamilyOf, type WeightRef } from "../src/models/gpt/config-dims.js";
import { buildGptGraph } from "../src/models/gpt/onnx-graph.js";
import type { Dtype } from "../src/tensors/dtypes.js";
import { readAnyModelDir } from "../src/verify/gpt-model-dir.js";
import { verifyModel } from "../src/verify/verify-model.js";
import { cleanupHfDirs, fixtureHfDir } from "./verify-helpers.js";

type Config = Record<string, unknown>;

const LLAMA: Config = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
};

/** The tensor map a correct dir of this config has (shapes from the expected table, written out by hand below). */
function tensorsFor(c: Config, dtype: Dtype = "BF16"): Map<string, WeightRef> {
  const d = gptConfigDims(c, "probe");
  return new Map([...expectedGptTensors(d)].map(([name, shape]) => [name, { name, dtype, shape }]));
}

const scratch: string[] = [];
afterAll(async () => {
  await Promise.all(scratch.map((d) => rm(d, { recursive: true, force: true })));
  await cleanupHfDirs();
});

describe("gptFamilyOf", () => {
  it.each([
    [{ model_type: "llama" }, "llama"],
    [{ model_type: "qwen3" }, "qwen3"],
    [{ architectures: ["MistralForCausalLM"] }, "mistral"],
    [{ architectures: ["Qwen2ForCausalLM"] }, "qwen2"],
    [{ model_type: "openba", architectures: ["OpenBAForConditionalGeneration"] }, undefined],
    [{ model_type: "gpt2" }, undefined],
    [{}, undefined],
  ])("%j → %s", (config, family) => {
    expect(gptFamilyOf(config)).toBe(family);
  });
});

describe("gptDims", () => {
  it("reads a Llama with GQA, v4 rope spelling, and the names' shapes", () => {
    const d = gptDims(LLAMA, tensorsFor(LLAMA), "dir");
    expect(d).toMatchObject({ family: "llama", vocab: 32, hidden: 16, layers: 2, heads: 4, kvHeads: 2, headDim: 4, ffn: 24, rmsEps: 1e-5 });
    expect(d.rope).toMatchObject({ type: "default", theta: 10000 });
    expect(d.tied).toBe(false);
    expect(d.slidingWindow).toEqual([null, null]);
    const t = expectedGptTensors(d);
    expect(t.get("model.layers.1.self_attn.k_proj.weight")).toEqual([8, 16]);
    expect(t.get("model.layers.0.self_attn.o_proj.weight")).toEqual([16, 16]);
    expect(t.get("model.layers.0.mlp.down_proj.weight")).toEqual([16, 24]);
    expect(t.has("lm_head.weight")).toBe(true);
  });

  it.each<[string, Config, Record<string, unknown>]>([
    ["Qwen2: qkv bias, tied head", { ...LLAMA, model_type: "qwen2", architectures: ["Qwen2ForCausalLM"], tie_word_embeddings: true }, { qkvBias: true, oBias: false, tied: true }],
    ["Qwen3: qk-norm, head_dim ≠ hidden/heads", { ...LLAMA, model_type: "qwen3", head_dim: 6 }, { qkNorm: true, headDim: 6, qkvBias: false }],
    ["Llama attention_bias + mlp_bias", { ...LLAMA, attention_bias: true, mlp_bias: true }, { qkvBias: true, oBias: true, mlpBias: true }],
    ["Mistral without sliding_window: the class default 4096", { ...LLAMA, model_type: "mistral" }, { slidingWindow: [4096, 4096] }],
    ["Mistral sliding_window null", { ...LLAMA, model_type: "mistral", sliding_window: null }, { slidingWindow: [null, null] }],
    [
      "Qwen2 4.x sliding rule: from max_window_layers on",
      { ...LLAMA, model_type: "qwen2", use_sliding_window: true, sliding_window: 8, max_window_layers: 1 },
      { slidingWindow: [null, 8] },
    ],
    [
      "Qwen3 layer_types, sliding off",
      { ...LLAMA, model_type: "qwen3", layer_types: ["sliding_attention", "full_attention"], sliding_window: null },
      { slidingWindow: [null, null] },
    ],
    [
      "transformers 5 rope_parameters with llama3 scaling",
      { ...LLAMA, rope_theta: undefined, rope_parameters: { rope_type: "llama3", rope_theta: 5e5, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } },
      { rope: { type: "llama3", theta: 5e5, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 16 } },
    ],
    ["4.x rope_scaling linear", { ...LLAMA, rope_scaling: { type: "linear", factor: 2 } }, { rope: { type: "linear", theta: 10000, factor: 2 } }],
  ])("%s", (_what, config, expected) => {
    const d = gptDims(config, tensorsFor(config), "dir");
    expect(d).toMatchObject(expected);
    // The graph builds for every variant (ORT runs them in verify-gpt.test.ts).
    const model = buildGptGraph(d, tensorsFor(config), { locate: () => ({ location: "w", offset: 0, length: 0 }) });
    expect(model.graph.initializers.filter((t) => t.external).length).toBe(tensorsFor(config).size);
  });

  // Each bad dir fails with one MODEL error naming the dir and what is wrong.
  const bad: [string, Config, (t: Map<string, WeightRef>) => void, RegExp][] = [
    ["missing tensor", LLAMA, (t) => t.delete("model.layers.1.mlp.up_proj.weight"), /model\.layers\.1\.mlp\.up_proj\.weight missing/],
    ["wrong shape", LLAMA, (t) => t.set("model.norm.weight", { name: "model.norm.weight", dtype: "F32", shape: [15] }), /model\.norm\.weight is \[15\], expected \[16\]/],
    ["untied, no lm_head", LLAMA, (t) => t.delete("lm_head.weight"), /lm_head\.weight missing/],
    ["bias the config turns off", LLAMA, (t) => t.set("model.layers.0.self_attn.q_proj.bias", { name: "x", dtype: "F32", shape: [16] }), /unexpected tensor model\.layers\.0\.self_attn\.q_proj\.bias/],
    ["integer weights", LLAMA, (t) => t.set("model.norm.weight", { name: "model.norm.weight", dtype: "I32", shape: [16] }), /dtype I32/],
    ["layer count", { ...LLAMA, num_hidden_layers: 3 }, () => undefined, /num_hidden_layers = 3, but the tensors have 2 layers/],
    ["heads not a multiple of kv heads", { ...LLAMA, num_key_value_heads: 3 }, () => undefined, /not a multiple of num_key_value_heads 3/],
    ["odd head_dim", { ...LLAMA, head_dim: 5 }, () => undefined, /head_dim 5 must be a positive even integer/],
    ["gelu", { ...LLAMA, hidden_act: "gelu" }, () => undefined, /hidden_act "gelu"/],
    ["yarn rope", { ...LLAMA, rope_scaling: { rope_type: "yarn", factor: 4 } }, () => undefined, /rope type "yarn" is not supported/],
    ["partial rotary", { ...LLAMA, partial_rotary_factor: 0.5 }, () => undefined, /partial_rotary_factor 0\.5/],
    ["linear rope without factor", { ...LLAMA, rope_scaling: { rope_type: "linear" } }, () => undefined, /needs a factor/],
    ["no heads", { ...LLAMA, num_attention_heads: undefined }, () => undefined, /lacks num_attention_heads/],
    ["no vocab_size", { ...LLAMA, vocab_size: undefined }, () => undefined, /lacks vocab_size/],
  ];
  it.each(bad)("refuses: %s", (_what, config, damage, message) => {
    const t = tensorsFor(LLAMA);
    damage(t);
    let err: unknown;
    try {
      gptDims(config, t, "some/dir");
    } catch (e) {
      err = e;
    }
    expect(isMegahubError(err)).toBe(true);
    expect((err as Error).message).toMatch(/^some\/dir: /);
    expect((err as Error).message).toMatch(message);
  });
});

describe("model dir dispatch", () => {
  it("reads a GPT dir by config.json and refuses a decoder-only reference for OpenBA", async () => {
    const root = await mkdtemp(join(tmpdir(), "megahub-gptcfg-"));
    scratch.push(root);
    const tensors = [...tensorsFor(LLAMA, "F32").values()];
    const entries = tensors.map((t) => ({ ...t, shape: [...t.shape], data: Buffer.alloc(4 * t.shape.reduce((a, b) => a * b, 1)) }));
    const header = encodeHeader(entries);
    await writeFile(join(root, "model.safetensors"), Buffer.concat([header.bytes, ...entries.map((e) => e.data)]));
    await writeFile(join(root, "config.json"), JSON.stringify({ ...LLAMA, eos_token_id: [2, 5] }));
    await writeFile(join(root, "generation_config.json"), JSON.stringify({ eos_token_id: 7 }));
    const opened = await readAnyModelDir(root);
    expect(opened.kind).toBe("gpt");
    if (opened.kind === "gpt") expect(opened.model.eosIds).toEqual([7]);
    await writeFile(join(root, "generation_config.json"), "{}");
    const again = await readAnyModelDir(root);
    if (again.kind === "gpt") expect(again.model.eosIds).toEqual([2, 5]);
    await writeFile(join(root, "config.json"), JSON.stringify({ ...LLAMA, model_type: "gpt2", architectures: ["GPT2LMHeadModel"] }));
    await expect(readAnyModelDir(root)).rejects.toThrow(/config\.json: model_type "gpt2" is not supported/);
    await writeFile(join(root, "config.json"), JSON.stringify(LLAMA));

    // A decoder-only reference (no decoder_input_ids) for the OpenBA fixture.
    const ids = Buffer.alloc(8 * 2 * 3);
    const logits = Buffer.alloc(4 * 2 * 3 * 32);
    const ref = encodeHeader([
      { name: "input_ids", dtype: "I64", shape: [2, 3] },
      { name: "logits", dtype: "F32", shape: [2, 3, 32] },
    ]);
    const refPath = join(root, "causal-ref.safetensors");
    await writeFile(refPath, Buffer.concat([ref.bytes, ids, logits]));
    const openba = await fixtureHfDir("fp32-tp1");
    await expect(verifyModel(openba, { reference: refPath, device: "cpu", record: false })).rejects.toThrow(/causal-ref\.safetensors: the model is encoder-decoder/);
  });
});
