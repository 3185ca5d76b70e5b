import { MegahubError } from "../../errors.js";
import type { MegatronCheckpoint } from "../../formats/megatron/read.js";
import { DEFAULT_MAX_SHARD_BYTES, planSafetensorsShards } from "../../formats/safetensors/write.js";
import { OPENBA, OPENBA_GLOBAL_PARAMS, OPENBA_LAYER_PARAMS } from "../../models/openba/spec.js";
import { countParams, type OpenbaDims, type ParamCounts } from "../../models/openba/dims.js";
import type { Stack } from "../../models/openba/types.js";
import type { Plan, PlannedFile, PlannedTensor } from "../../plan/plan.js";
import { cast, concat, type Recipe } from "../../plan/recipe.js";
import { canCast } from "../../tensors/cast.js";
import type { Dtype } from "../../tensors/dtypes.js";
import { megatronGlobalModel, megatronKey, type GlobalModel } from "./global-model.js";
import { generationConfig, hfConfig } from "../../models/openba/hf-config.js";
import { planTokenizerFiles, type TokenizerFacts } from "../../models/openba/tokenizer.js";

export type DtypeOption = "keep" | "fp16" | "bf16" | "fp32";
/** The notice for pickles that name globals off the allow-list (read as inert data; torch.load would import them). */
export function unvettedGlobalsNote(globals: readonly string[]): string {
  return `the pickles name globals that are not on megahub's allow-list (torch.load would import and may run them): ${globals.join(", ")}; megahub read them as inert data and writes none of them`;
}

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
  /** Dtypes of the checkpoint's tensors before any --dtype cast (to know whether the output is a rounding). */
  sourceDtypes: Dtype[];
  tokenizer?: TokenizerFacts;
}

/** Builds the Megatron → HF plan from headers: merged TP shards, fused fc_in, untied head, config and tokenizer. */
export async function planMegatronToHf(ckpt: MegatronCheckpoint, options: ConvertOptions = {}): Promise<ConvertPlan> {
  const model = megatronGlobalModel(ckpt);
  const planned = await planHfFiles(model, options);
  if (ckpt.dangerousGlobals.length > 0) {
    planned.plan = {
      ...planned.plan,
      notes: [...planned.plan.notes, unvettedGlobalsNote(ckpt.dangerousGlobals)],
    };
  }
  return planned;
}

/** HF OpenBA names for a global model: w1/w3 fused into fc_in, the tied embedding written as lm_head too. */
export function hfTensors(model: GlobalModel, target?: Dtype): PlannedTensor[] {
  const { dims, tensors: src } = model;
  const get = (key: string): Recipe => {
    const r = src.get(key);
    if (!r) throw new MegahubError("MODEL", "missing from the model", { tensor: key });
    if (target && !canCast(r.dtype, target)) throw new MegahubError("USAGE", `cannot cast ${r.dtype} to ${target}`, { tensor: key });
    return target ? cast(r, target) : r;
  };
  const tensors: PlannedTensor[] = [];
  for (const p of OPENBA_GLOBAL_PARAMS) {
    const r = get(p.megatron);
    for (const hf of p.hf) tensors.push({ name: hf, recipe: r });
  }
  for (const stack of ["encoder", "decoder"] as const) {
    const n = stack === "encoder" ? dims.encoderLayers : dims.decoderLayers;
    for (let i = 0; i < n; i++) {
      const fused = new Map<string, Recipe[]>();
      for (const p of OPENBA_LAYER_PARAMS) {
        if (p.hf === null || !(p.stacks as readonly Stack[]).includes(stack)) continue;
        const r = get(megatronKey(stack, i, p.megatron));
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
  return tensors;
}

/** The files of an HF model directory for a global model. */
export async function planHfFiles(model: GlobalModel, options: ConvertOptions = {}): Promise<ConvertPlan> {
  const { dims } = model;
  const tensors = hfTensors(model, DTYPE_OPTIONS[options.dtype ?? "keep"]);
  const files: PlannedFile[] = planSafetensorsShards(tensors, options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
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
    { kind: "text", path: "config.json", content: json(hfConfig(dims, model.args, mainDtype)) },
    { kind: "text", path: "generation_config.json", content: json(generationConfig()) },
  );
  const dtypes = [...new Set(tensors.map((t) => t.recipe.dtype))];
  const sourceDtypes = [...new Set([...model.tensors.values()].map((r) => r.dtype))];
  return { plan: { files, notes }, dims, params: countParams(dims, false), dtypes, sourceDtypes, ...(tokenizer ? { tokenizer } : {}) };
}

const json = (v: unknown) => `${JSON.stringify(v, null, 2)}\n`;
