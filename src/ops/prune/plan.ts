import { readFile } from "node:fs/promises";
import { MegahubError } from "../../errors.js";
import { OPENBA_REMOTE_CODE_REPO } from "../../models/openba/spec.js";
import { countParams, type OpenbaDims, type ParamCounts } from "../../models/openba/dims.js";
import { resolvePrune, type PruneTarget, type ResolvedPrune } from "./masks.js";

/** `--plan`: parameter counts before and after a prune, from dims alone (no weight is read). */
export interface ParamPlan {
  readonly resolved: ResolvedPrune;
  /** As Megatron stores the model: the output projection tied to the embedding (the seed table counts this way). */
  readonly before: ParamCounts;
  readonly after: ParamCounts;
  /** Totals as HF stores the model (lm_head.weight is a separate copy of the embedding). */
  readonly hfTotal: { readonly before: number; readonly after: number };
  readonly notes: readonly string[];
}

/** Counts parameters per part before and after pruning `from` to `target`. */
export function planParameters(from: OpenbaDims, target: PruneTarget, notes: readonly string[] = []): ParamPlan {
  const resolved = resolvePrune(from, target);
  return {
    resolved,
    before: countParams(resolved.from, true),
    after: countParams(resolved.to, true),
    hfTotal: { before: countParams(resolved.from, false).total, after: countParams(resolved.to, false).total },
    notes: [...notes, ...resolved.notes],
  };
}

/**
 * Dims from an HF OpenBA config.json (`--from-config`), for planning without weights.
 *
 * `ffn_hidden_size` means two things in this lineage (openba-format.md §9.1): v1's modeling code (the 15B release)
 * reads it as the nominal 4·h and derives the SwiGLU width as 256·ceil(⌊2·ffn/3⌋ / 256) (16384 → 11008); v2's code
 * and megahub's own configs hold the real width. Detection: the value is read as v1's nominal width when it is
 * exactly 4 × hidden_size AND the config's auto_map does not point at the v2 modeling code megahub writes
 * (a real SwiGLU width of exactly 4h never occurs in OpenBA's lineage; megahub-written configs are always literal).
 */
export function dimsFromHfConfig(config: Record<string, unknown>, file = "config.json"): { dims: OpenbaDims; notes: string[] } {
  const num = (...names: string[]): number | undefined => {
    for (const n of names) {
      const v = config[n];
      if (typeof v === "number" && Number.isInteger(v) && v > 0) return v;
    }
    return undefined;
  };
  const need = (...names: string[]): number => {
    const v = num(...names);
    if (v === undefined) throw new MegahubError("MODEL", `config has no positive integer ${names.join(" / ")}`, { file });
    return v;
  };
  const hidden = need("hidden_size");
  const heads = need("num_heads", "num_attention_heads");
  const kvChannels = num("kv_channels") ?? hidden / heads;
  if (!Number.isInteger(kvChannels)) throw new MegahubError("MODEL", "config has no kv_channels and hidden_size / num_heads is not whole", { file });
  const notes: string[] = [];
  const stated = need("ffn_hidden_size");
  let ffn = stated;
  const autoMap = JSON.stringify(config.auto_map ?? "");
  if (stated === 4 * hidden && !autoMap.includes(OPENBA_REMOTE_CODE_REPO)) {
    ffn = 256 * Math.ceil(Math.floor((2 * stated) / 3) / 256);
    notes.push(
      `ffn_hidden_size ${stated} = 4 × hidden_size: read as OpenBA v1's nominal width; the SwiGLU width is 256·ceil(⌊2·${stated}/3⌋/256) = ${ffn}`,
    );
  }
  const dims: OpenbaDims = {
    hidden,
    heads,
    kvChannels,
    ffn,
    encoderLayers: need("num_layers", "num_hidden_layers"),
    decoderLayers: need("num_decoder_layers"),
    vocab: need("vocab_size"),
  };
  return { dims, notes };
}

/** Reads `--from-config <config.json>`. */
export async function readHfConfigDims(path: string): Promise<{ dims: OpenbaDims; notes: string[] }> {
  let config: unknown;
  try {
    config = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new MegahubError(code === "ENOENT" ? "USAGE" : "FORMAT", code === "ENOENT" ? "no such config file" : `not JSON: ${(e as Error).message}`, { file: path });
  }
  if (typeof config !== "object" || config === null || Array.isArray(config)) throw new MegahubError("FORMAT", "config.json is not an object", { file: path });
  return dimsFromHfConfig(config as Record<string, unknown>, path);
}

/** Billions with one decimal, the way the OpenBA-v2 table writes sizes (12.3B, 11.0B, 3.8B). */
/** A parameter count for people: billions for big models, real counts (M, K, exact) for small ones, never "0.0B". */
export function billions(n: number): string {
  if (n >= 1e8) return `${(n / 1e9).toFixed(1)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

/** Rows of the `--plan` table: part, before, after, removed (exact counts and billions). */
export function paramPlanRows(plan: ParamPlan): string[][] {
  const parts = ["embedding", "encoder", "decoder", "head", "total"] as const;
  const label: Record<(typeof parts)[number], string> = {
    embedding: "embedding",
    encoder: "encoder",
    decoder: "decoder",
    head: "lm_head (tied: bias only)",
    total: "total",
  };
  return parts.map((p) => {
    const b = plan.before[p];
    const a = plan.after[p];
    const removed = b === 0 ? "" : `${(100 * (1 - a / b)).toFixed(1)}%`;
    return [label[p], b.toLocaleString("en-US"), a.toLocaleString("en-US"), p === "total" ? `${billions(b)} → ${billions(a)}` : removed];
  });
}

/** A one-line description of dims for plans and logs. */
export function dimsLine(d: OpenbaDims): string {
  return `hidden ${d.hidden}, ${d.heads} heads × ${d.kvChannels}, FFN ${d.ffn}, ${d.encoderLayers}/${d.decoderLayers} layers, vocab rows ${d.vocab}`;
}
