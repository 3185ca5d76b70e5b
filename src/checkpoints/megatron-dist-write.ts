/**
 * Planning a Megatron-Core `torch_dist` iteration directory the way Megatron-Core's save lays it out
 * (megatron-core-format.md §3): every layer parameter under one stacked key `decoder.layers.<param>` [L, …] whose
 * axis 0 is the global layer number, one chunk per (layer, TP rank) — SwiGLU-style fused tensors as `parts`
 * fragments per rank, at r and r + TP of a parts·TP-way split — written by the rank `tp + TP·(ep + EP·pp)` that holds it
 * into `__<rank>_0.distcp`; replicated tensors written once, by TP rank 0 of their stage (the main replica);
 * mixture-of-experts: one expert's tensor sits on a further expert axis after the layer axis
 * (`decoder.layers.<param>` [L, E, …], or `decoder.layers.<l>.<param>` [E, …] when the block is not homogeneous) at
 * its global expert index, written by the TP ranks of the EP rank that holds it; everything else by EP rank 0 (the
 * EP ranks are the dense weights' data-parallel replicas);
 * `_extra_state` objects as `torch.save([None])` byte items; `metadata.json` (the new form), `common.pt` and the
 * tracker file. Nothing here knows an architecture: the caller names tensors, their TP split and their stage.
 */
import { MegahubError } from "../errors.js";
import { iterationDirName, TRACKER_FILE } from "../formats/megatron/discover.js";
import { COMMON_FILE, commonStateValue, CONFIG_FILE, megatronCommonFile, megatronConfigFile, type CommonState } from "../formats/torch-dcp/megatron.js";
import { sliceBox } from "../formats/torch-dcp/assemble.js";
import { planDcp, type DcpOutBytes, type DcpOutChunk, type DcpOutTensor } from "../formats/torch-dcp/write.js";
import { prepareTorchCheckpoint } from "../formats/torch/save.js";
import { PyList, type PyValue } from "../formats/torch/values.js";
import { torchRecords, zipBytes } from "../formats/torch/zip-write.js";
import type { PlannedFile } from "../plan/plan.js";
import type { Recipe } from "../plan/recipe.js";

/** How tensor parallelism cuts a tensor: `dim` into TP·parts fragments, rank r holding fragments r + k·TP. */
export interface DistSplit {
  readonly dim: number;
  readonly parts: number;
}

export interface DistOutTensor {
  /** `decoder.layers.<global l>.<param>` for a layer's tensor, else the global key. */
  readonly name: string;
  /** The global (TP-merged) tensor. */
  readonly recipe: Recipe;
  /** Undefined: replicated over TP. */
  readonly split: DistSplit | undefined;
  /** The pipeline stage that holds it. */
  readonly stage: number;
  /** One expert's tensor: its global expert index (the key, `name`, has no expert number). */
  readonly expert?: number | undefined;
}

export interface DistWriteOptions {
  readonly tp: number;
  readonly pp: number;
  /** Expert parallelism and the global expert count (MoE models; EP 1 and no experts when absent). */
  readonly ep?: number | undefined;
  readonly experts?: number | undefined;
  readonly iteration: number | "release";
  readonly common: CommonState;
  /** Modules with an `_extra_state` (`decoder.layers.<l>.<module>` or a global module), with their stage. */
  readonly extraState: readonly { readonly module: string; readonly stage: number; readonly expert?: number | undefined }[];
}

const LAYER = /^decoder\.layers\.(\d+)\.(.+)$/;

/** `torch.save(obj)` to a stream: a small archive under the record folder "archive". */
async function torchSaved(value: PyValue): Promise<Uint8Array> {
  const prepared = prepareTorchCheckpoint(value, { prefix: "archive" });
  return zipBytes(torchRecords({ prefix: "archive", pickle: prepared.pickle, storages: [] }));
}

/** The plan entries of the checkpoint root: iter_NNNNNNN/{metadata.json, common.pt, .metadata, __R_0.distcp…} and the tracker. */
export async function planMegatronDist(tensors: readonly DistOutTensor[], o: DistWriteOptions): Promise<PlannedFile[]> {
  const ep = o.ep ?? 1;
  const E = o.experts ?? 0;
  const rankOf = (tp: number, epRank: number, stage: number) => tp + o.tp * (epRank + ep * stage);
  const owner = (expert: number | undefined) => (expert === undefined ? 0 : Math.floor(expert / (E / ep)));
  const world = o.tp * ep * o.pp;
  if (E % ep !== 0) throw new MegahubError("USAGE", `EP ${ep} does not divide the ${E} experts`);
  for (const t of tensors) {
    if (!Number.isInteger(t.stage) || t.stage < 0 || t.stage >= o.pp) throw new MegahubError("USAGE", `stage ${t.stage} is not one of the ${o.pp} stages`, { tensor: t.name });
    if (t.expert !== undefined && !(Number.isInteger(t.expert) && t.expert >= 0 && t.expert < E)) throw new MegahubError("USAGE", `expert ${t.expert} is not one of the ${E} experts`, { tensor: t.name });
  }
  // Group layer tensors by parameter (and expert); stack when every parameter has every layer (a homogeneous block, as Megatron).
  const byParam = new Map<string, Map<number, Map<number, DistOutTensor>>>();
  const layers = new Set<number>();
  const globals: DistOutTensor[] = [];
  for (const t of tensors) {
    const m = LAYER.exec(t.name);
    if (!m) {
      globals.push(t);
      continue;
    }
    const l = Number(m[1]);
    layers.add(l);
    const per = byParam.get(m[2] as string) ?? new Map<number, Map<number, DistOutTensor>>();
    const inLayer = per.get(l) ?? new Map<number, DistOutTensor>();
    const slot = t.expert ?? -1;
    if (inLayer.has(slot)) throw new MegahubError("USAGE", `given twice${t.expert === undefined ? "" : ` for expert ${t.expert}`}`, { tensor: t.name });
    inLayer.set(slot, t);
    per.set(l, inLayer);
    byParam.set(m[2] as string, per);
  }
  const L = layers.size;
  const stacked = [...byParam.values()].every((per) => per.size === L) && [...layers].every((l) => l < L);
  const out: DcpOutTensor[] = [];
  const used = new Set<number>();
  const chunksOf = (t: DistOutTensor, lead: number[]): DcpOutChunk[] => {
    const shape = t.recipe.shape;
    const pieces: { tp: number; offsets: number[]; sizes: number[] }[] = [];
    if (!t.split) pieces.push({ tp: 0, offsets: shape.map(() => 0), sizes: [...shape] });
    else {
      const { dim, parts } = t.split;
      const n = shape[dim] as number;
      if (n % (o.tp * parts) !== 0) throw new MegahubError("USAGE", `dim ${dim} of size ${n} does not split into ${o.tp}·${parts} equal TP fragments`, { tensor: t.name });
      const f = n / (o.tp * parts);
      for (let r = 0; r < o.tp; r++) {
        for (let k = 0; k < parts; k++) {
          const offsets = shape.map((_, d) => (d === dim ? (r + k * o.tp) * f : 0));
          const sizes = shape.map((s, d) => (d === dim ? f : s));
          pieces.push({ tp: r, offsets, sizes });
        }
      }
    }
    const at = t.expert === undefined ? lead : [...lead, t.expert];
    return pieces.map((p) => {
      const file = rankOf(p.tp, owner(t.expert), t.stage);
      used.add(file);
      return { offsets: [...at, ...p.offsets], sizes: [...at.map(() => 1), ...p.sizes], file, recipe: sliceBox(t.recipe, p.offsets, p.sizes) };
    });
  };
  /** One layer's tensors of a parameter: the one dense tensor, or experts 0 … E − 1 (each once). */
  const members = (param: string, l: number, inLayer: Map<number, DistOutTensor>): DistOutTensor[] => {
    if (inLayer.has(-1)) return [inLayer.get(-1) as DistOutTensor];
    const list = Array.from({ length: E }, (_, e) => inLayer.get(e));
    const lacking = list.flatMap((t, e) => (t ? [] : [e]));
    if (lacking.length > 0 || inLayer.size !== E) throw new MegahubError("USAGE", `layer ${l} lacks expert${lacking.length === 1 ? "" : "s"} ${lacking.join(", ")} of ${E}`, { tensor: `decoder.layers.${l}.${param}` });
    return list as DistOutTensor[];
  };
  const sameAs = (first: DistOutTensor, t: DistOutTensor, what: string) => {
    if (t.recipe.dtype !== first.recipe.dtype || t.recipe.shape.join() !== first.recipe.shape.join()) {
      throw new MegahubError("USAGE", `${what} is ${t.recipe.dtype}[${t.recipe.shape.join(", ")}], the first ${first.recipe.dtype}[${first.recipe.shape.join(", ")}]: cannot stack`, { tensor: t.name });
    }
  };
  for (const t of globals.filter((g) => g.name.startsWith("embedding."))) out.push({ fqn: t.name, dtype: t.recipe.dtype, shape: t.recipe.shape, chunks: chunksOf(t, []) });
  for (const [param, per] of byParam) {
    if (!stacked) {
      for (const [l, inLayer] of [...per].sort((a, b) => a[0] - b[0])) {
        const list = members(param, l, inLayer);
        const first = list[0] as DistOutTensor;
        list.forEach((t) => sameAs(first, t, `expert ${t.expert ?? 0}`));
        const axis = first.expert === undefined ? [] : [E];
        out.push({ fqn: `decoder.layers.${l}.${param}`, dtype: first.recipe.dtype, shape: [...axis, ...first.recipe.shape], chunks: list.flatMap((t) => chunksOf(t, [])) });
      }
      continue;
    }
    const all = Array.from({ length: L }, (_, l) => members(param, l, per.get(l) as Map<number, DistOutTensor>));
    const first = all[0]?.[0] as DistOutTensor;
    const chunks: DcpOutChunk[] = [];
    all.forEach((list, l) => {
      if (list.length !== (all[0] as DistOutTensor[]).length) throw new MegahubError("USAGE", `layer ${l} has experts where layer 0 has none, or none where it has some: cannot stack`, { tensor: first.name });
      for (const t of list) {
        sameAs(first, t, `layer ${l}${t.expert === undefined ? "" : ` expert ${t.expert}`}`);
        chunks.push(...chunksOf(t, [l]));
      }
    });
    const axis = first.expert === undefined ? [] : [E];
    out.push({ fqn: `decoder.layers.${param}`, dtype: first.recipe.dtype, shape: [L, ...axis, ...first.recipe.shape], chunks });
  }
  for (const t of globals.filter((g) => !g.name.startsWith("embedding."))) out.push({ fqn: t.name, dtype: t.recipe.dtype, shape: t.recipe.shape, chunks: chunksOf(t, []) });
  const none = await torchSaved(new PyList([null]));
  const bytes: DcpOutBytes[] = o.extraState.map(({ module, stage, expert }) => {
    const m = LAYER.exec(module);
    const x = expert === undefined ? { off: "", shape: "" } : { off: `.${expert}`, shape: `.${E}` };
    const key = !m
      ? `${module}._extra_state/shard_0_1`
      : stacked
        ? `decoder.layers.${m[2] as string}._extra_state/shard_${m[1] as string}${x.off}_${L}${x.shape}`
        : expert === undefined
          ? `${module}._extra_state/shard_0_1`
          : `${module}._extra_state/shard_${expert}_${E}`;
    const file = rankOf(0, owner(expert), stage);
    used.add(file);
    return { fqn: key, data: none, file };
  });
  // File indices are ranks; only ranks that hold something get a file.
  const ranks = [...used].sort((a, b) => a - b);
  const index = new Map(ranks.map((r, i) => [r, i]));
  const remap = <T extends { file?: number }>(x: T): T => ({ ...x, file: index.get(x.file as number) as number });
  if (ranks.some((r) => r >= world)) throw new MegahubError("USAGE", "a rank lies outside TP × EP × PP");
  const dir = iterationDirName(o.iteration);
  const dcpFiles = planDcp(
    {
      tensors: out.map((t) => ({ ...t, chunks: (t.chunks ?? []).map(remap) })) as DcpOutTensor[],
      bytes: bytes.map(remap),
      files: ranks.map((r) => `__${r}_0.distcp`),
      // torch's flattening map (Megatron writes None): Megatron's loader ignores it, torch's dcp_to_torch_save needs it.
      plannerData: "flat",
    },
    dir,
  );
  return [
    ...dcpFiles,
    megatronCommonFile(`${dir}/${COMMON_FILE}`, commonStateValue(o.common)),
    megatronConfigFile(`${dir}/${CONFIG_FILE}`, "new"),
    { kind: "text", path: TRACKER_FILE, content: String(o.iteration) },
  ];
}
