import { MegahubError } from "../../errors.js";
import type { OpenbaDims } from "../../models/openba/dims.js";
import type { Stack } from "../../models/openba/types.js";

/**
 * What to prune to. Every field is optional: an absent width keeps the source's, absent layer options drop nothing.
 * `encoderLayers` / `decoderLayers` ask megahub to choose the layers to drop (see {@link chooseLayersToDrop});
 * `dropEncoder` / `dropDecoder` name them (0-based, original numbering) as OpenBA's `--drop_*_layers` do.
 */
export interface PruneTarget {
  hidden?: number;
  ffn?: number;
  heads?: number;
  dropEncoder?: readonly number[];
  dropDecoder?: readonly number[];
  encoderLayers?: number;
  decoderLayers?: number;
}

/** How pruning picks the rows and columns it keeps. */
export type PruneStrategy = "random" | "magnitude";

/** A target checked against a source: the new dims and the exact layers dropped (original numbering). */
export interface ResolvedPrune {
  readonly from: OpenbaDims;
  readonly to: OpenbaDims;
  readonly drop: { readonly encoder: readonly number[]; readonly decoder: readonly number[] };
  /** Whether each stack's drop list was given by the user or chosen by megahub. */
  readonly chosen: { readonly encoder: "listed" | "chosen" | "none"; readonly decoder: "listed" | "chosen" | "none" };
  /** Facts to print (the layer choice, consecutive drops that could not be avoided …). */
  readonly notes: readonly string[];
}

/** One kept layer's masks: kept head and FFN indices (ascending), under the layer's ORIGINAL number. */
export interface LayerMasks {
  readonly stack: Stack;
  readonly layer: number;
  readonly heads: readonly number[];
  readonly ffn: readonly number[];
}

/** Everything a prune applies: one global hidden mask, per kept layer a head and an FFN mask, the dropped layers. */
export interface PruneMasks {
  readonly strategy: PruneStrategy;
  /** The PRNG seed (random strategy only). */
  readonly seed?: number;
  readonly hidden: readonly number[];
  /** Kept layers: encoder layers in order, then decoder layers. */
  readonly layers: readonly LayerMasks[];
  readonly drop: { readonly encoder: readonly number[]; readonly decoder: readonly number[] };
}

/** OpenBA's prune_model.sh example seed (`--seed 1234`); megahub's default so a bare run is reproducible. */
export const DEFAULT_SEED = 1234;

/** Checks a target against the source dims and fixes the dropped layers. Throws USAGE errors naming the option. */
export function resolvePrune(from: OpenbaDims, target: PruneTarget): ResolvedPrune {
  const width = (opt: string, value: number | undefined, have: number, what: string): number => {
    if (value === undefined) return have;
    if (!Number.isInteger(value) || value < 1) throw usage(`--${opt} must be a positive integer, got ${value}`);
    if (value > have) {
      throw usage(`--${opt} ${value} is larger than the source's ${what} ${have}: pruning can only remove, never add`);
    }
    return value;
  };
  const hidden = width("hidden", target.hidden, from.hidden, "hidden size");
  const heads = width("heads", target.heads, from.heads, "number of attention heads");
  const ffn = width("ffn", target.ffn, from.ffn, "FFN width");
  const notes: string[] = [];
  const enc = dropFor("encoder", from.encoderLayers, target.dropEncoder, target.encoderLayers, notes);
  const dec = dropFor("decoder", from.decoderLayers, target.dropDecoder, target.decoderLayers, notes);
  const to: OpenbaDims = {
    ...from,
    hidden,
    heads,
    ffn,
    encoderLayers: from.encoderLayers - enc.drop.length,
    decoderLayers: from.decoderLayers - dec.drop.length,
  };
  return { from, to, drop: { encoder: enc.drop, decoder: dec.drop }, chosen: { encoder: enc.how, decoder: dec.how }, notes };
}

function dropFor(
  stack: Stack,
  have: number,
  listed: readonly number[] | undefined,
  keep: number | undefined,
  notes: string[],
): { drop: number[]; how: "listed" | "chosen" | "none" } {
  const opt = stack;
  if (listed !== undefined && listed.length > 0 && keep !== undefined) {
    throw usage(`give either --drop-${opt}-layers or --${opt}-layers, not both`);
  }
  if (keep !== undefined) {
    if (!Number.isInteger(keep) || keep < 0) throw usage(`--${opt}-layers must be a non-negative integer, got ${keep}`);
    if (keep > have) throw usage(`--${opt}-layers ${keep} is larger than the source's ${have} ${stack} layers: pruning can only remove`);
    if (keep === 0) throw usage(`--${opt}-layers 0 would drop every ${stack} layer; OpenBA needs at least one`);
    const drop = chooseLayersToDrop(have, keep);
    if (drop.length > 0) {
      const adjacent = drop.some((v, i) => i > 0 && v === (drop[i - 1] as number) + 1);
      notes.push(
        `${stack}: keeping ${keep} of ${have} layers, dropping [${drop.join(", ")}] (spread out from the middle${adjacent ? "; some are adjacent: too many to keep apart" : ", none adjacent"})`,
      );
    }
    return { drop, how: drop.length > 0 ? "chosen" : "none" };
  }
  const drop = [...new Set(listed ?? [])].sort((a, b) => a - b);
  if (drop.length !== (listed ?? []).length) throw usage(`--drop-${opt}-layers lists a layer twice: ${(listed ?? []).join(",")}`);
  const bad = drop.filter((i) => !Number.isInteger(i) || i < 0 || i >= have);
  if (bad.length > 0) {
    const what = bad.length === 1 ? `layer ${bad[0]} does not exist` : `layers ${bad.join(", ")} do not exist`;
    throw usage(`--drop-${opt}-layers: ${stack} ${what} (the source's ${stack} has layers 0..${have - 1})`);
  }
  if (drop.length === have) throw usage(`--drop-${opt}-layers drops every ${stack} layer (all ${have}); OpenBA needs at least one`);
  return { drop, how: drop.length > 0 ? "listed" : "none" };
}

/**
 * Which layers to drop to keep `keep` of `total`, the way OpenBA-v2 chose them: non-consecutive, as far apart as
 * possible, from the middle of the stack (the first and last layers stay). Drop i (1-based) aims at
 * i · total / (k + 1) — evenly spaced, centred; for 12 → 10 that is [4, 8], the layers OpenBA-v2 dropped from its
 * encoder in Stage 1. The aims are then nudged (a forward and a backward pass) so that no two drops touch and none
 * is the first or last layer, which is possible while k ≤ ⌊(total − 1) / 2⌋. Beyond that some drops must touch:
 * they are packed evenly and the first layer is kept as long as any layer is.
 */
export function chooseLayersToDrop(total: number, keep: number): number[] {
  const k = total - keep;
  if (k <= 0) return [];
  const aim = (i: number) => Math.round(((i + 1) * total) / (k + 1));
  const p: number[] = [];
  if (k <= Math.floor((total - 1) / 2)) {
    for (let i = 0; i < k; i++) p.push(Math.max(aim(i), i === 0 ? 1 : (p[i - 1] as number) + 2));
    for (let i = k - 1; i >= 0; i--) p[i] = Math.min(p[i] as number, i === k - 1 ? total - 2 : (p[i + 1] as number) - 2);
    return p;
  }
  const taken = new Set<number>();
  const last = k <= total - 2 ? total - 2 : total - 1; // keep the last layer too while the interior has room
  for (let i = 0; i < k; i++) {
    let at = Math.min(last, Math.max(1, aim(i)));
    while (taken.has(at) && at < last) at++;
    while (taken.has(at)) at--;
    taken.add(at);
  }
  return [...taken].sort((a, b) => a - b);
}

/**
 * A small, fast, seeded PRNG (xoshiro128**, seeded through splitmix32). It is NOT Python's Mersenne Twister, so
 * `--strategy random --seed S` does not reproduce the masks OpenBA's `random.sample` would draw with the same seed:
 * it keeps OpenBA's draw ORDER and uniform selection, and it is reproducible across megahub runs and platforms.
 * The masks file written beside every output is the exact record.
 */
export class Prng {
  private s: Uint32Array;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw usage(`--seed must be a non-negative integer, got ${seed}`);
    // splitmix32 spreads any seed (even 0) over the whole state; the high 32 bits of large seeds are folded in.
    let x = (seed >>> 0) ^ Math.floor(seed / 2 ** 32);
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s = Uint32Array.from([next(), next(), next(), next()]);
  }

  /** The next 32 random bits. */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1] as number, 5) >>> 0, 7), 9) >>> 0;
    const t = ((s[1] as number) << 9) >>> 0;
    s[2] = (s[2] as number) ^ (s[0] as number);
    s[3] = (s[3] as number) ^ (s[1] as number);
    s[1] = (s[1] as number) ^ (s[2] as number);
    s[0] = (s[0] as number) ^ (s[3] as number);
    s[2] = (s[2] as number) ^ t;
    s[3] = rotl(s[3] as number, 11);
    return result;
  }

  /** A uniform integer in [0, n), by rejection (no modulo bias), for n ≤ 2^32. */
  below(n: number): number {
    if (n <= 1) return 0;
    const limit = 2 ** 32 - (2 ** 32 % n);
    for (;;) {
      const r = this.nextUint32();
      if (r < limit) return r % n;
    }
  }

  /**
   * k distinct indices of 0..n−1, uniformly, returned ascending (OpenBA keeps rows in their original order). A
   * partial Fisher–Yates shuffle: exactly k draws, so every mask advances the stream by a fixed amount.
   */
  sample(n: number, k: number): number[] {
    const pool = new Int32Array(n);
    for (let i = 0; i < n; i++) pool[i] = i;
    for (let i = 0; i < k; i++) {
      const j = i + this.below(n - i);
      const t = pool[i] as number;
      pool[i] = pool[j] as number;
      pool[j] = t;
    }
    return Array.from(pool.subarray(0, k)).sort((a, b) => a - b);
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * Random masks in OpenBA's draw order (`init_prune_zs`): the hidden mask first, then for every layer of the
 * ORIGINAL model — encoder 0..E−1, then decoder 0..D−1 — a head mask, then an FFN mask. Masks are drawn for
 * dropped layers too (and thrown away) so that dropping a layer does not change any other layer's masks.
 */
export function randomMasks(resolved: ResolvedPrune, seed: number): PruneMasks {
  const { from, to, drop } = resolved;
  const rng = new Prng(seed);
  const hidden = rng.sample(from.hidden, to.hidden);
  const layers: LayerMasks[] = [];
  for (const stack of ["encoder", "decoder"] as const) {
    const n = stack === "encoder" ? from.encoderLayers : from.decoderLayers;
    const dropped = new Set(drop[stack]);
    for (let layer = 0; layer < n; layer++) {
      const heads = rng.sample(from.heads, to.heads);
      const ffn = rng.sample(from.ffn, to.ffn);
      if (!dropped.has(layer)) layers.push({ stack, layer, heads, ffn });
    }
  }
  return { strategy: "random", seed, hidden, layers, drop };
}

/** The first `k` of `n`: a stand-in mask with the right counts, for dry runs that must not read weights. */
export function placeholderMasks(resolved: ResolvedPrune, strategy: PruneStrategy): PruneMasks {
  const first = (k: number) => Array.from({ length: k }, (_, i) => i);
  const { from, to, drop } = resolved;
  const layers: LayerMasks[] = [];
  for (const stack of ["encoder", "decoder"] as const) {
    const n = stack === "encoder" ? from.encoderLayers : from.decoderLayers;
    const dropped = new Set(drop[stack]);
    for (let layer = 0; layer < n; layer++) if (!dropped.has(layer)) layers.push({ stack, layer, heads: first(to.heads), ffn: first(to.ffn) });
  }
  return { strategy, hidden: first(to.hidden), layers, drop };
}

function usage(message: string): MegahubError {
  return new MegahubError("USAGE", message);
}
