import { stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { MegahubError } from "../../errors.js";
import { openMegatron } from "../../formats/megatron/read.js";
import { megatronGlobalModel, type GlobalModel } from "./global-model.js";
import { openHfModel } from "./hf-global.js";

/** Where a model was read from, as steps record it in their lineage. */
export interface ModelSourceInfo {
  path: string;
  format: "hf" | "megatron";
  iteration?: number | "release";
  tp?: number;
}

/** A model opened as a GlobalModel from either layout, with what an HF source carries besides its tensors. */
export interface ModelSource {
  model: GlobalModel;
  info: ModelSourceInfo;
  /** HF sources: config.json (lengths and dropout for synthesised Megatron args). */
  config?: Record<string, unknown>;
  /** HF sources: their spiece.model, when present. */
  spiece?: string;
  close(): Promise<void>;
}

const isFile = (p: string) =>
  stat(p).then(
    (s) => s.isFile(),
    () => false,
  );

/** Opens an HF directory (it has config.json) or a Megatron checkpoint as a global model; no weight is read. */
export async function openModel(input: string, iteration: number | undefined): Promise<ModelSource> {
  if (await isFile(join(input, "config.json"))) {
    if (iteration !== undefined) throw new MegahubError("USAGE", "--iteration applies to Megatron checkpoints, not HF directories", { file: input });
    const hf = await openHfModel(input);
    const spiece = join(input, "spiece.model");
    return {
      model: hf.model,
      info: { path: resolve(input), format: "hf" },
      config: hf.config,
      ...((await isFile(spiece)) ? { spiece } : {}),
      close: () => hf.close(),
    };
  }
  const ckpt = await openMegatron(input, iteration === undefined ? {} : { iteration });
  try {
    return {
      model: megatronGlobalModel(ckpt),
      info: { path: resolve(input), format: "megatron", iteration: ckpt.iteration, tp: ckpt.layout.tp },
      close: () => ckpt.close(),
    };
  } catch (e) {
    await ckpt.close();
    throw e;
  }
}
