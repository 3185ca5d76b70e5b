/**
 * The global model of a Megatron-Core `torch_dist` checkpoint: its tensors are already global (no TP merge, no PP
 * renumbering: the stacked axis carries global layer numbers; the expert axis global expert numbers, whatever the EP),
 * so this only resolves spellings — torch_dist uses Transformer Engine's norm names for both specs
 * (megatron-core-format.md §2.1) — and derives dims, features and MoE facts the way the legacy reader does
 * (mcore-global.ts's globalDims over the one parameter table, MCORE_PARAMS).
 */
import { MegahubError } from "../errors.js";
import type { MegatronDistCheckpoint } from "../checkpoints/megatron-dist.js";
import { argNumber } from "../formats/megatron/read.js";
import type { Recipe } from "../plan/recipe.js";
import { LAYER, type ExpertLayout, type ParamRule, type SpecFlavour } from "./arch.js";
import { GPT_EXTRA_STATE, GPT_IGNORED } from "./gpt/spec.js";
import { globalDims, resolveKey, spellings, type McoreModel } from "./mcore-global.js";
import { routingFromArgs } from "./moe/hf-config.js";
import { MCORE_PARAMS } from "./moe/spec.js";

/** Builds the global model; every unknown name is listed at once. */
export function distMcoreModel(ckpt: MegatronDistCheckpoint, rules: readonly ParamRule[] = MCORE_PARAMS): McoreModel {
  const table = spellings(rules);
  const tensors = new Map<string, Recipe>();
  const unknown = new Set<string>();
  const notes: string[] = [];
  const where = ckpt.name;
  let te = false;
  const untieArg = ckpt.args?.field("untie_embeddings_and_output_weights");
  const layers = new Set<number>();
  for (const [key, recipe] of ckpt.tensors) {
    if (GPT_IGNORED.some((re) => re.test(key))) continue;
    const hit = resolveKey(key, table, (l) => l);
    if (!hit) {
      unknown.add(ckpt.storedKeyOf.get(key) ?? key);
      continue;
    }
    te ||= hit.te;
    const layer = /^decoder\.layers\.(\d+)\./.exec(key)?.[1];
    if (layer !== undefined) layers.add(Number(layer));
    if (hit.name === "output_layer.weight" && untieArg === false) {
      // Megatron replaces a tied head by the embedding in torch_dist; a producer that kept a copy gets the same note as legacy.
      notes.push("tied embeddings: output_layer.weight is the embedding's copy, not a separate weight");
      continue;
    }
    if (tensors.has(hit.name)) throw new MegahubError("MODEL", `${hit.name} is stored under two spellings`, { file: where, tensor: key });
    tensors.set(hit.name, recipe);
  }
  if (unknown.size > 0) {
    const list = [...unknown];
    const hint = list.some((k) => k.includes(".mlp.experts.") || k.includes(".mlp.router.")) ? " (mixture-of-experts parts not mapped: expert biases, singleton_local_shards' per-expert keys)" : "";
    throw new MegahubError("MODEL", `${list.length} tensor keys are not part of Megatron-Core GPT${hint}: ${list.slice(0, 6).join(", ")}${list.length > 6 ? ", …" : ""}`, { file: where });
  }
  const count = layers.size;
  const sorted = [...layers].sort((a, b) => a - b);
  sorted.forEach((v, i) => {
    if (v !== i) throw new MegahubError("MODEL", `layer numbers are not 0..${count - 1}: found ${sorted.slice(0, 8).join(", ")}`, { file: where });
  });
  checkExpertCounts(ckpt, tensors);
  const args = ckpt.args;
  const { dims, features } = globalDims(rules, tensors, count, args, where);
  // torch_dist spells norms the TE way whatever the spec; args say which modules the run had.
  const impl = args?.field("transformer_impl");
  const flavour: SpecFlavour = impl === "local" ? "local" : impl === "transformer_engine" ? "te" : te ? "te" : "local";
  // The source's _extra_state modules, as layer patterns, so a strict load of what megahub writes finds the same set.
  const extraState = new Set([...ckpt.skipped.extraStateModules].map((k) => k.replace(/^decoder\.layers\.(\d+\.)?/, `decoder.layers.${LAYER}.`)));
  // GPTModel.sharded_state_dict pops output_layer's (empty) extra state before a torch_dist save, but the module has it:
  // a legacy state dict, which megahub may write from this model, holds it.
  if (extraState.size > 0) for (const mod of GPT_EXTRA_STATE.global) extraState.add(mod);
  // SequentialMLP and TEGroupedMLP save the same keys (experts.py): only args say which one the run had.
  const layout: ExpertLayout = args?.field("moe_grouped_gemm") === true ? "grouped" : "sequential";
  const moe = dims.moe ? { moe: { layout, routing: routingFromArgs(args) } } : {};
  return { arch: "gpt", dims, features, flavour, tensors, args, trueVocab: argNumber(args, "vocab_size"), ...moe, notes, ...(extraState.size > 0 ? { extraState } : {}) };
}

/**
 * args.num_experts, when args say, is every stored expert axis's length (after the layer axis of a stacked key) and
 * every router's row count: a checkpoint saved with another expert count, or one whose expert axis lost experts,
 * is named before the shape checks list every expert as missing or unexpected.
 */
function checkExpertCounts(ckpt: MegatronDistCheckpoint, tensors: ReadonlyMap<string, Recipe>): void {
  const experts = argNumber(ckpt.args, "num_experts");
  if (experts === undefined) return;
  for (const [key, t] of ckpt.stored) {
    if (!key.includes(".mlp.experts.experts.")) continue;
    const axis = /^decoder\.layers\.\d+\./.test(key) ? 0 : 1;
    const n = t.shape[axis];
    if (n !== experts) throw new MegahubError("MODEL", `the expert axis (dim ${axis}) holds ${n} experts, args.num_experts is ${experts}`, { file: ckpt.name, tensor: key });
  }
  for (const [name, r] of tensors) {
    if (name.endsWith(".mlp.router.weight") && r.shape[0] !== experts) {
      throw new MegahubError("MODEL", `the router has ${r.shape[0]} rows, args.num_experts is ${experts}`, { file: ckpt.name, tensor: ckpt.storedKeyOf.get(name) ?? name });
    }
  }
}
