import { MegahubError } from "../../errors.js";
import { DEFAULT_MAX_SHARD_BYTES, planSafetensorsShards } from "../../formats/safetensors/write.js";
import { countModelParams } from "../../models/arch.js";
import { gptHfConfig, HF_ARCHS, hfArchProblems, hyperFromArgs, pickHfArch, type GptHyper, type HfArch } from "../../models/gpt/hf-config.js";
import { gptHfTensors } from "../../models/gpt/hf-tensors.js";
import { activeParams, type MoeRouting } from "../../models/moe/dims.js";
import { isMoeHfArch, MOE_HF_ARCHS, moeHfArchProblems, moeHfConfig, pickMoeHfArch, type MoeHfArch } from "../../models/moe/hf-config.js";
import { MCORE_PARAMS, mixtralName } from "../../models/moe/spec.js";
import type { McoreModel } from "../../models/mcore-global.js";
import type { Plan, PlannedFile } from "../../plan/plan.js";
import type { Dtype } from "../../tensors/dtypes.js";
import { planHfTokenizer, type HfTokenizerFacts } from "../../tokenizers/hf-tokenizer.js";

export interface McoreHfOptions {
  readonly dtype?: Dtype | undefined;
  readonly maxShardBytes?: number | undefined;
  /** An HF tokenizer directory to copy (its size is checked against the embedding). */
  readonly tokenizer?: string | undefined;
  readonly trueVocab?: number | undefined;
  /** Force the transformers class instead of choosing it from the model's features. */
  readonly hfArch?: HfArch | MoeHfArch | undefined;
  /** Hyper-parameters when the model came from HF (args otherwise). */
  readonly hyper?: GptHyper | undefined;
}

export interface McoreHfPlan {
  readonly plan: Plan;
  readonly hfArch: HfArch | MoeHfArch;
  /** MoE models: parameters one token passes through (the top-k experts, not all). */
  readonly activeParameters?: number;
  /** Rows written (the true vocabulary when known). */
  readonly vocab: number;
  readonly parameters: ReturnType<typeof countModelParams>;
  readonly dtypes: Dtype[];
  readonly tokenizer?: HfTokenizerFacts;
}

/** The HF directory of a Megatron-Core GPT model: safetensors shards, config.json, generation_config.json, tokenizer copy. */
export async function planMcoreHfFiles(m: McoreModel, o: McoreHfOptions = {}): Promise<McoreHfPlan> {
  const hyper = o.hyper ?? hyperFromArgs(m.args);
  const routing = m.moe?.routing;
  const arch = o.hfArch ?? (m.dims.moe ? pickMoeHfArch(m.features) : pickHfArch(m.features, hyper));
  const swiglu = m.args?.field("swiglu") !== false;
  const problems = classProblems(arch, m, hyper, swiglu);
  if (problems.length > 0) {
    const name = isMoeHfArch(arch) ? MOE_HF_ARCHS[arch].architecture : HF_ARCHS[arch].architecture;
    throw new MegahubError("UNSUPPORTED", `cannot be written as ${name}: ${problems.join("; ")}${o.hfArch ? "" : " (--hf-arch forces a class)"}`);
  }
  const notes = [...m.notes];
  const files: PlannedFile[] = [];
  let tokenizer: HfTokenizerFacts | undefined;
  if (o.tokenizer) {
    const t = await planHfTokenizer(o.tokenizer, m.dims.vocab);
    tokenizer = t.facts;
    files.push(...t.files);
  }
  const vocab = o.trueVocab ?? m.trueVocab ?? tokenizer?.size;
  if (vocab !== undefined && (vocab > m.dims.vocab || vocab < 1)) {
    throw new MegahubError("USAGE", `the true vocabulary ${vocab} does not fit the ${m.dims.vocab} embedding rows`);
  }
  if (tokenizer && vocab !== undefined && tokenizer.size > vocab) {
    throw new MegahubError("USAGE", `the tokenizer has ${tokenizer.size} ids, more than the model's ${vocab}-token vocabulary`);
  }
  const rows = vocab ?? m.dims.vocab;
  notes.push(
    vocab === undefined
      ? `the true vocabulary is unknown (no args.vocab_size, --true-vocab-size or --tokenizer): all ${rows} embedding rows are written, padding included`
      : rows === m.dims.vocab
        ? `vocabulary: ${rows} rows, no padding`
        : `vocabulary: ${rows} tokens; the ${m.dims.vocab - rows} padding rows Megatron added are dropped`,
  );
  if (!tokenizer) notes.push("no --tokenizer given: tokenizer files are not written");
  const naming = isMoeHfArch(arch) ? { rules: MCORE_PARAMS, hfName: arch === "mixtral" ? mixtralName : (n: string) => n } : undefined;
  const tensors = gptHfTensors(m.tensors, m.dims, m.features, rows, o.dtype, naming);
  files.unshift(...planSafetensorsShards(tensors, o.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES));
  const dtype = tensors[0]?.recipe.dtype ?? "F32";
  const ids = { bos: tokenizer?.bos, eos: tokenizer?.eos, pad: tokenizer?.pad };
  const config = isMoeHfArch(arch) ? moeHfConfig(arch, m.dims, m.features, hyper, routing as MoeRouting, rows, dtype, ids) : gptHfConfig(arch, m.dims, m.features, hyper, rows, dtype, ids);
  const generation = { _from_model_config: true, ...(ids.bos === undefined ? {} : { bos_token_id: ids.bos }), ...(ids.eos === undefined ? {} : { eos_token_id: ids.eos }) };
  files.push({ kind: "text", path: "config.json", content: json(config) }, { kind: "text", path: "generation_config.json", content: json(generation) });
  const parameters = countModelParams(MCORE_PARAMS, { ...m.dims, vocab: rows }, m.features);
  const active = m.dims.moe ? { activeParameters: activeParams(parameters.total, m.dims.moe, m.dims.hidden, routing?.topk) } : {};
  return { plan: { files, notes }, hfArch: arch, vocab: rows, parameters, ...active, dtypes: [...new Set(tensors.map((t) => t.recipe.dtype))], ...(tokenizer ? { tokenizer } : {}) };
}

/** Why the model cannot be written as this class: a dense class for an MoE model (or back) is refused outright. */
function classProblems(arch: HfArch | MoeHfArch, m: McoreModel, hyper: GptHyper, swiglu: boolean): string[] {
  if (isMoeHfArch(arch)) {
    if (!m.dims.moe || !m.moe) return ["a dense model (no mixture-of-experts layers)"];
    return moeHfArchProblems(arch, m.dims, m.features, hyper, m.moe.routing, swiglu);
  }
  if (m.dims.moe) return [`mixture-of-experts layers (${Object.keys(MOE_HF_ARCHS).join(", ")} hold them)`];
  return hfArchProblems(arch, m.features, hyper, swiglu);
}

const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;
