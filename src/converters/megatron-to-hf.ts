import { MegahubError } from "../errors.js";
import { argNumber, type MegatronCheckpoint, type MegatronShard } from "../formats/megatron/read.js";
import { DEFAULT_MAX_SHARD_BYTES, planSafetensorsShards } from "../formats/safetensors/write.js";
import { OPENBA, OPENBA_GLOBAL_PARAMS, OPENBA_LAYER_PARAMS } from "../models/openba.js";
import { countParams, detectDims, layerIndices, type OpenbaDims, type ParamCounts } from "../models/openba-dims.js";
import type { Stack, TpKind } from "../models/spec.js";
import type { Plan, PlannedFile, PlannedTensor } from "../plan/plan.js";
import { cast, concat, type Recipe } from "../plan/recipe.js";
import { canCast } from "../tensors/cast.js";
import type { Dtype } from "../tensors/dtypes.js";
import { hfConfig, generationConfig } from "./openba-config.js";
import { planTokenizerFiles, type TokenizerFacts } from "./openba-tokenizer.js";

export type DtypeOption = "keep" | "fp16" | "bf16" | "fp32";
export const DTYPE_OPTIONS: Record<DtypeOption, Dtype | undefined> = { keep: undefined, fp16: "F16", bf16: "BF16", fp32: "F32" };

export interface ConvertOptions {
  dtype?: DtypeOption;
  maxShardBytes?: number;
  tokenizer?: string;
  chatTemplate?: string;
}

export interface ConvertPlan {
  plan: Plan;
  dims: OpenbaDims;
  params: ParamCounts;
  dtypes: Dtype[];
  tokenizer?: TokenizerFacts;
}

const LAYER_KEY = /^language_model\.(encoder|decoder)\.layers\.(\d+)\.(.+)$/;

/** Builds the Megatron → HF plan from headers: merged TP shards, fused fc_in, untied head, config and tokenizer. */
export async function planMegatronToHf(ckpt: MegatronCheckpoint, options: ConvertOptions = {}): Promise<ConvertPlan> {
  const shards = ckpt.shards;
  const first = shards[0] as MegatronShard;
  checkKnownKeys(first);
  for (const s of shards.slice(1)) {
    const missing = [...first.tensors.keys()].filter((k) => !s.tensors.has(k));
    if (missing.length > 0) {
      throw new MegahubError("MODEL", `rank ${s.tp} lacks ${missing.length} tensors rank 0 has, e.g. ${missing.slice(0, 3).join(", ")}`, {
        file: s.file,
      });
    }
  }
  const names = [...first.tensors.keys()];
  const layers = {
    encoder: layerIndices(names, /^language_model\.encoder\.layers\.(\d+)\./).length,
    decoder: layerIndices(names, /^language_model\.decoder\.layers\.(\d+)\./).length,
  };
  const key = (stack: Stack | null, layer: number, p: string) =>
    stack === null ? p : `${OPENBA.layerPrefix(stack, layer).megatron}${p}`;
  const tpOf = new Map<string, TpKind>([
    ...OPENBA_LAYER_PARAMS.map((p) => [p.megatron, p.tp] as const),
    ...OPENBA_GLOBAL_PARAMS.map((p) => [p.megatron, p.tp] as const),
  ]);
  const shapeOf = (stack: Stack | null, layer: number, p: string) => globalShape(shards, key(stack, layer, p), tpOf.get(p) ?? "replicated");
  const dims = detectDims(shapeOf, layers, argNumber(ckpt.args, "kv_channels"), first.file);
  checkWholeHeads(shards, dims, layers);

  const target = DTYPE_OPTIONS[options.dtype ?? "keep"];
  const merged = (k: string, tp: TpKind): Recipe => {
    const parts = (tp === "replicated" ? [first] : shards).map((s) => ckpt.recipe(s, k));
    const r = tp === "replicated" ? (parts[0] as Recipe) : concat(tp === "row" ? 1 : 0, parts);
    if (target && !canCast(r.dtype, target)) {
      throw new MegahubError("USAGE", `cannot cast ${r.dtype} to ${target}`, { tensor: k });
    }
    return target ? cast(r, target) : r;
  };
  const tensors: PlannedTensor[] = [];
  for (const p of OPENBA_GLOBAL_PARAMS) {
    const r = merged(p.megatron, p.tp);
    for (const hf of p.hf) tensors.push({ name: hf, recipe: r });
  }
  for (const stack of ["encoder", "decoder"] as const) {
    for (let i = 0; i < layers[stack]; i++) {
      const fused = new Map<string, Recipe[]>();
      for (const p of OPENBA_LAYER_PARAMS) {
        if (p.hf === null || !(p.stacks as readonly Stack[]).includes(stack)) continue;
        const r = merged(key(stack, i, p.megatron), p.tp);
        const name = `${OPENBA.layerPrefix(stack, i).hf}${p.hf}`;
        if ("fuse" in p) {
          const parts = fused.get(name) ?? [];
          parts[p.fuse.index] = r;
          fused.set(name, parts);
          if (parts.filter(Boolean).length === p.fuse.of) tensors.push({ name, recipe: concat(0, parts) });
        } else {
          tensors.push({ name, recipe: r });
        }
      }
    }
  }
  const files: PlannedFile[] = planSafetensorsShards(tensors, options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
  const dtypes = [...new Set(tensors.map((t) => t.recipe.dtype))];
  const notes: string[] = [];
  let tokenizer: TokenizerFacts | undefined;
  if (options.tokenizer) {
    const tok = await planTokenizerFiles(options.tokenizer, dims.vocab, options.chatTemplate);
    files.push(...tok.files);
    tokenizer = tok.facts;
    notes.push(`tokenizer: ${tok.facts.spSize} pieces + 103 OpenBA tokens = ${tok.facts.trueVocab}; rows ${tok.facts.trueVocab}..${dims.vocab - 1} are padding`);
  } else {
    notes.push("no --tokenizer given: tokenizer files are not written");
  }
  const mainDtype = tensors.find((t) => t.name === "shared_embedding.weight")?.recipe.dtype ?? "F16";
  files.push(
    { kind: "text", path: "config.json", content: json(hfConfig(dims, ckpt.args, mainDtype)) },
    { kind: "text", path: "generation_config.json", content: json(generationConfig()) },
  );
  if (ckpt.dangerousGlobals.length > 0) {
    notes.push(`the checkpoint's pickles name code-running globals (${ckpt.dangerousGlobals.join(", ")}); they were read as inert data`);
  }
  return { plan: { files, notes }, dims, params: countParams(dims, false), dtypes, ...(tokenizer ? { tokenizer } : {}) };
}

const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;

/** The global shape of a parameter from its per-rank shapes (uneven shards are summed as they are). */
function globalShape(shards: readonly MegatronShard[], key: string, tp: TpKind): number[] | undefined {
  const shapes = shards.map((s) => s.tensors.get(key)?.shape);
  const s0 = shapes[0];
  if (!s0) return undefined;
  if (tp === "replicated") {
    const bad = shapes.findIndex((s) => !s || s.join() !== s0.join());
    if (bad > 0) {
      throw new MegahubError("MODEL", `replicated tensor differs in shape on rank ${bad}`, { file: shards[bad]?.file, tensor: key });
    }
    return [...s0];
  }
  const dim = tp === "row" ? 1 : 0;
  const out = [...s0];
  for (const [i, s] of shapes.entries()) {
    if (!s || s.length !== s0.length || s.some((v, k) => k !== dim && v !== s0[k])) {
      throw new MegahubError("MODEL", `rank ${i} shard [${s?.join(", ")}] does not line up with rank 0 [${s0.join(", ")}] outside dim ${dim}`, {
        file: shards[i]?.file,
        tensor: key,
      });
    }
    if (i > 0) out[dim] = (out[dim] as number) + (s[dim] as number);
  }
  return out;
}

/** Every rank must hold whole heads: a fused QKV shard that splits a head means the layout is not OpenBA's. */
function checkWholeHeads(shards: readonly MegatronShard[], dims: OpenbaDims, layers: { encoder: number; decoder: number }) {
  for (const s of shards) {
    for (const stack of ["encoder", "decoder"] as const) {
      for (let i = 0; i < layers[stack]; i++) {
        const k = `language_model.${stack}.layers.${i}.self_attention.query_key_value.weight`;
        const rows = s.tensors.get(k)?.shape[0] ?? 0;
        if (rows % (3 * dims.kvChannels) !== 0) {
          throw new MegahubError("MODEL", `shard has ${rows} QKV rows: not whole heads of 3 × ${dims.kvChannels}`, { file: s.file, tensor: k });
        }
      }
    }
  }
}

function checkKnownKeys(shard: MegatronShard): void {
  const layerParams = new Set<string>(OPENBA_LAYER_PARAMS.map((p) => p.megatron));
  const globals = new Set<string>(OPENBA_GLOBAL_PARAMS.map((p) => p.megatron));
  const unknown: string[] = [];
  for (const k of shard.tensors.keys()) {
    const m = LAYER_KEY.exec(k);
    if (m ? !layerParams.has(m[3] as string) : !globals.has(k)) unknown.push(k);
  }
  if (unknown.length > 0) {
    const hint = unknown.some((k) => k.includes("position_embeddings"))
      ? " (learned position embeddings: OpenBA uses rotary)"
      : unknown.some((k) => k.includes("dense_h_to_4h"))
        ? " (a GELU MLP: OpenBA uses SwiGLU w1/w2/w3)"
        : "";
    throw new MegahubError(
      "MODEL",
      `${unknown.length} tensors are not part of OpenBA${hint}: ${unknown.slice(0, 4).join(", ")}${unknown.length > 4 ? ", …" : ""}`,
      { file: shard.file },
    );
  }
}
