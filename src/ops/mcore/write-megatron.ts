import { DEFAULT_DIVISIBLE_BY, vocabPlan } from "../../models/vocab-padding.js";
import { MegahubError } from "../../errors.js";
import { iterationDirName, rankDirName } from "../../formats/megatron/discover.js";
import { argNumber } from "../../formats/megatron/read.js";
import { newTensor, torchFileForPlan, type PlannedTorchTensor } from "../../formats/torch/save.js";
import { sanitizeValue, unknownGlobalsNote } from "../../formats/torch/sanitize.js";
import { PyCall, PyDict, PyFloat, PyGlobal, PyTuple, type PyValue } from "../../formats/torch/values.js";
import { expand, LAYER, nameAt, type ExpandedParam, type ParamRule } from "../../models/arch.js";
import type { McoreModel } from "../../models/mcore-global.js";
import { GPT_EXTRA_STATE } from "../../models/gpt/spec.js";
import { moeLayerExtraState } from "../../models/moe/spec.js";
import { splitTp } from "../../models/parallel.js";
import type { Plan, PlannedFile } from "../../plan/plan.js";
import type { Recipe } from "../../plan/recipe.js";
import { DTYPES } from "../../tensors/dtypes.js";

export interface McoreWriteOptions {
  readonly tp: number;
  readonly pp: number;
  /** Virtual pipeline chunks per stage (model0 … model{vpp-1}); 1 writes a plain `model`. */
  readonly vpp: number;
  /** Expert parallelism (MoE models): EP rank e holds global experts e·E/EP … in mp_rank_TT[_PPP]_EEE. */
  readonly ep?: number | undefined;
  readonly iteration: number | "release";
  readonly divisibleBy?: number | undefined;
  readonly trueVocab?: number | undefined;
  /** Fields to set on the args Namespace (the source's, or a new one). */
  readonly argsSet: Record<string, PyValue>;
  /** Top-level entries to carry (opt_param_scheduler …); optimizer and RNG state never follow a re-split. */
  readonly keep?: ReadonlyMap<string, PyValue>;
  /** Carry unvetted pickle globals of the source's args/state instead of dropping them (--keep-unknown-globals). */
  readonly keepUnknownGlobals?: boolean | undefined;
}

export interface McoreWritePlan {
  readonly plan: Plan;
  readonly paddedVocab: number;
  readonly vocabChange: string;
  /** Unvetted globals found in the carried args and state: dropped, or kept under keepUnknownGlobals. */
  readonly unknownGlobals: string[];
}

/**
 * Plans `iter_NNNNNNN/mp_rank_TT[_PPP]/model_optim_rng.pt` for every (TP, PP) rank of a Megatron-Core model:
 * stage-local layer numbers, `model<v>` chunks in the interleaved order, the embedding on the first stage, the
 * final norm and head on the last (a tied model's last stage gets its copy of the embedding, as Megatron keeps
 * one there), `_extra_state` entries a strict load expects, and args describing the new layout.
 */
export function planMcoreMegatronFiles(m: McoreModel, rules: readonly ParamRule[], o: McoreWriteOptions): McoreWritePlan {
  const d = m.dims;
  const problems = checkLayout(m, o);
  if (problems.length > 0) throw new MegahubError("USAGE", `TP ${o.tp} × PP ${o.pp}${o.vpp > 1 ? ` × VPP ${o.vpp}` : ""}${(o.ep ?? 1) > 1 ? ` × EP ${o.ep}` : ""} does not fit: ${problems.join("; ")}`);
  const divisibleBy = o.divisibleBy ?? argNumber(m.args, "make_vocab_size_divisible_by") ?? DEFAULT_DIVISIBLE_BY;
  const vocab = vocabPlan(d.vocab, divisibleBy, o.tp, o.trueVocab ?? m.trueVocab);
  const params = expand(rules, { ...d, vocab: vocab.padded }, m.features, m.flavour, m.moe?.layout);
  const ep = o.ep ?? 1;
  const perRank = d.moe ? d.moe.experts / ep : 0;
  const recipeOf = (p: ExpandedParam): Recipe => {
    const r = m.tensors.get(p.name);
    if (!r) throw new MegahubError("MODEL", "missing from the model", { tensor: p.name });
    return p.rule.tp === "vocab" ? vocab.resize(r) : r;
  };
  const perChunk = d.layers / (o.pp * o.vpp);
  const keepUnknown = o.keepUnknownGlobals === true;
  const { args, kept, unknownGlobals } = writtenArgs(m, o, vocab.padded, divisibleBy, {});
  const dir = iterationDirName(o.iteration);
  // A dense model read from Megatron writes back the _extra_state modules it carried (TE norms too); others get
  // the modules Megatron-Core's layers register.
  const carried = d.moe ? undefined : m.extraState;
  const layerPrefix = `decoder.layers.${LAYER}.`;
  const denseExtra = carried
    ? [...carried].filter((mod) => mod.startsWith(layerPrefix)).map((mod) => mod.slice(layerPrefix.length))
    : [...GPT_EXTRA_STATE.layer, ...(m.flavour === "te" ? GPT_EXTRA_STATE.teLayer : [])];
  const globalExtra: readonly string[] = carried ? [...carried].filter((mod) => !mod.includes(LAYER)) : GPT_EXTRA_STATE.global;
  const files: PlannedFile[] = [];
  const embedding = params.find((p) => p.name === "embedding.word_embeddings.weight") as ExpandedParam;
  for (let pp = 0; pp < o.pp; pp++) {
    for (let e = 0; e < ep; e++) {
      for (let tp = 0; tp < o.tp; tp++) {
        const rankDir = rankDirName(tp, o.pp > 1 ? pp : undefined, ep > 1 ? e : undefined);
        const planned: PlannedTorchTensor[] = [];
        const tensorFor = (p: ExpandedParam, written: string): PyValue => {
          const recipe = splitTp(p.rule.tp, recipeOf(p), tp, o.tp, p.name);
          const tensor = newTensor(recipe.dtype, recipe.shape, String(planned.length));
          planned.push({ name: `${rankDir}:${written}`, tensor, recipe });
          return tensor;
        };
        const chunks: [string, PyValue][] = [];
        for (let v = 0; v < o.vpp; v++) {
          const first = pp === 0 && v === 0;
          const last = pp === o.pp - 1 && v === o.vpp - 1;
          const start = (v * o.pp + pp) * perChunk;
          const state = new PyDict([], true);
          const extra = (module: string) => state.set(`${module}._extra_state`, null);
          for (const p of params) {
            const local = p.layer === undefined ? undefined : p.layer - start;
            if (local !== undefined && (local < 0 || local >= perChunk)) continue;
            if (local === undefined && (p.name.startsWith("embedding.") ? !first : !last)) continue;
            // an expert lives on one EP rank, under its local index there
            if (p.expert !== undefined && Math.floor(p.expert / perRank) !== e) continue;
            const written = local === undefined ? p.written : nameAt(p.pattern, local, p.expert === undefined ? undefined : p.expert - e * perRank);
            state.set(written, tensorFor(p, written));
          }
          // Megatron keeps the tied head's weight on the last stage of a PP > 1 run, filled from the embedding.
          if (last && !m.features.untied && o.pp > 1) state.set("output_layer.weight", tensorFor(embedding, "output_layer.weight"));
          for (let i = 0; i < perChunk; i++) {
            const mods = d.moe?.layers[start + i]
              ? moeLayerExtraState(m.moe?.layout ?? "sequential", m.flavour, perRank, d.moe.sharedFfn > 0)
              : denseExtra;
            for (const mod of mods) extra(`decoder.layers.${i}.${mod}`);
          }
          if (last) for (const mod of globalExtra) if (!mod.startsWith("embedding.")) extra(mod);
          if (first) for (const mod of globalExtra) if (mod.startsWith("embedding.")) extra(mod);
          chunks.push([o.vpp > 1 ? `model${v}` : "model", state]);
        }
        const root = new PyDict([
          ["args", args],
          ["checkpoint_version", new PyFloat(3.0)],
          ["iteration", o.iteration === "release" ? 0 : o.iteration],
          ...chunks,
          ...kept.entries,
        ]);
        const path = `${dir}/${rankDir}/model_optim_rng.pt`;
        files.push(torchFileForPlan(path, root, planned, { renumber: true, keepUnknownGlobals: keepUnknown }));
      }
    }
  }
  files.push({ kind: "text", path: "latest_checkpointed_iteration.txt", content: String(o.iteration) });
  const notes = [vocab.note, "optimizer and RNG state are specific to one parallel layout: not written (load with --finetune or --no-load-optim --no-load-rng)"];
  if (unknownGlobals.length > 0) notes.push(unknownGlobalsNote(unknownGlobals, keepUnknown));
  return { plan: { files, notes }, paddedVocab: vocab.padded, vocabChange: vocab.note, unknownGlobals };
}

/** The `_extra_state` modules Megatron-Core's GPT layers register, for a model that did not come from Megatron. */
export function defaultExtraState(flavour: McoreModel["flavour"]): Set<string> {
  const layer = [...GPT_EXTRA_STATE.layer, ...(flavour === "te" ? GPT_EXTRA_STATE.teLayer : [])].map((mod) => `decoder.layers.${LAYER}.${mod}`);
  return new Set([...layer, ...GPT_EXTRA_STATE.global]);
}

/**
 * The args and carried top-level state a written checkpoint (rank files or torch_dist common.pt) gets: the source's,
 * sanitized — carried values come from a pickle megahub did not write, so what torch.load would import and call is
 * dropped unless o.keepUnknownGlobals — with the new layout's fields set over them.
 */
export function writtenArgs(m: McoreModel, o: McoreWriteOptions, paddedVocab: number, divisibleBy: number, format: Record<string, PyValue>): { args: PyCall; kept: PyDict; unknownGlobals: string[] } {
  const keepUnknown = o.keepUnknownGlobals === true;
  const sourceArgs = sanitizeValue(m.args ?? null, { keepUnknown });
  const kept = sanitizeValue(new PyDict([...(o.keep ?? new Map<string, PyValue>())]), { keepUnknown });
  const trueVocab = o.trueVocab ?? m.trueVocab;
  const args = withArgs(sourceArgs.value instanceof PyCall ? sourceArgs.value : undefined, {
    ...o.argsSet,
    padded_vocab_size: paddedVocab,
    make_vocab_size_divisible_by: divisibleBy,
    tensor_model_parallel_size: o.tp,
    pipeline_model_parallel_size: o.pp,
    virtual_pipeline_model_parallel_size: o.vpp > 1 ? o.vpp : null,
    num_layers_per_virtual_pipeline_stage: o.vpp > 1 ? m.dims.layers / (o.pp * o.vpp) : null,
    ...(trueVocab ? { vocab_size: trueVocab } : {}),
    ...(m.dims.moe ? { expert_model_parallel_size: o.ep ?? 1, expert_tensor_parallel_size: o.tp } : {}),
    ...format,
  });
  return { args, kept: kept.value as PyDict, unknownGlobals: [...new Set([...sourceArgs.dropped, ...kept.dropped])] };
}

/** Every reason a layout does not fit the model (Megatron-Core divides these evenly). */
export function checkLayout(m: McoreModel, o: McoreWriteOptions): string[] {
  const d = m.dims;
  const p: string[] = [];
  const ep = o.ep ?? 1;
  for (const [name, v] of [["--tp", o.tp], ["--pp", o.pp], ["--vpp", o.vpp], ["--ep", ep]] as const) {
    if (!Number.isInteger(v) || v < 1) p.push(`${name} must be a positive integer, got ${v}`);
  }
  if (p.length > 0) return p;
  if (d.heads % o.tp !== 0) p.push(`TP ${o.tp} does not divide the ${d.heads} attention heads`);
  if (d.kvHeads % o.tp !== 0 && o.tp % d.kvHeads !== 0) p.push(`TP ${o.tp} and the ${d.kvHeads} query groups do not divide one another`);
  if ((!d.moe || d.moe.layers.includes(false)) && d.ffn % o.tp !== 0) p.push(`TP ${o.tp} does not divide the FFN width ${d.ffn}`);
  if (d.layers % (o.pp * o.vpp) !== 0) p.push(`PP ${o.pp} × VPP ${o.vpp} does not divide the ${d.layers} layers`);
  if (o.vpp > 1 && o.pp === 1) p.push("virtual pipeline chunks need PP > 1");
  if (ep > 1 && !d.moe) p.push("expert parallelism needs a mixture-of-experts model");
  if (d.moe && d.moe.experts % ep !== 0) p.push(`EP ${ep} does not divide the ${d.moe.experts} experts`);
  if (d.moe && d.moe.ffn % o.tp !== 0) p.push(`TP ${o.tp} (= expert TP) does not divide the experts' FFN width ${d.moe.ffn}`);
  if (d.moe && d.moe.sharedFfn % o.tp !== 0) p.push(`TP ${o.tp} does not divide the shared experts' FFN width ${d.moe.sharedFfn}`);
  return p;
}

/** The source's Namespace (or a new one) with fields set; dtype fields get torch dtype globals as Megatron stores them. */
function withArgs(source: PyCall | undefined, set: Record<string, PyValue>): PyCall {
  const args = new PyCall(source?.callable ?? new PyGlobal("argparse", "Namespace"), source?.args ?? new PyTuple([]), source?.kind ?? "newobj");
  const state = new PyDict(source?.state instanceof PyDict ? [...source.state.entries] : []);
  for (const [k, v] of Object.entries(set)) state.set(k, v);
  args.state = state;
  return args;
}

/** torch.bfloat16 etc. as the args' params_dtype. */
export function torchDtypeGlobal(dtype: keyof typeof DTYPES): PyGlobal {
  return new PyGlobal("torch", DTYPES[dtype].torch);
}
