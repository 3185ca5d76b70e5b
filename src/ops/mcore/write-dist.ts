/**
 * A Megatron-Core GPT model as a `torch_dist` checkpoint at TP × PP (`reshard --format torch_dist`,
 * `to-megatron --format torch_dist`): the parameter table gives each tensor's TP split, the layer → stage map
 * gives its writer, names are Transformer Engine's norm spellings for both specs (the local spec's
 * sharded_state_dict_keys_map renames them so, megatron-core-format.md §2.1), and `_extra_state` objects are
 * the ones the source's spec has. No optimizer or RNG state: resume with --no-load-optim --no-load-rng.
 */
import { planMegatronDist, type DistOutTensor, type DistSplit } from "../../checkpoints/megatron-dist-write.js";
import { MegahubError } from "../../errors.js";
import { argNumber } from "../../formats/megatron/read.js";
import { unknownGlobalsNote } from "../../formats/torch/sanitize.js";
import { PyDict, type PyValue } from "../../formats/torch/values.js";
import { expand, LAYER, nameAt, type ExpandedParam, type ParamRule, type TpRule } from "../../models/arch.js";
import { GPT_EXTRA_STATE } from "../../models/gpt/spec.js";
import type { McoreModel } from "../../models/mcore-global.js";
import { moeLayerDistExtraState } from "../../models/moe/spec.js";
import { DEFAULT_DIVISIBLE_BY, vocabPlan } from "../../models/vocab-padding.js";
import { checkLayout, defaultExtraState, planMcoreMegatronFiles, writtenArgs, type McoreWriteOptions, type McoreWritePlan } from "./write-megatron.js";

function splitOf(rule: TpRule): DistSplit | undefined {
  if (rule === "replicated") return undefined;
  if (rule === "row") return { dim: 1, parts: 1 };
  if (rule === "column" || rule === "vocab") return { dim: 0, parts: 1 };
  return { dim: 0, parts: rule.parts };
}

/**
 * The torch_dist key of a parameter: experts lose their number to the expert axis (`mlp.experts.experts.<param>`);
 * the local spec's keys map renames MoE layers' pre-MLP norm like a dense layer's (gpt_layer_specs.py), where
 * Transformer Engine's MoE layers keep a separate `pre_mlp_layernorm`.
 */
function distName(p: ExpandedParam, m: McoreModel): string {
  if (p.expert !== undefined) return p.written.replace(`.mlp.experts.local_experts.${p.expert}.`, ".mlp.experts.experts.");
  const te = p.rule.megatron[1];
  if (m.flavour === "local" && p.rule.teDenseOnly && te !== undefined && p.layer !== undefined && m.dims.moe?.layers[p.layer]) return nameAt(te, p.layer);
  return p.written;
}

/** `_extra_state` modules of a mixture-of-experts model, layer by layer (no output_layer: GPTModel.sharded_state_dict pops it). */
function moeExtraState(m: McoreModel, stageOf: (layer: number) => number): { module: string; stage: number; expert?: number }[] {
  const moe = m.dims.moe;
  if (!moe) return [];
  const out: { module: string; stage: number; expert?: number }[] = [];
  const dense = [...GPT_EXTRA_STATE.layer, ...(m.flavour === "te" ? GPT_EXTRA_STATE.teLayer : [])];
  const sparse = moeLayerDistExtraState(m.flavour, moe.sharedFfn > 0);
  for (let l = 0; l < m.dims.layers; l++) {
    const stage = stageOf(l);
    for (const mod of moe.layers[l] ? sparse.modules : dense) out.push({ module: `decoder.layers.${l}.${mod}`, stage });
    if (moe.layers[l]) for (const mod of sparse.perExpert) for (let e = 0; e < moe.experts; e++) out.push({ module: `decoder.layers.${l}.${mod}`, stage, expert: e });
  }
  return out;
}

/** Plans `iter_NNNNNNN/` in torch_dist form (and the tracker) for the model at o.tp × o.pp (× o.ep for MoE). */
export async function planMcoreDistFiles(m: McoreModel, rules: readonly ParamRule[], o: McoreWriteOptions): Promise<McoreWritePlan> {
  const d = m.dims;
  const problems = checkLayout(m, o);
  if (problems.length > 0) throw new MegahubError("USAGE", `TP ${o.tp} × PP ${o.pp}${o.vpp > 1 ? ` × VPP ${o.vpp}` : ""}${(o.ep ?? 1) > 1 ? ` × EP ${o.ep}` : ""} does not fit: ${problems.join("; ")}`);
  const divisibleBy = o.divisibleBy ?? argNumber(m.args, "make_vocab_size_divisible_by") ?? DEFAULT_DIVISIBLE_BY;
  const vocab = vocabPlan(d.vocab, divisibleBy, o.tp, o.trueVocab ?? m.trueVocab);
  const params = expand(rules, { ...d, vocab: vocab.padded }, m.features, "te");
  const perStage = d.layers / o.pp;
  const stageOf = (p: ExpandedParam) => (p.layer !== undefined ? Math.floor(p.layer / perStage) : p.name.startsWith("embedding.") ? 0 : o.pp - 1);
  const tensors: DistOutTensor[] = params.map((p) => {
    const r = m.tensors.get(p.name);
    if (!r) throw new MegahubError("MODEL", "missing from the model", { tensor: p.name });
    return { name: distName(p, m), recipe: p.rule.tp === "vocab" ? vocab.resize(r) : r, split: splitOf(p.rule.tp), stage: stageOf(p), ...(p.expert === undefined ? {} : { expert: p.expert }) };
  });
  // MoE: Megatron-Core's modules layer by layer (dense and MoE layers differ, so a carried set would not say which).
  // Dense: the source's _extra_state modules (a strict load expects the same set back), or Megatron-Core's for the spec.
  const extraState = moeExtraState(m, (l) => Math.floor(l / perStage));
  const modules = d.moe ? [] : [...(m.extraState ?? defaultExtraState(m.flavour))];
  for (let l = 0; l < d.layers; l++) {
    for (const mod of modules.filter((x) => x.includes(LAYER))) extraState.push({ module: nameAt(mod, l), stage: Math.floor(l / perStage) });
  }
  // Not output_layer's: GPTModel.sharded_state_dict pops it (checkpoints of old GPT models lacked it).
  for (const mod of modules.filter((x) => !x.includes(LAYER) && x !== "output_layer")) extraState.push({ module: mod, stage: mod.startsWith("embedding.") ? 0 : o.pp - 1 });
  const { args, kept, unknownGlobals } = writtenArgs(m, o, vocab.padded, divisibleBy, { ckpt_format: "torch_dist" });
  // What Megatron-Core records about the sharded layout; no optimizer, so no distrib_optim_sharding_type.
  const contentMetadata = new PyDict([
    ["singleton_local_shards", false],
    ["chained_optim_avoid_prefix", true],
  ]);
  const files = await planMegatronDist(tensors, {
    tp: o.tp,
    pp: o.pp,
    ...(d.moe ? { ep: o.ep ?? 1, experts: d.moe.experts } : {}),
    iteration: o.iteration,
    common: { args, iteration: o.iteration === "release" ? 0 : o.iteration, contentMetadata, extra: kept.entries.filter((e): e is [string, PyValue] => typeof e[0] === "string") },
    extraState,
  });
  const notes = [
    vocab.note,
    d.moe
      ? `torch_dist: experts on a global expert axis (${d.moe.layers.every(Boolean) ? "decoder.layers.mlp.experts.experts.<param> [L, E, …]" : "per-layer keys decoder.layers.<i>.mlp.experts.experts.<param> [E, …], the block mixing dense and MoE layers"}), one chunk per (layer, expert, TP rank), written by the EP rank holding the expert`
      : "torch_dist: layers stacked as decoder.layers.<param> [L, …], one chunk per (layer, TP rank), Transformer Engine norm names",
    "optimizer and RNG state are specific to one parallel layout: not written (load with --finetune or --no-load-optim --no-load-rng)",
    ...(o.vpp > 1 ? [`VPP ${o.vpp} is recorded in args only: torch_dist does not depend on the pipeline layout`] : []),
  ];
  if (unknownGlobals.length > 0) notes.push(unknownGlobalsNote(unknownGlobals, o.keepUnknownGlobals === true));
  return { plan: { files, notes }, paddedVocab: vocab.padded, vocabChange: vocab.note, unknownGlobals };
}

export type MegatronOutFormat = "torch" | "torch_dist";

/** The writer of the format asked for: legacy `torch` rank files (the default) or `torch_dist`. */
export async function planMcoreFiles(m: McoreModel, rules: readonly ParamRule[], o: McoreWriteOptions, format: MegatronOutFormat = "torch"): Promise<McoreWritePlan> {
  if (format === "torch_dist") return planMcoreDistFiles(m, rules, o);
  // A torch_dist source's args say ckpt_format torch_dist; the rank files say what they are.
  const ckptFormat: Record<string, PyValue> = m.args?.field("ckpt_format") !== undefined ? { ckpt_format: "torch" } : {};
  return planMcoreMegatronFiles(m, rules, { ...o, argsSet: { ...o.argsSet, ...ckptFormat } });
}
