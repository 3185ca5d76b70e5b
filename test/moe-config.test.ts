/**
 * Reading MixtralConfig / Qwen2MoeConfig / Qwen3MoeConfig config.json files into graph dims. The referee is
 * transformers 5.18 itself: each config below is instantiated by its own class (AutoModelForCausalLM.from_config),
 * and what that model does — which layers hold a SparseMoeBlock, its router's top-k and renormalisation, expert and
 * shared widths, biases, the sliding window each layer's mask uses, the RMSNorm eps, the RoPE inv_freq — must be
 * what megahub read, class defaults included. Bad configs fail as one MODEL error naming the problem.
 */
import { describe, expect, it } from "vitest";
import { isMegahubError } from "../src/errors.js";
import { expectedGptTensors, gptConfigDims, gptDims, ropeInvFreq, type WeightRef } from "../src/models/gpt/config-dims.js";
import { buildGptGraph } from "../src/models/gpt/onnx-graph.js";
import { HAS_REF, runRefPython } from "./helpers/refpy.js";

type Config = Record<string, unknown>;
const BASE = { vocab_size: 32, hidden_size: 16, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2 };

/** Configs whose unset fields exercise each class's defaults, and set ones each reading rule. */
const CONFIGS: [string, Config][] = [
  ["Mixtral, all defaults (eps 1e-5, theta 1e6, top-2, no window)", { ...BASE, model_type: "mixtral", num_local_experts: 4, intermediate_size: 8 }],
  ["Mixtral, sliding window and top-3", { ...BASE, model_type: "mixtral", num_local_experts: 4, intermediate_size: 8, num_experts_per_tok: 3, sliding_window: 3, rope_theta: 500 }],
  [
    "Qwen2-MoE, defaults (top-4, no renormalisation, qkv bias, every layer sparse)",
    { ...BASE, model_type: "qwen2_moe", num_experts: 4, moe_intermediate_size: 8, shared_expert_intermediate_size: 12, intermediate_size: 24 },
  ],
  [
    "Qwen2-MoE, decoder_sparse_step 2 + mlp_only_layers, sliding on even layers below max_window_layers",
    {
      ...BASE,
      model_type: "qwen2_moe",
      num_experts: 4,
      num_experts_per_tok: 2,
      moe_intermediate_size: 8,
      shared_expert_intermediate_size: 12,
      intermediate_size: 24,
      decoder_sparse_step: 2,
      mlp_only_layers: [1],
      norm_topk_prob: true,
      qkv_bias: false,
      use_sliding_window: true,
      sliding_window: 3,
      max_window_layers: 3,
    },
  ],
  [
    "Qwen2-MoE, saved layer_types",
    {
      ...BASE,
      model_type: "qwen2_moe",
      num_experts: 4,
      num_experts_per_tok: 2,
      moe_intermediate_size: 8,
      shared_expert_intermediate_size: 12,
      intermediate_size: 24,
      use_sliding_window: true,
      sliding_window: 4,
      layer_types: ["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
    },
  ],
  ["Qwen3-MoE, defaults (no renormalisation, no bias, no window)", { ...BASE, model_type: "qwen3_moe", num_experts: 8, moe_intermediate_size: 8, intermediate_size: 24, head_dim: 6 }],
  // the spelling transformers 5.18's save_pretrained writes (attribute_map num_experts → num_local_experts)
  ["Qwen3-MoE, num_local_experts", { ...BASE, model_type: "qwen3_moe", num_local_experts: 8, num_experts_per_tok: 2, moe_intermediate_size: 8, intermediate_size: 24 }],
  ["Mixtral, num_experts", { ...BASE, model_type: "mixtral", num_experts: 3, intermediate_size: 8 }],
  [
    "Qwen3-MoE, attention_bias, window on every layer, dense layers 0 and 2, linear rope",
    {
      ...BASE,
      model_type: "qwen3_moe",
      num_experts: 8,
      num_experts_per_tok: 2,
      moe_intermediate_size: 8,
      intermediate_size: 24,
      attention_bias: true,
      use_sliding_window: true,
      sliding_window: 5,
      mlp_only_layers: [0, 2],
      norm_topk_prob: true,
      rms_norm_eps: 1e-3,
      rope_parameters: { rope_type: "linear", factor: 2, rope_theta: 1000 },
    },
  ],
];

/** What the instantiated transformers model does, per config. */
const PROBE = `
import sys, json, torch
from transformers import AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
out = []
for c in json.loads(sys.argv[1]):
    c = dict(c); mt = c.pop("model_type")
    cfg = CONFIG_MAPPING[mt](**c)
    m = AutoModelForCausalLM.from_config(cfg).model
    sparse = [type(l.mlp).__name__.endswith("SparseMoeBlock") for l in m.layers]
    first = m.layers[sparse.index(True)].mlp
    dense = [l.mlp for l, s in zip(m.layers, sparse) if not s]
    def window(i, l):
        # Qwen2-MoE picks the mask per layer type; Mixtral and Qwen3-MoE take config.sliding_window for every layer
        if mt == "qwen2_moe":
            return cfg.sliding_window if cfg.layer_types[i] == "sliding_attention" else None
        return cfg.sliding_window
    out.append({
        "sparse": sparse, "experts": first.gate.weight.shape[0], "topk": first.gate.top_k,
        "renormalize": bool(getattr(first.gate, "norm_topk_prob", True)),
        "expertFfn": first.experts.down_proj.shape[-1],
        "sharedFfn": first.shared_expert.down_proj.in_features if hasattr(first, "shared_expert") else 0,
        "ffn": dense[0].down_proj.in_features if dense else None,
        "qkvBias": m.layers[0].self_attn.q_proj.bias is not None, "oBias": m.layers[0].self_attn.o_proj.bias is not None,
        "qkNorm": hasattr(m.layers[0].self_attn, "q_norm"), "headDim": m.layers[0].self_attn.head_dim,
        "windows": [window(i, l) for i, l in enumerate(m.layers)],
        "rmsEps": m.norm.variance_epsilon, "invFreq": m.rotary_emb.inv_freq.tolist(),
    })
print(json.dumps(out))
`;

describe.skipIf(!HAS_REF)("MoE config.json read as transformers' own classes read it", () => {
  it("every config: sparse layers, routing, widths, biases, windows, eps and RoPE", () => {
    const truth = JSON.parse(runRefPython(PROBE, [JSON.stringify(CONFIGS.map(([, c]) => c))]).trim().split("\n").pop() as string) as Record<string, unknown>[];
    CONFIGS.forEach(([what, config], i) => {
      const t = truth[i] as Record<string, unknown>;
      const d = gptConfigDims(config, "probe");
      const moe = d.moe;
      if (!moe) throw new Error(`${what}: no MoE dims`);
      expect({ sparse: moe.sparse, experts: moe.experts, topk: moe.topk, renormalize: moe.renormalize, expertFfn: moe.expertFfn, sharedFfn: moe.sharedFfn }, what).toEqual({
        sparse: t.sparse,
        experts: t.experts,
        topk: t.topk,
        renormalize: t.renormalize,
        expertFfn: t.expertFfn,
        sharedFfn: t.sharedFfn,
      });
      if (t.ffn !== null) expect(d.ffn, what).toBe(t.ffn);
      expect({ qkvBias: d.qkvBias, oBias: d.oBias, qkNorm: d.qkNorm, headDim: d.headDim }, what).toEqual({ qkvBias: t.qkvBias, oBias: t.oBias, qkNorm: t.qkNorm, headDim: t.headDim });
      expect(d.slidingWindow, what).toEqual(t.windows);
      expect(d.rmsEps, what).toBeCloseTo(t.rmsEps as number, 12);
      const inv = ropeInvFreq(d);
      (t.invFreq as number[]).forEach((f, j) => expect(Math.abs((inv[j] as number) - f) / f, `${what} inv_freq[${j}]`).toBeLessThan(1e-6));
      // The graph builds with one external initializer per expected tensor (ORT runs these in verify-moe.test.ts).
      const tensors = new Map<string, WeightRef>([...expectedGptTensors(d)].map(([name, shape]) => [name, { name, dtype: "BF16", shape }]));
      const model = buildGptGraph(gptDims(config, tensors, "probe"), tensors, { locate: () => ({ location: "w", offset: 0, length: 0 }) });
      expect(model.graph.initializers.filter((x) => x.external).length, what).toBe(tensors.size);
    });
  }, 120_000);
});

const QWEN2: Config = CONFIGS.find(([what]) => what.startsWith("Qwen2-MoE, decoder_sparse_step"))?.[1] as Config;
const MIXTRAL: Config = CONFIGS[0]?.[1] as Config;

describe("MoE config and tensor problems", () => {
  const bad: [string, Config, ((t: Map<string, WeightRef>) => void) | undefined, RegExp][] = [
    ["decoder_sparse_step 0 (transformers: ZeroDivisionError)", { ...QWEN2, decoder_sparse_step: 0 }, undefined, /decoder_sparse_step 0 must be a positive integer/],
    ["top-k above the expert count", { ...QWEN2, num_experts_per_tok: 5 }, undefined, /num_experts_per_tok 5 must be between 1 and the 4 experts/],
    ["no moe_intermediate_size", { ...QWEN2, moe_intermediate_size: undefined }, undefined, /lacks moe_intermediate_size/],
    ["Qwen2-MoE without shared_expert_intermediate_size", { ...QWEN2, shared_expert_intermediate_size: undefined }, undefined, /lacks shared_expert_intermediate_size/],
    ["Mixtral without num_local_experts", { ...MIXTRAL, num_local_experts: undefined }, undefined, /lacks num_local_experts/],
    ["Qwen3-MoE's two expert spellings disagreeing", { ...QWEN2, model_type: "qwen3_moe", num_local_experts: 8 }, undefined, /num_local_experts 8 and num_experts 4 disagree/],
    [
      "a sliding layer without use_sliding_window (the class would give it window 0)",
      { ...QWEN2, use_sliding_window: false, layer_types: ["sliding_attention", "full_attention", "full_attention", "full_attention"] },
      undefined,
      /layer 0 is sliding_attention but use_sliding_window/,
    ],
    ["an expert missing", QWEN2, (t) => t.delete("model.layers.3.mlp.experts.2.down_proj.weight"), /model\.layers\.3\.mlp\.experts\.2\.down_proj\.weight missing/],
    ["a router where config.json says dense", QWEN2, (t) => t.set("model.layers.1.mlp.gate.weight", { name: "g", dtype: "F32", shape: [4, 16] }), /unexpected tensor model\.layers\.1\.mlp\.gate\.weight/],
    ["expert width off", QWEN2, (t) => t.set("model.layers.3.mlp.experts.0.up_proj.weight", { name: "u", dtype: "F32", shape: [9, 16] }), /experts\.0\.up_proj\.weight is \[9, 16\], expected \[8, 16\]/],
  ];
  it.each(bad)("refuses: %s", (_what, config, damage, message) => {
    let err: unknown;
    try {
      const probe = damage ? gptConfigDims(config, "probe") : undefined;
      const t = new Map<string, WeightRef>(probe ? [...expectedGptTensors(probe)].map(([name, shape]) => [name, { name, dtype: "F32", shape }]) : []);
      damage?.(t);
      gptDims(config, t, "some/dir");
    } catch (e) {
      err = e;
    }
    expect(isMegahubError(err)).toBe(true);
    expect((err as Error).message).toMatch(/^some\/dir: /);
    expect((err as Error).message).toMatch(message);
  });

  it("a Qwen-MoE config with no sparse layer (num_experts 0) reads as its dense MLPs", () => {
    const d = gptConfigDims({ ...QWEN2, num_experts: 0 }, "probe");
    expect(d.moe).toBeUndefined();
    expect(expectedGptTensors(d).has("model.layers.3.mlp.down_proj.weight")).toBe(true);
  });
});
