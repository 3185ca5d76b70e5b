import { openHfDir, type TensorRef } from "../../checkpoints/hf-safetensors.js";
import { MegahubError } from "../../errors.js";
import { OPENBA } from "./spec.js";
import type { OpenbaDims } from "./dims.js";
import type { Dtype } from "../../tensors/dtypes.js";

export type { TensorRef };

/** OpenBA dims, read from tensor shapes and cross-checked with config.json. */
export interface OpenBADims extends OpenbaDims {
  /** P = heads · kv_channels; may differ from hidden (15B: 5120 vs 4096). */
  projection: number;
}

export interface OpenBAModelDir {
  readonly dir: string;
  readonly config: Readonly<Record<string, unknown>>;
  readonly dims: OpenBADims;
  readonly tensors: ReadonlyMap<string, TensorRef>;
  /** Dtype of the weight matrices (what tolerances are chosen by). */
  readonly weightDtype: Dtype;
  /** Special ids from config.json (defaults are OpenBA's 0/1/0). */
  readonly padId: number;
  readonly eosId: number;
  readonly decoderStartId: number;
  /** Shard files in name order. */
  readonly files: readonly string[];
}

/**
 * Opens an HF OpenBA model dir: reads config.json and every safetensors header (no tensor bytes), takes the dims
 * from tensor shapes, and fails with every disagreement listed at once when config.json or a shape does not fit.
 */
export async function readModelDir(dir: string): Promise<OpenBAModelDir> {
  const { config, tensors, files } = await openHfDir(dir);
  const dims = deriveDims(tensors, config, dir);
  checkShapes(tensors, dims, dir);
  const qkv = tensors.get("encoder.block.0.self_attn.qkv.weight") ?? tensors.get("shared_embedding.weight");
  return {
    dir,
    config,
    dims,
    tensors,
    weightDtype: qkv?.dtype ?? "F32",
    padId: intField(config, "pad_token_id") ?? 0,
    eosId: intField(config, "eos_token_id") ?? 1,
    decoderStartId: intField(config, "decoder_start_token_id") ?? 0,
    files,
  };
}

function intField(config: Readonly<Record<string, unknown>>, key: string): number | undefined {
  const v = config[key];
  return typeof v === "number" && Number.isSafeInteger(v) ? v : undefined;
}

function countLayers(tensors: ReadonlyMap<string, TensorRef>, stack: "encoder" | "decoder"): number {
  let n = 0;
  while (tensors.has(`${stack}.block.${n}.self_attn.qkv.weight`)) n++;
  return n;
}

function need(tensors: ReadonlyMap<string, TensorRef>, name: string, dir: string): TensorRef {
  const t = tensors.get(name);
  if (!t) throw new MegahubError("MODEL", "missing tensor", { file: dir, tensor: name });
  return t;
}

function deriveDims(tensors: ReadonlyMap<string, TensorRef>, config: Readonly<Record<string, unknown>>, dir: string) {
  const emb = need(tensors, "shared_embedding.weight", dir);
  const qkv = need(tensors, "encoder.block.0.self_attn.qkv.weight", dir);
  const fcIn = need(tensors, "encoder.block.0.mlp.fc_in.weight", dir);
  const [vocab = 0, hidden = 0] = emb.shape;
  const projection = (qkv.shape[0] ?? 0) / 3;
  const ffn = (fcIn.shape[0] ?? 0) / 2;
  // Heads cannot be read from shapes (P = n·d has many factorisations): config.json must say.
  const heads = intField(config, "num_heads") ?? intField(config, "num_attention_heads");
  const kv = intField(config, "kv_channels") ?? (heads !== undefined ? projection / heads : undefined);
  const problems: string[] = [];
  if (heads === undefined || kv === undefined) {
    problems.push("config.json lacks num_heads / kv_channels, which shapes cannot determine");
  } else if (heads * kv !== projection) {
    problems.push(`num_heads ${heads} × kv_channels ${kv} = ${heads * kv}, but qkv has 3×${projection} rows`);
  } else if (kv % 2 !== 0) {
    problems.push(`kv_channels ${kv} is odd; rotate-half rotary needs an even head size`);
  }
  const dims: OpenBADims = {
    vocab,
    hidden,
    heads: heads ?? 0,
    kvChannels: kv ?? 0,
    projection,
    ffn,
    encoderLayers: countLayers(tensors, "encoder"),
    decoderLayers: countLayers(tensors, "decoder"),
  };
  const expect = (key: string, actual: number, accept: (v: number) => boolean = (v) => v === actual) => {
    const v = intField(config, key);
    if (v !== undefined && !accept(v)) problems.push(`config.json ${key} = ${v}, but the tensors say ${actual}`);
  };
  expect("vocab_size", vocab);
  expect("hidden_size", hidden);
  // v1 configs carry the nominal 4h and let modeling apply F = 256·ceil(int(2·ffn/3)/256) (openba-format §9.1).
  expect("ffn_hidden_size", ffn, (v) => v === ffn || 256 * Math.ceil(Math.trunc((2 * v) / 3) / 256) === ffn);
  expect("num_layers", dims.encoderLayers);
  expect("num_decoder_layers", dims.decoderLayers);
  if (dims.decoderLayers === 0) problems.push("no decoder.block.0 tensors");
  if (problems.length > 0) {
    throw new MegahubError("MODEL", `model does not agree with itself: ${problems.join("; ")}`, { file: dir });
  }
  return dims;
}

/**
 * Every tensor the graph reads, with its shape, expanded from the architecture spec (src/models/openba/spec.ts) so the
 * names live in one table. Biases other than LayerNorm's are optional: `add_qkv_bias` / `add_ffn_bias` decide them.
 */
export function expectedTensors(d: OpenBADims): Map<string, { shape: number[]; optional: boolean }> {
  const m = new Map<string, { shape: number[]; optional: boolean }>();
  const optional = (name: string) => name.endsWith(".bias") && !name.includes("layernorm");
  const size = (dim: string, groups: number, parts: number): number =>
    dim === "hidden" ? d.hidden : dim === "heads" ? d.projection * groups : dim === "ffn" ? d.ffn * parts : d.vocab;
  for (const stack of ["encoder", "decoder"] as const) {
    const layers = stack === "encoder" ? d.encoderLayers : d.decoderLayers;
    for (let i = 0; i < layers; i++) {
      for (const p of OPENBA.layerParams) {
        if (p.hf === null || !p.stacks.includes(stack)) continue;
        const name = `${OPENBA.layerPrefix(stack, i).hf}${p.hf}`;
        const shape = p.dims.map((dim) => size(dim, p.heads?.groups ?? 1, p.fuse?.of ?? 1));
        m.set(name, { shape, optional: optional(name) });
      }
    }
  }
  for (const p of OPENBA.globalParams) {
    for (const name of p.hf) m.set(name, { shape: p.dims.map((dim) => size(dim, 1, 1)), optional: optional(name) });
  }
  return m;
}

function checkShapes(tensors: ReadonlyMap<string, TensorRef>, dims: OpenBADims, dir: string): void {
  const problems: string[] = [];
  for (const [name, { shape, optional }] of expectedTensors(dims)) {
    const t = tensors.get(name);
    if (!t) {
      if (!optional) problems.push(`${name} missing`);
    } else if (t.shape.join(",") !== shape.join(",")) {
      problems.push(`${name} is [${t.shape.join(", ")}], expected [${shape.join(", ")}]`);
    } else if (!["F32", "F16", "BF16"].includes(t.dtype)) {
      problems.push(`${name} has dtype ${t.dtype}; only F32, F16 and BF16 weights are supported`);
    }
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 8).join("; ") + (problems.length > 8 ? `; … ${problems.length - 8} more` : "");
    throw new MegahubError("MODEL", `tensors do not fit OpenBA: ${shown}`, { file: dir });
  }
}
