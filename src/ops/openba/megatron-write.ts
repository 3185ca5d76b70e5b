import { MegahubError } from "../../errors.js";
import { iterationDirName, rankDirName } from "../../formats/megatron/discover.js";
import { argNumber } from "../../formats/megatron/read.js";
import { newTensor, torchFileForPlan, type PlannedTorchTensor } from "../../formats/torch/save.js";
import { sanitizeValue, unknownGlobalsNote } from "../../formats/torch/sanitize.js";
import { PyCall, PyDict, PyFloat, PyGlobal, PyTuple, type PyValue } from "../../formats/torch/values.js";
import { bytesSource } from "../../io/byte-source.js";
import { OPENBA_GLOBAL_PARAMS, OPENBA_LAYER_PARAMS } from "../../models/openba/spec.js";
import type { OpenbaDims } from "../../models/openba/dims.js";
import { DEFAULT_DIVISIBLE_BY, vocabPlan } from "../../models/vocab-padding.js";
import type { Stack, TpKind } from "../../models/openba/types.js";
import type { Plan, PlannedFile } from "../../plan/plan.js";
import { castBytes } from "../../tensors/cast.js";
import { readTensor, select, type Recipe } from "../../plan/recipe.js";
import { megatronKey, paramOf, TP_KIND, type GlobalModel } from "./global-model.js";

export interface MegatronWriteOptions {
  tp: number;
  iteration: number | "release";
  /** make_vocab_size_divisible_by (default: args, else 128). */
  divisibleBy?: number;
  /** Tokens with meaning; needed when the padded vocabulary must change. */
  trueVocab?: number;
  /** args to carry forward (updated to the real dims); synthesised when absent. */
  args?: PyCall;
  /** Extra top-level entries to keep (e.g. opt_param_scheduler); optimizer and RNG state are TP-specific and never kept. */
  keep?: ReadonlyMap<string, PyValue>;
  /** Extra args fields to set (e.g. seq lengths for a synthesised Namespace). */
  argsOverrides?: Record<string, PyValue>;
  /** Carry pickle globals that are not on megahub's allow-list into the new files (off: they are dropped). */
  keepUnknownGlobals?: boolean;
}

export interface MegatronWritePlan {
  plan: Plan;
  paddedVocab: number;
  /** What changed in the vocabulary padding, in words. */
  vocabChange: string;
  /** Unvetted globals found in the carried args and state: dropped, or kept under keepUnknownGlobals. */
  unknownGlobals: string[];
}

/**
 * Plans a Megatron checkpoint for a global model: `iter_NNNNNNN/mp_rank_TT/model_optim_rng.pt` per rank, split evenly
 * by each parameter's TP kind, vocab padded by Megatron's rule for the new TP, args that describe the real dims,
 * and the tracker file.
 */
export function planMegatronFiles(model: GlobalModel, options: MegatronWriteOptions): MegatronWritePlan {
  const { tp } = options;
  const d = model.dims;
  if (!Number.isInteger(tp) || tp < 1) throw new MegahubError("USAGE", `--tp must be a positive integer, got ${tp}`);
  const problems: string[] = [];
  if (d.heads % tp !== 0) problems.push(`${d.heads} attention heads`);
  if (d.ffn % tp !== 0) problems.push(`FFN width ${d.ffn}`);
  if (problems.length > 0) {
    throw new MegahubError("USAGE", `TP ${tp} does not divide the ${problems.join(" or the ")}; choose a TP that divides both`);
  }
  const divisibleBy = options.divisibleBy ?? argNumber(options.args ?? model.args, "make_vocab_size_divisible_by") ?? DEFAULT_DIVISIBLE_BY;
  const vocab = vocabPlan(d.vocab, divisibleBy, tp, options.trueVocab ?? model.trueVocab);
  const tensors = new Map(model.tensors);
  for (const key of ["language_model.embedding.word_embeddings.weight", "lm_head.bias"]) {
    const r = tensors.get(key);
    if (r) tensors.set(key, vocab.resize(r));
  }
  if (![...tensors.keys()].some((k) => k.endsWith("rotary_embed.inv_freq"))) addInvFreq(tensors, d);
  const dir = iterationDirName(options.iteration);
  // Carried values come from a pickle megahub did not write: strip what torch.load would import and call.
  const keepUnknown = options.keepUnknownGlobals === true;
  const sourceArgs = sanitizeValue(options.args ?? model.args ?? null, { keepUnknown });
  const keptState = sanitizeValue(new PyDict([...(options.keep ?? new Map<string, PyValue>())]), { keepUnknown });
  const unknownGlobals = [...new Set([...sourceArgs.dropped, ...keptState.dropped])];
  const carriedArgs = sourceArgs.value instanceof PyCall ? sourceArgs.value : undefined;
  const args = rewriteArgs(carriedArgs, d, tp, vocab.padded, divisibleBy, options.argsOverrides);
  const files: PlannedFile[] = [];
  for (let r = 0; r < tp; r++) {
    const planned: PlannedTorchTensor[] = [];
    const tensorFor = (key: string): PyValue => {
      const recipe = shardOf(tensors.get(key) as Recipe, TP_KIND.get(paramOf(key)) ?? "replicated", r, tp);
      const tensor = newTensor(recipe.dtype, recipe.shape, String(planned.length));
      planned.push({ name: `${rankDirName(r)}:${key}`, tensor, recipe });
      return tensor;
    };
    const model_ = modelTree(tensors, d, tensorFor);
    const root = new PyDict([
      ["args", args],
      ["checkpoint_version", new PyFloat(3.0)],
      ["iteration", options.iteration === "release" ? 0 : options.iteration],
      ["model", model_],
      ...keptState.value.entries,
    ]);
    const path = `${dir}/${rankDirName(r)}/model_optim_rng.pt`;
    files.push(torchFileForPlan(path, root, planned, { renumber: true, keepUnknownGlobals: keepUnknown }));
  }
  files.push({ kind: "text", path: "latest_checkpointed_iteration.txt", content: String(options.iteration) });
  const notes = [vocab.note, "optimizer and RNG state are TP-specific: not written (load with --finetune or --no-load-optim --no-load-rng)"];
  if (unknownGlobals.length > 0) notes.push(unknownGlobalsNote(unknownGlobals, keepUnknown));
  return { plan: { files, notes }, paddedVocab: vocab.padded, vocabChange: vocab.note, unknownGlobals };
}

const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

function shardOf(r: Recipe, tp: TpKind, rank: number, size: number): Recipe {
  if (tp === "replicated" || size === 1) return r;
  const dim = tp === "row" ? 1 : 0;
  const n = r.shape[dim] as number;
  if (n % size !== 0) throw new MegahubError("USAGE", `dim ${dim} of size ${n} does not split into ${size} equal parts`);
  const step = n / size;
  return select(r, dim, range(rank * step, (rank + 1) * step));
}

/** Megatron's module layout: module state dicts are OrderedDicts, the containers around them plain dicts. */
function modelTree(tensors: ReadonlyMap<string, Recipe>, d: OpenbaDims, tensorFor: (key: string) => PyValue): PyDict {
  const stackDict = (stack: Stack) => {
    const out = new PyDict([], true);
    const n = stack === "encoder" ? d.encoderLayers : d.decoderLayers;
    for (let i = 0; i < n; i++) {
      for (const p of OPENBA_LAYER_PARAMS) {
        const key = megatronKey(stack, i, p.megatron);
        if ((p.stacks as readonly Stack[]).includes(stack) && tensors.has(key)) out.set(`layers.${i}.${p.megatron}`, tensorFor(key));
      }
    }
    for (const part of ["weight", "bias"]) out.set(`final_layernorm.${part}`, tensorFor(`language_model.${stack}.final_layernorm.${part}`));
    return out;
  };
  const [emb, , , , , bias] = OPENBA_GLOBAL_PARAMS;
  return new PyDict([
    [
      "language_model",
      new PyDict([
        ["embedding", new PyDict([["word_embeddings", new PyDict([["weight", tensorFor(emb.megatron)]], true)]])],
        ["encoder", stackDict("encoder")],
        ["decoder", stackDict("decoder")],
      ]),
    ],
    ["lm_head", new PyDict([["bias", tensorFor(bias.megatron)]], true)],
  ]);
}

/** inv_freq = 10000^(−2j/d), computed in fp32 and stored in the model's dtype, as Megatron's rotary module does. */
function addInvFreq(tensors: Map<string, Recipe>, d: OpenbaDims): void {
  const dtype = tensors.get("language_model.embedding.word_embeddings.weight")?.dtype ?? "F16";
  const f32 = new Float32Array(d.kvChannels / 2).map((_, j) => Math.fround(1 / 10000 ** Math.fround((2 * j) / d.kvChannels)));
  const bytes = castBytes(new Uint8Array(f32.buffer), "F32", dtype, { overflows: 0 });
  const recipe = readTensor(bytesSource(bytes, "rotary inv_freq"), 0, dtype, [d.kvChannels / 2], "computed rotary inv_freq");
  for (const stack of ["encoder", "decoder"] as const) {
    const n = stack === "encoder" ? d.encoderLayers : d.decoderLayers;
    for (let i = 0; i < n; i++) tensors.set(megatronKey(stack, i, "self_attention.rotary_embed.inv_freq"), recipe);
  }
}

/** args that say the truth: the source's Namespace with TP, padded vocab and every dim field updated. */
function rewriteArgs(
  source: PyCall | undefined,
  d: OpenbaDims,
  tp: number,
  padded: number,
  divisibleBy: number,
  overrides: Record<string, PyValue> = {},
): PyCall {
  const args = new PyCall(source?.callable ?? new PyGlobal("argparse", "Namespace"), source?.args ?? new PyTuple([]), source?.kind ?? "newobj");
  const state = new PyDict(source?.state instanceof PyDict ? [...source.state.entries] : []);
  const set: Record<string, PyValue> = {
    num_layers: d.encoderLayers,
    encoder_num_layers: d.encoderLayers,
    decoder_num_layers: d.decoderLayers,
    hidden_size: d.hidden,
    ffn_hidden_size: d.ffn,
    num_attention_heads: d.heads,
    kv_channels: d.kvChannels,
    padded_vocab_size: padded,
    make_vocab_size_divisible_by: divisibleBy,
    tensor_model_parallel_size: tp,
    pipeline_model_parallel_size: 1,
    ...overrides,
  };
  for (const [k, v] of Object.entries(set)) state.set(k, v);
  args.state = state;
  return args;
}
