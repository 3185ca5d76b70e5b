import { DEFAULT_DIVISIBLE_BY, vocabPlan } from "../../models/vocab-padding.js";
import { MegahubError } from "../../errors.js";
import { iterationDirName, rankDirName } from "../../formats/megatron/discover.js";
import { argNumber } from "../../formats/megatron/read.js";
import { newTensor, torchFileForPlan, type PlannedTorchTensor } from "../../formats/torch/save.js";
import { PyCall, PyDict, PyFloat, PyGlobal, PyTuple, type PyValue } from "../../formats/torch/values.js";
import { expand, LAYER, nameAt, type ExpandedParam, type ParamRule } from "../../models/arch.js";
import type { McoreModel } from "../../models/mcore-global.js";
import { GPT_EXTRA_STATE } from "../../models/gpt/spec.js";
import { splitTp } from "../../models/parallel.js";
import type { Plan, PlannedFile } from "../../plan/plan.js";
import type { Recipe } from "../../plan/recipe.js";
import { DTYPES } from "../../tensors/dtypes.js";

export interface McoreWriteOptions {
  readonly tp: number;
  readonly pp: number;
  /** Virtual pipeline chunks per stage (model0 … model{vpp-1}); 1 writes a plain `model`. */
  readonly vpp: number;
  readonly iteration: number | "release";
  readonly divisibleBy?: number | undefined;
  readonly trueVocab?: number | undefined;
  /** Fields to set on the args Namespace (the source's, or a new one). */
  readonly argsSet: Record<string, PyValue>;
  /** Top-level entries to carry (opt_param_scheduler …); optimizer and RNG state never follow a re-split. */
  readonly keep?: ReadonlyMap<string, PyValue>;
}

export interface McoreWritePlan {
  readonly plan: Plan;
  readonly paddedVocab: number;
  readonly vocabChange: string;
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
  if (problems.length > 0) throw new MegahubError("USAGE", `TP ${o.tp} × PP ${o.pp}${o.vpp > 1 ? ` × VPP ${o.vpp}` : ""} does not fit: ${problems.join("; ")}`);
  const divisibleBy = o.divisibleBy ?? argNumber(m.args, "make_vocab_size_divisible_by") ?? DEFAULT_DIVISIBLE_BY;
  const vocab = vocabPlan(d.vocab, divisibleBy, o.tp, o.trueVocab ?? m.trueVocab);
  const params = expand(rules, { ...d, vocab: vocab.padded }, m.features, m.flavour);
  const recipeOf = (p: ExpandedParam): Recipe => {
    const r = m.tensors.get(p.name);
    if (!r) throw new MegahubError("MODEL", "missing from the model", { tensor: p.name });
    return p.rule.tp === "vocab" ? vocab.resize(r) : r;
  };
  const perChunk = d.layers / (o.pp * o.vpp);
  const args = withArgs(m.args, {
    ...o.argsSet,
    padded_vocab_size: vocab.padded,
    make_vocab_size_divisible_by: divisibleBy,
    tensor_model_parallel_size: o.tp,
    pipeline_model_parallel_size: o.pp,
    virtual_pipeline_model_parallel_size: o.vpp > 1 ? o.vpp : null,
    num_layers_per_virtual_pipeline_stage: o.vpp > 1 ? perChunk : null,
    ...(o.trueVocab ?? m.trueVocab ? { vocab_size: (o.trueVocab ?? m.trueVocab) as number } : {}),
  });
  const dir = iterationDirName(o.iteration);
  const extraModules = m.extraState ?? defaultExtraState(m.flavour);
  const files: PlannedFile[] = [];
  const embedding = params.find((p) => p.name === "embedding.word_embeddings.weight") as ExpandedParam;
  for (let pp = 0; pp < o.pp; pp++) {
    for (let tp = 0; tp < o.tp; tp++) {
      const planned: PlannedTorchTensor[] = [];
      const tensorFor = (p: ExpandedParam, written: string): PyValue => {
        const recipe = splitTp(p.rule.tp, recipeOf(p), tp, o.tp, p.name);
        const tensor = newTensor(recipe.dtype, recipe.shape, String(planned.length));
        planned.push({ name: `${rankDirName(tp, o.pp > 1 ? pp : undefined)}:${written}`, tensor, recipe });
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
          const written = local === undefined ? p.written : p.written.replace(/^decoder\.layers\.\d+\./, `decoder.layers.${local}.`);
          state.set(written, tensorFor(p, written));
        }
        // Megatron keeps the tied head's weight on the last stage of a PP > 1 run, filled from the embedding.
        if (last && !m.features.untied && o.pp > 1) state.set("output_layer.weight", tensorFor(embedding, "output_layer.weight"));
        for (const mod of extraModules) {
          if (!mod.includes(LAYER)) {
            if (mod.startsWith("embedding.") ? first : last) extra(mod);
            continue;
          }
          for (let i = 0; i < perChunk; i++) extra(nameAt(mod, i));
        }
        chunks.push([o.vpp > 1 ? `model${v}` : "model", state]);
      }
      const root = new PyDict([
        ["args", args],
        ["checkpoint_version", new PyFloat(3.0)],
        ["iteration", o.iteration === "release" ? 0 : o.iteration],
        ...chunks,
        ...[...(o.keep ?? new Map<string, PyValue>())].map(([k, v]) => [k, v] as [PyValue, PyValue]),
      ]);
      const path = `${dir}/${rankDirName(tp, o.pp > 1 ? pp : undefined)}/model_optim_rng.pt`;
      files.push(torchFileForPlan(path, root, planned, { renumber: true }));
    }
  }
  files.push({ kind: "text", path: "latest_checkpointed_iteration.txt", content: String(o.iteration) });
  const notes = [vocab.note, "optimizer and RNG state are specific to one parallel layout: not written (load with --finetune or --no-load-optim --no-load-rng)"];
  return { plan: { files, notes }, paddedVocab: vocab.padded, vocabChange: vocab.note };
}

/** The `_extra_state` modules Megatron-Core's GPT layers register, for a model that did not come from Megatron. */
export function defaultExtraState(flavour: McoreModel["flavour"]): Set<string> {
  const layer = [...GPT_EXTRA_STATE.layer, ...(flavour === "te" ? GPT_EXTRA_STATE.teLayer : [])].map((mod) => `decoder.layers.${LAYER}.${mod}`);
  return new Set([...layer, ...GPT_EXTRA_STATE.global]);
}

/** Every reason a layout does not fit the model (Megatron-Core divides these evenly). */
export function checkLayout(m: McoreModel, o: McoreWriteOptions): string[] {
  const d = m.dims;
  const p: string[] = [];
  for (const [name, v] of [["--tp", o.tp], ["--pp", o.pp], ["--vpp", o.vpp]] as const) {
    if (!Number.isInteger(v) || v < 1) p.push(`${name} must be a positive integer, got ${v}`);
  }
  if (p.length > 0) return p;
  if (d.heads % o.tp !== 0) p.push(`TP ${o.tp} does not divide the ${d.heads} attention heads`);
  if (d.kvHeads % o.tp !== 0 && o.tp % d.kvHeads !== 0) p.push(`TP ${o.tp} and the ${d.kvHeads} query groups do not divide one another`);
  if (d.ffn % o.tp !== 0) p.push(`TP ${o.tp} does not divide the FFN width ${d.ffn}`);
  if (d.layers % (o.pp * o.vpp) !== 0) p.push(`PP ${o.pp} × VPP ${o.vpp} does not divide the ${d.layers} layers`);
  if (o.vpp > 1 && o.pp === 1) p.push("virtual pipeline chunks need PP > 1");
  return p;
}

/** The source's Namespace (or a new one) with fields set; dtype fields get torch dtype globals as Megatron stores them. */
export function withArgs(source: PyCall | undefined, set: Record<string, PyValue>): PyCall {
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
