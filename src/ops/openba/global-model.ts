import { MegahubError } from "../../errors.js";
import { argNumber, type MegatronCheckpoint, type MegatronShard } from "../../formats/megatron/read.js";
import type { PyCall } from "../../formats/torch/values.js";
import { OPENBA, OPENBA_GLOBAL_PARAMS, OPENBA_LAYER_PARAMS } from "../../models/openba/spec.js";
import { detectDims, layerIndices, type OpenbaDims } from "../../models/openba/dims.js";
import type { Stack, TpKind } from "../../models/openba/types.js";
import { concat, type Recipe } from "../../plan/recipe.js";

/**
 * A whole model as global (TP-merged) tensors under their Megatron names, each a lazy recipe. Every converter goes
 * through this one shape: Megatron or HF in, prune/re-index in the middle, HF or Megatron out — so a multi-step
 * job is one plan over the original inputs, with no intermediate checkpoint on disk.
 */
export interface GlobalModel {
  readonly dims: OpenbaDims;
  /** Megatron-named global tensors (`language_model.encoder.layers.0.mlp.w1.weight`, `lm_head.bias`, …). */
  readonly tensors: ReadonlyMap<string, Recipe>;
  /** The source's args (Megatron) — kept so writers can carry them forward. */
  readonly args?: PyCall;
  /** Tokens with meaning (the rest of the rows are padding), when known. */
  readonly trueVocab?: number;
}

const LAYER_KEY = /^language_model\.(encoder|decoder)\.layers\.(\d+)\.(.+)$/;

export function megatronKey(stack: Stack | null, layer: number, param: string): string {
  return stack === null ? param : `${OPENBA.layerPrefix(stack, layer).megatron}${param}`;
}

export const TP_KIND: ReadonlyMap<string, TpKind> = new Map<string, TpKind>([
  ...OPENBA_LAYER_PARAMS.map((p) => [p.megatron, p.tp] as const),
  ...OPENBA_GLOBAL_PARAMS.map((p) => [p.megatron, p.tp] as const),
]);

/** The parameter part of a Megatron key (`mlp.w1.weight` for a layer key, the key itself for a global one). */
export function paramOf(key: string): string {
  return LAYER_KEY.exec(key)?.[3] ?? key;
}

/** Merges the TP shards of a checkpoint into global recipes (from headers only) and reads the dims off the shapes. */
export function megatronGlobalModel(ckpt: MegatronCheckpoint): GlobalModel {
  const { tp, pp, ep, vpp } = ckpt.parallel;
  if (pp > 1 || vpp > 1 || ep > 1) {
    throw new MegahubError(
      "UNSUPPORTED",
      `pipeline-parallel checkpoint (PP ${pp}, TP ${tp}${vpp > 1 ? `, VPP ${vpp}` : ""}${ep > 1 ? `, EP ${ep}` : ""}): encoder-decoder PP > 1 is not supported yet (OpenBA never used it); re-save with PP 1`,
      { file: ckpt.layout.tree.name },
    );
  }
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
  const shapeOf = (stack: Stack | null, layer: number, p: string) =>
    globalShape(shards, megatronKey(stack, layer, p), TP_KIND.get(p) ?? "replicated");
  const dims = detectDims(shapeOf, layers, argNumber(ckpt.args, "kv_channels"), first.file);
  checkWholeHeads(shards, dims);
  const tensors = new Map<string, Recipe>();
  for (const key of names) {
    const tp = TP_KIND.get(paramOf(key)) ?? "replicated";
    const parts = (tp === "replicated" ? [first] : shards).map((s) => ckpt.recipe(s, key));
    tensors.set(key, tp === "replicated" ? (parts[0] as Recipe) : concat(tp === "row" ? 1 : 0, parts));
  }
  return { dims, tensors, ...(ckpt.args ? { args: ckpt.args } : {}), ...trueVocabFromArgs(ckpt.args) };
}

function trueVocabFromArgs(args: PyCall | undefined): { trueVocab?: number } {
  const v = argNumber(args, "true_vocab_size") ?? argNumber(args, "vocab_size");
  return v === undefined ? {} : { trueVocab: v };
}

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
function checkWholeHeads(shards: readonly MegatronShard[], dims: OpenbaDims): void {
  for (const s of shards) {
    for (const [k, t] of s.tensors) {
      if (!k.endsWith("self_attention.query_key_value.weight")) continue;
      const rows = t.shape[0] ?? 0;
      if (rows % (3 * dims.kvChannels) !== 0) {
        throw new MegahubError("MODEL", `shard has ${rows} QKV rows: not whole heads of 3 × ${dims.kvChannels}`, { file: s.file, tensor: k });
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
