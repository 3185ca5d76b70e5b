import { MegahubError } from "../../errors.js";
import { readTensor, type Recipe } from "../../plan/recipe.js";
import { DTYPES } from "../../tensors/dtypes.js";
import { loadTorch, type TorchFile } from "../torch/load.js";
import { PyCall, PyDict, PyFloat, walkTensors, type PyValue, TorchTensor } from "../torch/values.js";
import { discoverMegatron, type MegatronLayout } from "./discover.js";

/** One model chunk of one rank file: `model`, or `model<v>` with virtual pipeline parallelism. */
export interface MegatronShard {
  readonly tp: number;
  readonly pp: number;
  readonly ep: number;
  /** The virtual pipeline chunk (`model<v>`); undefined for a plain `model`. */
  readonly chunk: number | undefined;
  /** Display path of the rank file. */
  readonly file: string;
  readonly torch: TorchFile;
  /** Tensors under `model`, keyed by dotted path without the "model." prefix. */
  readonly tensors: ReadonlyMap<string, TorchTensor>;
  /** The model dict's own keys, non-tensor entries (`_extra_state`) included. */
  readonly keys: readonly string[];
}

export interface MegatronCheckpoint {
  readonly layout: MegatronLayout;
  /** Ordered by (pp, chunk, ep, tp). */
  readonly shards: readonly MegatronShard[];
  /** The parallel layout it was saved with (PP vs EP resolved from args when the directory names are ambiguous). */
  readonly parallel: { readonly tp: number; readonly pp: number; readonly ep: number; readonly vpp: number };
  /** Whether distributed-optimizer files (distrib_optim.pt) sit beside the rank files. */
  readonly distribOptim: boolean;
  /** The argparse.Namespace of rank 0 (fields may be stale in pruned lineages: dims come from shapes). */
  readonly args: PyCall | undefined;
  readonly iteration: number | "release";
  readonly checkpointVersion: number | undefined;
  /** Unknown and dangerous pickle globals over all ranks. */
  readonly unknownGlobals: readonly string[];
  readonly dangerousGlobals: readonly string[];
  /** A lazy recipe reading one shard's tensor. */
  recipe(shard: MegatronShard, key: string): Recipe;
  close(): Promise<void>;
}

/** Opens every rank of a checkpoint and reads its pickles; no weight is read. */
export async function openMegatron(path: string, options: { iteration?: number } = {}): Promise<MegatronCheckpoint> {
  const layout = await discoverMegatron(path, options);
  try {
    const shards: MegatronShard[] = [];
    let epFromPp: boolean | undefined;
    for (const rank of layout.ranks) {
      const file = layout.tree.display(rank.path);
      const torch = await loadTorch(await layout.tree.open(rank.path));
      if (!(torch.root instanceof PyDict)) {
        throw new MegahubError("MODEL", "top level is not a dict: not a Megatron checkpoint", { file });
      }
      epFromPp ??= layout.suffixes === 1 && suffixIsEp(torch.root.get("args"));
      const pp = epFromPp ? 0 : rank.pp;
      const ep = epFromPp ? rank.pp : rank.ep;
      const chunks = modelChunks(torch.root, file);
      for (const [chunk, model] of chunks) {
        const keys = model.entries.map(([k]) => k).filter((k): k is string => typeof k === "string");
        shards.push({ tp: rank.tp, pp, ep, chunk, file, torch, tensors: new Map(walkTensors(model)), keys });
      }
    }
    shards.sort((a, b) => a.pp - b.pp || (a.chunk ?? 0) - (b.chunk ?? 0) || a.ep - b.ep || a.tp - b.tp);
    const first = shards[0] as MegatronShard;
    const root = first.torch.root as PyDict;
    const argsValue = root.get("args");
    const args = argsValue instanceof PyCall ? argsValue : undefined;
    const version = root.get("checkpoint_version");
    const iterValue = root.get("iteration");
    checkArgsTp(args, layout, first.file);
    const count = (f: (s: MegatronShard) => number) => new Set(shards.map(f)).size;
    const parallel = { tp: layout.tp, pp: count((s) => s.pp), ep: count((s) => s.ep), vpp: count((s) => s.chunk ?? 0) };
    const unknown = new Set<string>();
    const dangerous = new Set<string>();
    for (const s of shards) {
      s.torch.report.unknown.forEach((g) => unknown.add(g));
      s.torch.report.dangerous.forEach((g) => dangerous.add(g));
    }
    return {
      layout,
      shards,
      parallel,
      distribOptim: layout.ranks.some((r) => r.distribOptim),
      args,
      iteration: typeof iterValue === "number" ? iterValue : layout.iteration,
      checkpointVersion: version instanceof PyFloat ? version.value : typeof version === "number" ? version : undefined,
      unknownGlobals: [...unknown],
      dangerousGlobals: [...dangerous],
      recipe: (shard, key) => {
        const t = shard.tensors.get(key);
        if (!t) {
          throw new MegahubError("MODEL", "tensor is missing from this rank", { file: shard.file, tensor: key });
        }
        return tensorRecipe(shard.torch, t, `${shard.file}:${key}`);
      },
      close: () => layout.tree.close(),
    };
  } catch (e) {
    await layout.tree.close();
    throw e;
  }
}

/** PP 1 with EP > 1 writes mp_rank_TT_EEE, which reads like mp_rank_TT_PPP: args decide (megatron-core-format §1.1). */
function suffixIsEp(args: PyValue | undefined): boolean {
  if (!(args instanceof PyCall)) return false;
  const pp = argNumber(args, "pipeline_model_parallel_size") ?? 1;
  const ep = argNumber(args, "expert_model_parallel_size") ?? 1;
  return pp === 1 && ep > 1;
}

/** `model`, or `model0` … `modelN` (one per virtual pipeline chunk), in chunk order. */
function modelChunks(root: PyDict, file: string): [number | undefined, PyDict][] {
  const model = root.get("model");
  if (model instanceof PyDict) return [[undefined, model]];
  const chunks: [number, PyDict][] = [];
  for (const [k, v] of root.entries) {
    const m = typeof k === "string" ? /^model(\d+)$/.exec(k) : null;
    if (m && v instanceof PyDict) chunks.push([Number(m[1]), v]);
  }
  if (chunks.length === 0) {
    const keys = root.entries.map(([k]) => String(k)).join(", ");
    throw new MegahubError("MODEL", `no "model" dict at the top level (found: ${keys})`, { file });
  }
  chunks.sort((a, b) => a[0] - b[0]);
  chunks.forEach(([v], i) => {
    if (v !== i) throw new MegahubError("MODEL", `virtual pipeline chunks are not model0..model${chunks.length - 1}: found model${v}`, { file });
  });
  return chunks;
}

/** A recipe for one torch tensor: one byte range when contiguous, a strided gather otherwise. */
export function tensorRecipe(file: TorchFile, t: TorchTensor, label: string): Recipe {
  const source = file.storageSource(t.storage);
  const w = DTYPES[t.dtype].bytes;
  if (t.contiguous) {
    return readTensor(source, t.storageOffset * w, t.dtype, t.shape, label);
  }
  return { kind: "strided", source, storageOffset: t.storageOffset, stride: t.stride, dtype: t.dtype, shape: t.shape, label };
}

function checkArgsTp(args: PyCall | undefined, layout: MegatronLayout, file: string): void {
  const tp = args?.field("tensor_model_parallel_size");
  if (typeof tp === "number" && tp !== layout.tp) {
    throw new MegahubError(
      "LAYOUT",
      `args.tensor_model_parallel_size is ${tp} but ${layout.tp} rank director${layout.tp === 1 ? "y was" : "ies were"} found`,
      { file },
    );
  }
}

/** A plain JSON view of an args Namespace, for inspect and manifests. */
export function argsToJson(args: PyCall | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!(args?.state instanceof PyDict)) return out;
  for (const [k, v] of args.state.entries) {
    if (typeof k === "string") out[k] = plain(v);
  }
  return out;
}

export function plain(v: PyValue | undefined): unknown {
  if (v === undefined || v === null || typeof v === "boolean" || typeof v === "string") return v ?? null;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return v.toString();
  if (v instanceof PyFloat) return v.value;
  if (v instanceof PyCall) {
    const g = v.global;
    const arg = v.args.items[0];
    return `${g ? g.qualified : "call"}(${arg === undefined ? "" : JSON.stringify(plain(arg))})`;
  }
  if (v instanceof Uint8Array) return `<${v.byteLength} bytes>`;
  if ("qualified" in v) return v.qualified;
  if ("items" in v && Array.isArray(v.items)) return v.items.slice(0, 64).map(plain);
  if (v instanceof PyDict) return Object.fromEntries(v.entries.slice(0, 64).map(([k, x]) => [String(k), plain(x)]));
  return String(v.constructor.name);
}

export function argNumber(args: PyCall | undefined, name: string): number | undefined {
  const v = args?.field(name);
  return typeof v === "number" ? v : v instanceof PyFloat ? v.value : undefined;
}
