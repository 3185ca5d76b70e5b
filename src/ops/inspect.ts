import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { MegahubError } from "../errors.js";
import { argsToJson, openMegatron, type MegatronShard } from "../formats/megatron/read.js";
import { readSafetensors } from "../formats/safetensors/read.js";
import { loadTorch } from "../formats/torch/load.js";
import { walkTensors } from "../formats/torch/values.js";
import { FileSource } from "../io/byte-source.js";
import { countModelParams, type Features, type ModelDims, type SpecFlavour } from "../models/arch.js";
import { MCORE_PARAMS } from "../models/moe/spec.js";
import { moeSummary, type MoeSummary } from "../models/moe/summary.js";
import { megatronMcoreModel } from "../models/mcore-global.js";
import { countParams, type OpenbaDims, type ParamCounts } from "../models/openba/dims.js";
import { megatronArchOf } from "../models/registry.js";
import { openHfGpt } from "./mcore/open-hf.js";
import { openHfDir } from "../checkpoints/hf-safetensors.js";
import { locateMegatronDist } from "../checkpoints/megatron-dist.js";
import { inspectMegatronDist } from "./inspect-dist.js";
import { byteSize } from "../tensors/dtypes.js";
import { readModelDir } from "../models/openba/hf-dir.js";
import { planMegatronToHf, unvettedGlobalsNote } from "./openba/megatron-to-hf.js";

export interface TensorRow {
  name: string;
  dtype: string;
  shape: readonly number[];
  bytes: number;
  /** Where the tensor lives (rank file or shard). */
  file?: string;
}

export interface InspectReport {
  path: string;
  format: "megatron" | "torch_dist" | "hf-safetensors" | "torch" | "safetensors";
  iteration?: number | "release";
  tp?: number;
  pp?: number;
  vpp?: number;
  ep?: number;
  checkpointVersion?: number;
  dtypes: string[];
  architecture?: string;
  dims?: OpenbaDims | ModelDims;
  parameters?: ParamCounts | ReturnType<typeof countModelParams>;
  /** GPT: optional parts found, and which spelling (local spec or Transformer Engine). */
  features?: Features;
  spec?: SpecFlavour;
  /** Mixture of experts: experts, top-k, EP, active vs total parameters. */
  moe?: MoeSummary;
  /** Optimizer state recognised beside the weights (never converted). */
  optimizer?: string;
  tensors: TensorRow[];
  args?: Record<string, unknown>;
  unknownGlobals?: readonly string[];
  dangerousGlobals?: readonly string[];
  notes: string[];
}

/** Describes a Megatron checkpoint, an HF directory, or a single torch / safetensors file, from headers alone. */
export async function inspectPath(path: string, options: { iteration?: number } = {}): Promise<InspectReport> {
  const s = await stat(path).catch(() => {
    throw new MegahubError("LAYOUT", "no such file or directory", { file: path });
  });
  if (s.isDirectory() && (await hasFile(join(path, "config.json")))) {
    return inspectHf(path);
  }
  const dist = await locateMegatronDist(path, options);
  if (dist) return inspectMegatronDist(path, dist);
  if (s.isFile() && path.endsWith(".safetensors")) {
    return inspectSafetensorsFile(path);
  }
  if (s.isFile() && !path.endsWith(".tar") && !/mp_rank_\d{2}(_\d{3})?\/[^/]+\.pt$/.test(path)) {
    return inspectTorchFile(path);
  }
  return inspectMegatron(path, options);
}

async function hasFile(p: string): Promise<boolean> {
  return stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
}

async function inspectMegatron(path: string, options: { iteration?: number }): Promise<InspectReport> {
  const ckpt = await openMegatron(path, options);
  try {
    const tensors: TensorRow[] = [];
    for (const s of ckpt.shards) tensors.push(...rows(s));
    const report: InspectReport = {
      path,
      format: "megatron",
      iteration: ckpt.iteration,
      tp: ckpt.parallel.tp,
      pp: ckpt.parallel.pp,
      ...(ckpt.parallel.vpp > 1 ? { vpp: ckpt.parallel.vpp } : {}),
      ...(ckpt.parallel.ep > 1 ? { ep: ckpt.parallel.ep } : {}),
      ...(ckpt.distribOptim ? { optimizer: "distributed optimizer (distrib_optim.pt: flat fp32 buffers; not converted)" } : {}),
      ...(ckpt.checkpointVersion === undefined ? {} : { checkpointVersion: ckpt.checkpointVersion }),
      dtypes: [...new Set(tensors.map((t) => t.dtype))],
      tensors,
      args: argsToJson(ckpt.args),
      unknownGlobals: ckpt.unknownGlobals,
      dangerousGlobals: ckpt.dangerousGlobals,
      notes: [],
    };
    if (megatronArchOf(ckpt.shards[0]?.tensors.keys() ?? []) === "gpt") {
      try {
        const m = megatronMcoreModel(ckpt);
        const moe = moeSummary(m, ckpt.parallel.ep);
        Object.assign(report, { architecture: "gpt", dims: m.dims, features: m.features, spec: m.flavour, parameters: countModelParams(MCORE_PARAMS, m.dims, m.features), ...(moe ? { moe } : {}) });
        report.notes.push(...m.notes);
        if (m.trueVocab !== undefined) report.notes.push(`vocabulary: ${m.trueVocab} tokens (args.vocab_size), ${m.dims.vocab - m.trueVocab} padding rows`);
      } catch (e) {
        report.notes.push(`not recognised as Megatron-Core GPT: ${(e as Error).message}`);
      }
      return report;
    }
    try {
      const planned = await planMegatronToHf(ckpt);
      report.architecture = "openba";
      report.dims = planned.dims;
      report.parameters = countParams(planned.dims, true);
      const shapes = ckpt.shards.map((s) => s.tensors.get("language_model.encoder.layers.0.self_attention.query_key_value.weight")?.shape[0]);
      if (new Set(shapes).size > 1) {
        report.notes.push(`uneven TP shards (QKV rows per rank: ${shapes.join(", ")}): a pruned lineage; convert merges them as they are`);
      }
      const argHidden = report.args?.hidden_size;
      if (typeof argHidden === "number" && argHidden !== planned.dims.hidden) {
        report.notes.push(`args are stale: args.hidden_size ${argHidden} but tensors say ${planned.dims.hidden} (dims come from shapes)`);
      }
    } catch (e) {
      report.notes.push(`not recognised as OpenBA: ${(e as Error).message}`);
    }
    if (ckpt.dangerousGlobals.length > 0) {
      report.notes.push(unvettedGlobalsNote(ckpt.dangerousGlobals));
    }
    return report;
  } finally {
    await ckpt.close();
  }
}

function rows(s: MegatronShard): TensorRow[] {
  return [...s.tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, bytes: byteSize(t.dtype, t.shape), file: s.file }));
}

async function inspectTorchFile(path: string): Promise<InspectReport> {
  const src = await FileSource.open(path);
  try {
    const f = await loadTorch(src);
    const tensors = [...walkTensors(f.root)].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, bytes: byteSize(t.dtype, t.shape) }));
    return {
      path,
      format: "torch",
      dtypes: [...new Set(tensors.map((t) => t.dtype))],
      tensors,
      unknownGlobals: f.report.unknown,
      dangerousGlobals: f.report.dangerous,
      notes: [
        `torch ${f.format} file`,
        ...(f.report.dangerous.length > 0 ? [unvettedGlobalsNote(f.report.dangerous)] : []),
      ],
    };
  } finally {
    await src.close();
  }
}

async function safetensorsRows(path: string, file: string): Promise<TensorRow[]> {
  const src = await FileSource.open(path);
  try {
    const st = await readSafetensors(src);
    return st.entries.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape, bytes: e.end - e.begin, file }));
  } finally {
    await src.close();
  }
}

async function inspectSafetensorsFile(path: string): Promise<InspectReport> {
  const tensors = await safetensorsRows(path, path);
  return { path, format: "safetensors", dtypes: [...new Set(tensors.map((t) => t.dtype))], tensors, notes: [] };
}

async function inspectHf(dir: string): Promise<InspectReport> {
  const report: InspectReport = { path: dir, format: "hf-safetensors", dtypes: [], tensors: [], notes: [] };
  const names = await openHfDir(dir).then((h) => [...h.tensors.keys()], () => []);
  if (names.some((n) => /^model\.layers\.\d+\.self_attn\.q_proj\./.test(n))) {
    try {
      const g = await openHfGpt(dir);
      await g.close();
      const hf = await openHfDir(dir);
      report.tensors = [...hf.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, bytes: t.length, file: t.file }));
      const moe = moeSummary(g.model);
      Object.assign(report, {
        architecture: typeof g.config.model_type === "string" ? `gpt (${g.config.model_type})` : "gpt",
        dims: g.model.dims,
        features: g.model.features,
        parameters: countModelParams(MCORE_PARAMS, g.model.dims, g.model.features),
        ...(moe ? { moe } : {}),
      });
      report.dtypes = [...new Set(report.tensors.map((t) => t.dtype))];
      return report;
    } catch (e) {
      report.notes.push(`not recognised as a Llama-family model: ${(e as Error).message}`);
    }
  }
  try {
    const hf = await readModelDir(dir);
    report.tensors = [...hf.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, bytes: t.length, file: t.file }));
    const { projection: _projection, ...dims } = hf.dims;
    report.dims = dims;
    report.architecture = "openba";
    report.parameters = countParams(dims, false);
  } catch (e) {
    report.notes.push(`not recognised as OpenBA: ${(e as Error).message}`);
    const shards = await readdir(dir).then((names) => names.filter((n) => n.endsWith(".safetensors")).sort());
    for (const f of shards) report.tensors.push(...(await safetensorsRows(join(dir, f), f)));
  }
  report.dtypes = [...new Set(report.tensors.map((t) => t.dtype))];
  return report;
}
