import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { MegahubError } from "../errors.js";
import { gptDims, gptFamilyOf, type GptDims } from "../models/gpt/config-dims.js";
import type { Dtype } from "../tensors/dtypes.js";
import { openHfDir } from "../checkpoints/hf-safetensors.js";
import { readModelDir, type OpenBAModelDir, type TensorRef } from "../models/openba/hf-dir.js";

/** An HF Llama / Mistral / Qwen2 / Qwen3 (or Mixtral / Qwen2-MoE / Qwen3-MoE) model dir, checked against its config.json. */
export interface GptModelDir {
  readonly dir: string;
  readonly config: Readonly<Record<string, unknown>>;
  readonly dims: GptDims;
  readonly tensors: ReadonlyMap<string, TensorRef>;
  /** Dtype of the weight matrices (what tolerances are chosen by). */
  readonly weightDtype: Dtype;
  /** Ids that end greedy generation: generation_config.json's eos_token_id, else config.json's (int or list). */
  readonly eosIds: readonly number[];
  readonly files: readonly string[];
}

/** Either kind of model dir verify / generate / export-onnx run. */
export type AnyModelDir = { kind: "openba"; model: OpenBAModelDir } | { kind: "gpt"; model: GptModelDir };

/**
 * Opens an HF model dir of any supported architecture, chosen by config.json (`model_type`, then `architectures`):
 * Llama, Mistral, Qwen2, Qwen3 and the MoE Mixtral, Qwen2-MoE, Qwen3-MoE are decoder-only GPT models; anything
 * else is read as OpenBA, as before.
 */
export async function readAnyModelDir(dir: string): Promise<AnyModelDir> {
  const index = await openHfDir(dir);
  if (gptFamilyOf(index.config) === undefined) {
    const mt = index.config.model_type;
    // A dir that names another architecture gets that said, not a list of missing OpenBA tensors.
    if (typeof mt === "string" && mt !== "openba") {
      throw new MegahubError("UNSUPPORTED", `model_type "${mt}" is not supported (openba, llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe are)`, {
        file: join(dir, "config.json"),
      });
    }
    return { kind: "openba", model: await readModelDir(dir) };
  }
  const dims = gptDims(index.config, index.tensors, dir);
  const generation = await readFile(join(dir, "generation_config.json"), "utf8")
    .then((t) => JSON.parse(t) as Record<string, unknown>)
    .catch(() => ({}) as Record<string, unknown>);
  return {
    kind: "gpt",
    model: {
      dir,
      config: index.config,
      dims,
      tensors: index.tensors,
      weightDtype: index.tensors.get("model.layers.0.self_attn.q_proj.weight")?.dtype ?? "F32",
      eosIds: ids(generation.eos_token_id) ?? ids(index.config.eos_token_id) ?? [],
      files: index.files,
    },
  };
}

function ids(v: unknown): number[] | undefined {
  const list = Array.isArray(v) ? v : v === undefined || v === null ? [] : [v];
  const out = list.filter((x): x is number => typeof x === "number" && Number.isSafeInteger(x));
  return out.length > 0 ? out : undefined;
}
