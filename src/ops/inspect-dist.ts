/**
 * inspect for a Megatron-Core `torch_dist` checkpoint: the format and its metadata.json form, the iteration and
 * the layout it was saved with (from args), how layers are keyed, the stored model keys with their chunk counts and
 * data files, the GPT dims and parameter counts (experts, top-k, EP, active parameters of an MoE model), and the
 * optimizer layout (recognised, never converted).
 */
import type { DistLocation } from "../checkpoints/megatron-dist.js";
import { openMegatronDist } from "../checkpoints/megatron-dist.js";
import { argsToJson } from "../formats/megatron/read.js";
import { countModelParams } from "../models/arch.js";
import { distMcoreModel } from "../models/mcore-dist.js";
import { MCORE_PARAMS } from "../models/moe/spec.js";
import { moeSummary } from "../models/moe/summary.js";
import { byteSize } from "../tensors/dtypes.js";
import type { InspectReport, TensorRow } from "./inspect.js";

export async function inspectMegatronDist(path: string, where: DistLocation): Promise<InspectReport> {
  const ckpt = await openMegatronDist(where);
  try {
    const tensors: TensorRow[] = [...ckpt.stored].map(([name, t]) => {
      const files = [...new Set(t.chunks.map((c) => ckpt.dcp.metadata.storage(t.fqn, c.offsets)?.relativePath ?? "?"))].sort();
      return { name, dtype: t.dtype, shape: t.shape, bytes: byteSize(t.dtype, t.shape), file: `${t.chunks.length} chunk${t.chunks.length === 1 ? "" : "s"} in ${files.join(",")}` };
    });
    const p = ckpt.parallel;
    const report: InspectReport = {
      path,
      format: "torch_dist",
      iteration: ckpt.iteration,
      tp: p.tp,
      pp: p.pp,
      ...(p.vpp > 1 ? { vpp: p.vpp } : {}),
      ...(p.ep > 1 ? { ep: p.ep } : {}),
      ...(ckpt.optimizer ? { optimizer: ckpt.optimizer.summary } : {}),
      ...(ckpt.common.checkpointVersion === undefined ? {} : { checkpointVersion: ckpt.common.checkpointVersion }),
      dtypes: [...new Set(tensors.map((t) => t.dtype))],
      tensors,
      args: argsToJson(ckpt.args),
      unknownGlobals: ckpt.unknownGlobals,
      dangerousGlobals: ckpt.common.torch.report.dangerous,
      notes: [
        `metadata.json (${ckpt.config.form} form): sharded_backend ${ckpt.config.shardedBackend} v${ckpt.config.shardedBackendVersion}; ${ckpt.dcp.files.size} data files from ${ckpt.writers} ranks`,
        ckpt.keys === "stacked"
          ? "layers stacked: decoder.layers.<param> [L, …], axis 0 the global layer (TP/PP/VPP do not change the layout)"
          : ckpt.keys === "per-layer"
            ? "per-layer keys: decoder.layers.<i>.<param> (a non-homogeneous block or singleton_local_shards)"
            : "layers keyed both stacked and per layer",
        `skipped: ${ckpt.skipped.extraState} _extra_state objects, ${ckpt.skipped.rng} rng_state objects${ckpt.skipped.other.length > 0 ? `, ${ckpt.skipped.other.length} other (${ckpt.skipped.other.slice(0, 3).join(", ")})` : ""}`,
      ],
    };
    try {
      const m = distMcoreModel(ckpt);
      const moe = moeSummary(m, p.ep);
      Object.assign(report, { architecture: "gpt", dims: m.dims, features: m.features, spec: m.flavour, parameters: countModelParams(MCORE_PARAMS, m.dims, m.features), ...(moe ? { moe } : {}) });
      if (moe) report.notes.push(`experts: decoder.layers.${ckpt.keys === "stacked" ? "" : "<i>."}mlp.experts.experts.<param> [${ckpt.keys === "stacked" ? "L, " : ""}E, …], the expert axis global (${moe.experts} experts; saved at EP ${p.ep}, ${moe.experts / p.ep} per rank)`);
      report.notes.push(...m.notes);
      if (m.trueVocab !== undefined) report.notes.push(`vocabulary: ${m.trueVocab} tokens (args.vocab_size), ${m.dims.vocab - m.trueVocab} padding rows`);
    } catch (e) {
      report.notes.push(`not recognised as Megatron-Core GPT: ${(e as Error).message}`);
    }
    return report;
  } finally {
    await ckpt.close();
  }
}
