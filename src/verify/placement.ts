import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { MegahubError } from "../errors.js";

/**
 * Which execution provider ran each node, from ORT's own profile (enableProfiling): every executed node leaves a
 * "Node" event whose args carry `provider` and `op_name`. With CUDA, ORT places nodes without a CUDA kernel (and
 * shape arithmetic it prefers on the host) on CPU silently; this is where that becomes visible.
 */
export interface ProviderNodes {
  /** ORT's provider name: CUDAExecutionProvider, CPUExecutionProvider … */
  provider: string;
  /** Distinct nodes that ran on it. */
  nodes: number;
  /** op type → node count. */
  ops: Record<string, number>;
}

export interface Placement {
  /** Nodes that ran, over all providers. */
  nodes: number;
  byProvider: ProviderNodes[];
}

interface ProfileEvent {
  cat?: unknown;
  name?: unknown;
  args?: { provider?: unknown; op_name?: unknown };
}

/** Folds a profile's events into per-provider node counts; most nodes first. */
export function placementFromProfile(events: unknown, file = "ORT profile"): Placement {
  if (!Array.isArray(events)) throw new MegahubError("VERIFY", `${file}: an ORT profile is a JSON array of events`);
  const nodes = new Map<string, { provider: string; op: string }>();
  for (const e of events as ProfileEvent[]) {
    if (e?.cat !== "Node" || typeof e.name !== "string" || typeof e.args?.provider !== "string") continue;
    const node = e.name.replace(/_(kernel_time|fence_before|fence_after)$/, "");
    if (!nodes.has(node)) nodes.set(node, { provider: e.args.provider, op: typeof e.args.op_name === "string" ? e.args.op_name : "?" });
  }
  const by = new Map<string, ProviderNodes>();
  for (const { provider, op } of nodes.values()) {
    const p = by.get(provider) ?? { provider, nodes: 0, ops: {} };
    p.nodes++;
    p.ops[op] = (p.ops[op] ?? 0) + 1;
    by.set(provider, p);
  }
  return { nodes: nodes.size, byProvider: [...by.values()].sort((a, b) => b.nodes - a.nodes || a.provider.localeCompare(b.provider)) };
}

/** Reads the one profile file a session wrote into `dir` (ORT names it <prefix>_<date>.json). */
export async function readPlacement(dir: string): Promise<Placement> {
  const files = (await readdir(dir)).filter((f) => f.endsWith(".json")).sort();
  const last = files.at(-1);
  if (last === undefined) throw new MegahubError("VERIFY", `ORT wrote no profile into ${dir}`);
  const path = join(dir, last);
  let events: unknown;
  try {
    events = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw new MegahubError("VERIFY", `${path}: ORT profile is not JSON (${(e as Error).message})`);
  }
  return placementFromProfile(events, path);
}

/** "412 nodes: 398 on CUDAExecutionProvider, 14 on CPUExecutionProvider (Shape ×8, Gather ×6)". */
export function describePlacement(p: Placement, main?: string): string {
  const parts = p.byProvider.map((x) => {
    const ops = Object.entries(x.ops).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const detail = x.provider !== main && ops.length > 0 ? ` (${ops.slice(0, 6).map(([o, n]) => `${o} ×${n}`).join(", ")}${ops.length > 6 ? ", …" : ""})` : "";
    return `${x.nodes} on ${x.provider}${detail}`;
  });
  return `${p.nodes} nodes: ${parts.join(", ")}`;
}
