/**
 * The two non-DCP files of a Megatron-Core `torch_dist` iteration directory (megatron-core-format.md §3.1):
 * `metadata.json` (CheckpointingConfig, megatron/core/dist_checkpointing/core.py) and `common.pt` (a plain
 * torch.save of the non-sharded state: args, iteration, checkpoint_version, content_metadata, optimizer scalars).
 */
import { formatError, MegahubError } from "../../errors.js";
import type { Tree } from "../../io/tree.js";
import type { CustomFile, TextFile } from "../../plan/plan.js";
import { loadTorch, type TorchFile } from "../torch/load.js";
import { torchFileForPlan } from "../torch/save.js";
import { PyCall, PyDict, PyFloat, type PyValue } from "../torch/values.js";

export const CONFIG_FILE = "metadata.json";
export const COMMON_FILE = "common.pt";

export interface MegatronDistConfig {
  readonly shardedBackend: string;
  readonly shardedBackendVersion: number;
  /** Present in the form Megatron-Core wrote until mid-2026 ("old"); HEAD dropped both fields ("new"). */
  readonly commonBackend?: string;
  readonly commonBackendVersion?: number;
  readonly form: "old" | "new";
}

/** Parses metadata.json; `file` names it in errors. */
export function parseMegatronConfig(text: string, file: string): MegatronDistConfig {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw formatError("metadata.json is not JSON", { file });
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw formatError("metadata.json is not a JSON object", { file });
  const o = v as Record<string, unknown>;
  const backend = o["sharded_backend"];
  const version = o["sharded_backend_version"] ?? 1;
  if (typeof backend !== "string" || typeof version !== "number") {
    throw formatError("metadata.json has no sharded_backend string (not a Megatron distributed checkpoint)", { file });
  }
  const cb = o["common_backend"];
  const cbv = o["common_backend_version"];
  if ((cb !== undefined && typeof cb !== "string") || (cbv !== undefined && typeof cbv !== "number")) {
    throw formatError("metadata.json common_backend fields have the wrong types", { file });
  }
  if (typeof cb === "string" && cb !== "torch") {
    throw new MegahubError("UNSUPPORTED", `common_backend "${cb}" (only torch's common.pt is known)`, { file });
  }
  return {
    shardedBackend: backend,
    shardedBackendVersion: version,
    ...(typeof cb === "string" ? { commonBackend: cb } : {}),
    ...(typeof cbv === "number" ? { commonBackendVersion: cbv } : {}),
    form: cb === undefined && cbv === undefined ? "new" : "old",
  };
}

export async function readMegatronConfig(tree: Tree): Promise<MegatronDistConfig> {
  if (!(await tree.isFile(CONFIG_FILE))) {
    throw new MegahubError("LAYOUT", "no metadata.json: not a Megatron torch_dist checkpoint", { file: tree.display("") });
  }
  return parseMegatronConfig(await tree.readText(CONFIG_FILE), tree.display(CONFIG_FILE));
}

/**
 * metadata.json as Megatron writes it (json.dump of the dataclass, with Python's default `", "` / `": "`
 * separators). "new" (default) loads in every Megatron-Core version (the old
 * dataclass gives the common fields defaults); "old" matches files written before the common strategy was dropped.
 */
export function megatronConfigText(form: "old" | "new" = "new", backend = "torch_dist"): string {
  const o: Record<string, string | number> = { sharded_backend: backend, sharded_backend_version: 1 };
  if (form === "old") Object.assign(o, { common_backend: "torch", common_backend_version: 1 });
  return `{${Object.entries(o).map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`).join(", ")}}`;
}

export function megatronConfigFile(path: string, form: "old" | "new" = "new"): TextFile {
  return { kind: "text", path, content: megatronConfigText(form) };
}

export interface MegatronCommon {
  readonly torch: TorchFile;
  readonly root: PyDict;
  /** argparse.Namespace (an inert record; read fields with `.field(name)`). */
  readonly args: PyCall | undefined;
  readonly iteration: number | undefined;
  readonly checkpointVersion: number | undefined;
  /** e.g. {singleton_local_shards, chained_optim_avoid_prefix, distrib_optim_sharding_type}. */
  readonly contentMetadata: PyDict | undefined;
}

export async function readMegatronCommon(tree: Tree): Promise<MegatronCommon> {
  if (!(await tree.isFile(COMMON_FILE))) {
    throw new MegahubError("LAYOUT", "no common.pt: a torch_dist checkpoint keeps args and iteration there", { file: tree.display("") });
  }
  const torch = await loadTorch(await tree.open(COMMON_FILE));
  const root = torch.root;
  if (!(root instanceof PyDict)) throw formatError("common.pt does not hold a dict", { file: torch.name });
  const args = root.get("args");
  const it = root.get("iteration");
  const cv = root.get("checkpoint_version");
  const cm = root.get("content_metadata");
  return {
    torch,
    root,
    args: args instanceof PyCall ? args : undefined,
    iteration: typeof it === "number" ? it : undefined,
    checkpointVersion: typeof cv === "number" ? cv : cv instanceof PyFloat ? cv.value : undefined,
    contentMetadata: cm instanceof PyDict ? cm : undefined,
  };
}

export interface CommonState {
  readonly args: PyCall;
  readonly iteration: number;
  readonly checkpointVersion?: number;
  readonly contentMetadata?: PyDict;
  /** Further entries (num_floating_point_operations_so_far, opt_param_scheduler, …), written after the above. */
  readonly extra?: readonly [string, PyValue][];
}

/** The common.pt value tree Megatron's save writes: args, checkpoint_version (a float), iteration, … */
export function commonStateValue(s: CommonState): PyDict {
  const entries: [PyValue, PyValue][] = [
    ["args", s.args],
    ["checkpoint_version", new PyFloat(s.checkpointVersion ?? 3.0)],
    ["iteration", s.iteration],
  ];
  if (s.contentMetadata) entries.push(["content_metadata", s.contentMetadata]);
  for (const [k, v] of s.extra ?? []) entries.push([k, v]);
  return new PyDict(entries);
}

/** common.pt as a plan entry (record folder "common", as torch.save to that path names it). No tensors. */
export function megatronCommonFile(path: string, root: PyValue): CustomFile {
  return torchFileForPlan(path, root, []);
}
