/**
 * Megatron-Core `torch_dist` checkpoints (megatron-core-format.md §3): an `iter_NNNNNNN/` holding `metadata.json`,
 * `common.pt`, DCP's `.metadata` and `__R_N.distcp` files, found from the root's tracker file like a legacy save.
 *
 *   const where = await locateMegatronDist(path, { iteration });   // undefined: not torch_dist (try legacy)
 *   const ckpt = await openMegatronDist(where);                   // reads metadata.json, common.pt, .metadata only
 *   ckpt.tensors   per-layer model tensors, `decoder.layers.<global i>.<param>` → Recipe, spellings as stored
 *   ckpt.stored    the model keys as on disk (stacked or per-layer), for inspect
 *   ckpt.optimizer the optimizer layout recognised (never converted), ckpt.skipped what else was left out
 *
 * The stacked layer axis of `decoder.layers.<param>` [L, …] is un-stacked with box(): each per-layer recipe reads
 * only that layer's chunks. Expert axes (`mlp.experts.experts.<param>` [L, E, …]) become the legacy
 * SequentialMLP names `mlp.experts.local_experts.<e>.<param>` (global expert numbers). Spellings are not resolved
 * here (the model layer maps TE and local names); nothing here knows an architecture.
 */
import { basename, dirname } from "node:path";
import { stat } from "node:fs/promises";
import { MegahubError } from "../errors.js";
import { iterationDirName, TRACKER_FILE } from "../formats/megatron/discover.js";
import { argNumber } from "../formats/megatron/read.js";
import { CONFIG_FILE, readMegatronCommon, readMegatronConfig, type MegatronCommon, type MegatronDistConfig } from "../formats/torch-dcp/megatron.js";
import { METADATA_FILE, openDcp, type DcpCheckpoint, type DcpTensor } from "../formats/torch-dcp/read.js";
import type { PyCall } from "../formats/torch/values.js";
import { fsTree, subTree, type Tree } from "../io/tree.js";
import { concat, type Recipe } from "../plan/recipe.js";
import { classifyDistItems, type DistOptimizer, type DistSkipped } from "./megatron-dist-classify.js";

export type { DistOptimizer, DistSkipped } from "./megatron-dist-classify.js";

const ITER_DIR = /^iter_(\d{7,})$/;
const DATA_FILE = /^__\d+_\d+\.distcp$/;

export interface DistLocation {
  /** Rooted at the iteration directory. */
  readonly tree: Tree;
  readonly iteration: number | "release";
  readonly chosenBy: "tracker" | "option" | "path" | "only";
}

const isFile = (p: string) => stat(p).then((s) => s.isFile(), () => false);

/**
 * Where the torch_dist iteration of `path` is: the directory itself when it holds metadata.json (Megatron's own
 * marker, `check_is_distributed_checkpoint`), a file inside it, or a root whose tracker / --iteration / only
 * iteration names such a directory. Undefined when `path` is not one (a legacy checkpoint, or an error the legacy
 * discovery explains better).
 */
export async function locateMegatronDist(path: string, options: { iteration?: number } = {}): Promise<DistLocation | undefined> {
  const s = await stat(path).catch(() => undefined);
  if (!s) return undefined;
  if (s.isFile()) {
    const name = basename(path);
    if (name !== CONFIG_FILE && name !== METADATA_FILE && name !== "common.pt" && !DATA_FILE.test(name)) return undefined;
    return locateMegatronDist(dirname(path), options);
  }
  const root = fsTree(path);
  if (await root.isFile(CONFIG_FILE)) {
    if (options.iteration !== undefined) {
      await root.close();
      throw new MegahubError("USAGE", "--iteration applies to a checkpoint root, but this is an iteration directory", { file: path });
    }
    const m = ITER_DIR.exec(basename(path));
    return { tree: root, iteration: m ? Number(m[1]) : basename(path) === "release" ? "release" : NaN, chosenBy: "path" };
  }
  const entries = (await root.list("")) ?? [];
  let chosen: string | undefined;
  let chosenBy: DistLocation["chosenBy"] = "only";
  if (options.iteration !== undefined) {
    chosen = iterationDirName(options.iteration);
    chosenBy = "option";
  } else if (entries.includes(TRACKER_FILE)) {
    const text = (await root.readText(TRACKER_FILE)).trim();
    chosen = text === "release" ? "release" : /^\d+$/.test(text) ? iterationDirName(Number(text)) : undefined;
    chosenBy = "tracker";
  } else {
    const iters = entries.filter((n) => ITER_DIR.test(n) || n === "release");
    chosen = iters.length === 1 ? iters[0] : undefined;
  }
  await root.close();
  if (chosen === undefined || !(await isFile(`${path}/${chosen}/${CONFIG_FILE}`))) return undefined;
  const iteration = chosen === "release" ? "release" : Number(ITER_DIR.exec(chosen)?.[1]);
  return { tree: subTree(fsTree(path), chosen), iteration, chosenBy };
}

export interface MegatronDistCheckpoint {
  readonly name: string;
  readonly location: DistLocation;
  readonly iteration: number | "release";
  readonly config: MegatronDistConfig;
  readonly common: MegatronCommon;
  readonly args: PyCall | undefined;
  /** The layout it was saved with, from args (torch_dist itself does not depend on it). */
  readonly parallel: { readonly tp: number; readonly pp: number; readonly vpp: number; readonly ep: number; readonly dp: number };
  /** Ranks that wrote data files (`__R_N.distcp`). */
  readonly writers: number;
  /** How layers are keyed on disk. */
  readonly keys: "stacked" | "per-layer" | "mixed";
  /** Per-layer model tensors (global layer numbers) and global ones, as stored spellings. */
  readonly tensors: ReadonlyMap<string, Recipe>;
  /** Where each per-layer name came from: the stored key. */
  readonly storedKeyOf: ReadonlyMap<string, string>;
  /** Model keys as stored. */
  readonly stored: ReadonlyMap<string, DcpTensor>;
  readonly optimizer: DistOptimizer | undefined;
  readonly skipped: DistSkipped;
  readonly unknownGlobals: readonly string[];
  readonly dcp: DcpCheckpoint;
  close(): Promise<void>;
}

/** Prefixes third-party producers put before Megatron's keys (slime, tools/checkpoint/dist_checkpoint_io.py strip them). */
const PREFIXES = ["model.module.module.", "model.module.", "model."];
const STACKED = /^decoder\.layers\.(?!\d+\.)(.+)$/;
const PER_LAYER = /^decoder\.layers\.(\d+)\.(.+)$/;
const EXPERTS = /^mlp\.experts\.experts\.(.+)$/;

export async function openMegatronDist(where: DistLocation): Promise<MegatronDistCheckpoint> {
  const tree = where.tree;
  try {
    const config = await readMegatronConfig(tree);
    if (config.shardedBackend !== "torch_dist") {
      throw new MegahubError("UNSUPPORTED", `sharded_backend "${config.shardedBackend}" (megahub reads torch_dist)`, { file: tree.display(CONFIG_FILE) });
    }
    const common = await readMegatronCommon(tree);
    const dcp = await openDcp(tree);
    const { model, optimizer, skipped } = classifyDistItems(dcp, common);
    const tensors = new Map<string, Recipe>();
    const storedKeyOf = new Map<string, string>();
    const stored = new Map<string, DcpTensor>();
    const add = (name: string, r: Recipe, key: string) => {
      if (tensors.has(name)) throw new MegahubError("MODEL", `${name} is stored twice (stacked and per-layer keys)`, { file: dcp.name, tensor: key });
      tensors.set(name, r);
      storedKeyOf.set(name, key);
    };
    let stackedKeys = 0;
    let perLayerKeys = 0;
    let layersAxis: number | undefined;
    for (const t of model) {
      const key = stripPrefix(t.fqn);
      stored.set(key, t);
      const s = STACKED.exec(key);
      if (s) {
        const L = t.shape[0];
        if (L === undefined) throw new MegahubError("MODEL", "a stacked decoder.layers key must have a layer axis", { file: dcp.name, tensor: t.fqn });
        if (layersAxis !== undefined && layersAxis !== L) {
          throw new MegahubError("MODEL", `stacked layer axis of ${L}, other stacked keys have ${layersAxis}`, { file: dcp.name, tensor: t.fqn });
        }
        layersAxis = L;
        stackedKeys++;
        for (let l = 0; l < L; l++) unstackExperts(t, `decoder.layers.${l}.`, s[1] as string, [l], add, key);
        continue;
      }
      const p = PER_LAYER.exec(key);
      if (p) {
        perLayerKeys++;
        unstackExperts(t, `decoder.layers.${p[1] as string}.`, p[2] as string, [], add, key);
        continue;
      }
      add(key, t.recipe, key);
    }
    joinSwigluHalves(tensors, storedKeyOf);
    const args = common.args;
    const layersArg = argNumber(args, "num_layers");
    if (layersAxis !== undefined && layersArg !== undefined && layersArg !== layersAxis) {
      throw new MegahubError("MODEL", `args.num_layers is ${layersArg} but the stacked layer axis has ${layersAxis} layers`, { file: dcp.name });
    }
    const n = (name: string) => argNumber(args, name) ?? 1;
    const writers = new Set([...dcp.files.keys()].map((f) => /^__(\d+)_/.exec(f)?.[1]).filter((x) => x !== undefined)).size;
    const iteration = common.iteration ?? where.iteration;
    return {
      name: tree.display(""),
      location: where,
      iteration,
      config,
      common,
      args,
      parallel: {
        tp: n("tensor_model_parallel_size"),
        pp: n("pipeline_model_parallel_size"),
        vpp: n("virtual_pipeline_model_parallel_size"),
        ep: n("expert_model_parallel_size"),
        dp: n("data_parallel_size"),
      },
      writers,
      keys: stackedKeys > 0 && perLayerKeys > 0 ? "mixed" : stackedKeys > 0 ? "stacked" : "per-layer",
      tensors,
      storedKeyOf,
      stored,
      optimizer,
      skipped,
      unknownGlobals: [...new Set([...dcp.metadata.unknownGlobals, ...common.torch.report.unknown])],
      dcp,
      close: () => tree.close(),
    };
  } catch (e) {
    await tree.close();
    throw e;
  }
}

function stripPrefix(fqn: string): string {
  for (const p of PREFIXES) if (fqn.startsWith(p) && /^(decoder|embedding|output_layer)\./.test(fqn.slice(p.length))) return fqn.slice(p.length);
  return fqn;
}

/**
 * Adds one layer's tensor (`lead` = the stacked layer index, or none for a per-layer key); an expert axis after it
 * is un-stacked too, expert by expert, under the legacy SequentialMLP name.
 */
function unstackExperts(t: DcpTensor, prefix: string, param: string, lead: number[], add: (name: string, r: Recipe, key: string) => void, key: string): void {
  const e = EXPERTS.exec(param);
  const axes = lead.length + (e ? 1 : 0);
  if (t.shape.length < axes) throw new MegahubError("MODEL", `[${t.shape.join(", ")}] lacks its layer/expert axes`, { tensor: t.fqn });
  const rest = t.shape.slice(axes);
  const boxOf = (idx: number[]) => t.box([...idx, ...rest.map(() => 0)], [...idx.map(() => 1), ...rest], idx.map((_, i) => i));
  if (!e) {
    add(`${prefix}${param}`, lead.length === 0 ? t.recipe : boxOf(lead), key);
    return;
  }
  const experts = t.shape[lead.length] as number;
  for (let x = 0; x < experts; x++) add(`${prefix}mlp.experts.local_experts.${x}.${e[1] as string}`, boxOf([...lead, x]), key);
}

/** `singleton_local_shards` stores SwiGLU fc1 as `<key>_w` (gates) and `<key>_v` (ups): the global tensor is [w; v]. */
function joinSwigluHalves(tensors: Map<string, Recipe>, storedKeyOf: Map<string, string>): void {
  for (const [name, w] of [...tensors]) {
    const m = /^(.*linear_fc1\.(?:weight|bias))_w$/.exec(name);
    const v = m ? tensors.get(`${m[1] as string}_v`) : undefined;
    if (!m || !v) continue;
    const base = m[1] as string;
    tensors.delete(name);
    tensors.delete(`${base}_v`);
    tensors.set(base, concat(0, [w, v]));
    storedKeyOf.set(base, storedKeyOf.get(name) ?? name);
  }
}
