/**
 * What a `torch_dist` checkpoint holds besides model weights (megatron-core-format.md §3.3, §3.5), so the reader
 * keeps only the model and inspect can say what was left out: optimizer state in its three layouts, RNG and
 * rerun-state objects, `_extra_state` (FP8 metadata / None) objects.
 */
import type { DcpCheckpoint, DcpTensor } from "../formats/torch-dcp/read.js";
import type { MegatronCommon } from "../formats/torch-dcp/megatron.js";
import { PyDict, type PyValue } from "../formats/torch/values.js";
import { numel } from "../tensors/dtypes.js";

export type OptimizerLayout =
  | "dp_reshardable" // flat fp32 buckets per (model-parallel rank, gradient buffer, bucket)
  | "fully_reshardable" // optimizer.state.<slot>.<model key>, the model tensor's global shape
  | "fully_sharded_model_space" // pre-0.14: per-parameter, DP shards as flattened ranges
  | "per-parameter"; // optimizer.state.<slot>.<key> of a non-distributed optimizer

export interface DistOptimizer {
  readonly layout: OptimizerLayout;
  /** Tensor keys under `optimizer.` and their elements. */
  readonly tensors: number;
  readonly elements: number;
  /** Byte items under `optimizer.` (param groups, bucket sizes). */
  readonly objects: number;
  /** Slots: param (the fp32 master copy), exp_avg, exp_avg_sq, … */
  readonly slots: readonly string[];
  /** Flat buckets (dp_reshardable). */
  readonly buckets?: number;
  /** common.pt's content_metadata.distrib_optim_sharding_type, when given. */
  readonly declared?: string;
  readonly summary: string;
}

export interface DistSkipped {
  /** `_extra_state` objects (None for the local spec, FP8 metadata for Transformer Engine). */
  readonly extraState: number;
  /** The modules those objects belong to, as keyed: `decoder.layers.<module>` (stacked), `decoder.layers.<i>.<module>`, `output_layer`. */
  readonly extraStateModules: ReadonlySet<string>;
  /** `rng_state/…` objects. */
  readonly rng: number;
  /** Other non-model items (rerun state machine, …), by key. */
  readonly other: readonly string[];
}

const DP_BUCKET = /^optimizer\.distributed\.dp_group_idx_\d+\.gbuf_idx_\d+\..*\.bucket_idx_\d+\.([A-Za-z_]+)$/;
const PER_PARAM = /^optimizer\.state\.([A-Za-z_]+)\.(.+)$/;

/** Splits a DCP checkpoint's items into model tensors, optimizer state and skipped objects. */
export function classifyDistItems(dcp: DcpCheckpoint, common: MegatronCommon): { model: DcpTensor[]; optimizer: DistOptimizer | undefined; skipped: DistSkipped } {
  const model: DcpTensor[] = [];
  const optim: DcpTensor[] = [];
  let optimObjects = 0;
  let extraState = 0;
  const extraStateModules = new Set<string>();
  let rng = 0;
  const other: string[] = [];
  const skip = (fqn: string): boolean => {
    if (fqn.includes("._extra_state")) {
      extraState++;
      extraStateModules.add(fqn.slice(0, fqn.indexOf("._extra_state")));
    }
    else if (fqn.startsWith("rng_state")) rng++;
    else if (fqn.startsWith("optimizer.")) optimObjects++;
    else return false;
    return true;
  };
  for (const fqn of dcp.bytes.keys()) if (!skip(fqn)) other.push(fqn);
  for (const t of dcp.tensors.values()) {
    if (t.fqn.startsWith("optimizer.")) optim.push(t);
    else if (t.fqn.includes("._extra_state") || t.fqn.startsWith("rng_state")) skip(t.fqn);
    else if (t.fqn.startsWith("rerun_state_machine")) other.push(t.fqn);
    else model.push(t);
  }
  const optimizer = optim.length + optimObjects > 0 ? describeOptimizer(dcp, common, optim, optimObjects) : undefined;
  return { model, optimizer, skipped: { extraState, extraStateModules, rng, other } };
}

function describeOptimizer(dcp: DcpCheckpoint, common: MegatronCommon, optim: readonly DcpTensor[], objects: number): DistOptimizer {
  const declaredValue = common.contentMetadata?.get("distrib_optim_sharding_type");
  const declared = typeof declaredValue === "string" ? declaredValue : undefined;
  const elements = optim.reduce((a, t) => a + numel(t.shape), 0);
  const slots = new Set<string>();
  const buckets = new Set<string>();
  let perParam = 0;
  let flattened = 0;
  for (const t of optim) {
    const b = DP_BUCKET.exec(t.fqn);
    if (b) {
      slots.add(b[1] as string);
      buckets.add(t.fqn.slice(0, t.fqn.length - (b[1] as string).length - 1));
      continue;
    }
    const p = PER_PARAM.exec(t.fqn);
    if (!p) continue;
    perParam++;
    slots.add(p[1] as string);
    // Pre-0.14 flattened ranges: [X/x, Y/y, …, x·y·…] has one axis more than the model tensor it belongs to.
    const m = dcp.tensors.get(p[2] as string);
    if (m && t.shape.length === m.shape.length + 1) flattened++;
  }
  const reformulated = hasReformulated(dcp.metadata.mcoreData);
  const layout: OptimizerLayout =
    buckets.size > 0
      ? "dp_reshardable"
      : reformulated || flattened > 0 || declared === "fully_sharded_model_space"
        ? "fully_sharded_model_space"
        : declared === "fully_reshardable" || common.args?.field("use_distributed_optimizer") === true
          ? "fully_reshardable"
          : "per-parameter";
  const what: Record<OptimizerLayout, string> = {
    dp_reshardable: `distributed optimizer, dp_reshardable: ${buckets.size} flat fp32 bucket${buckets.size === 1 ? "" : "s"}`,
    fully_reshardable: `distributed optimizer, fully_reshardable: per-parameter optimizer.state.<slot>.<key> (${perParam} tensors)`,
    fully_sharded_model_space: `distributed optimizer, fully_sharded_model_space (pre-0.14 flattened ranges${reformulated ? ", mcore_data reformulated shapes" : ""}): ${perParam} tensors`,
    "per-parameter": `optimizer.state.<slot>.<key> per parameter (${perParam} tensors)`,
  };
  const slotText = slots.size > 0 ? `; slots ${[...slots].sort().join(", ")}` : "";
  const summary = `${what[layout]}${slotText}; ${elements.toLocaleString("en-US")} elements, ${objects} objects; not converted`;
  return { layout, tensors: optim.length, elements, objects, slots: [...slots].sort(), ...(buckets.size > 0 ? { buckets: buckets.size } : {}), ...(declared ? { declared } : {}), summary };
}

/** mcore_data (Megatron < 0.14) names reformulated keys with `nd_reformulated_orig_global_shape`. */
function hasReformulated(v: PyValue | undefined): boolean {
  if (!(v instanceof PyDict)) return false;
  return v.entries.some(([, x]) => x instanceof PyDict && x.get("nd_reformulated_orig_global_shape") !== undefined);
}
