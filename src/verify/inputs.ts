import { readFile } from "node:fs/promises";
import { MegahubError } from "../errors.js";
import type { ForwardInputs } from "./reference.js";

/**
 * Deterministic test inputs for comparing two models when the user brings none: two rows, the second with encoder
 * padding, token ids drawn from `pool` (a fixed-seed generator, so runs are repeatable), decoder starting with
 * `decoderStart`.
 */
export function syntheticInputs(pool: readonly number[], decoderStart: number, seed = 1234): ForwardInputs {
  if (pool.length === 0) throw new RangeError("no token ids to draw inputs from");
  const batch = 2;
  const encoderLength = 12;
  const decoderLength = 8;
  let state = seed >>> 0;
  // mulberry32: tiny, seedable, good enough to pick token ids.
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = () => BigInt(pool[Math.floor(next() * pool.length)] as number);
  const inputIds = new BigInt64Array(batch * encoderLength);
  const attentionMask = new BigInt64Array(batch * encoderLength).fill(1n);
  const decoderInputIds = new BigInt64Array(batch * decoderLength);
  for (let b = 0; b < batch; b++) {
    for (let s = 0; s < encoderLength; s++) {
      const padded = b === 1 && s >= encoderLength - 4;
      inputIds[b * encoderLength + s] = padded ? 0n : pick();
      if (padded) attentionMask[b * encoderLength + s] = 0n;
    }
    for (let t = 0; t < decoderLength; t++) {
      decoderInputIds[b * decoderLength + t] = t === 0 ? BigInt(decoderStart) : pick();
    }
  }
  return { batch, encoderLength, decoderLength, inputIds, attentionMask, decoderInputIds };
}

/**
 * Reads a vocabulary id map, old id (the reference model) → new id (the pruned model). Accepted shapes:
 * `{"old": new, …}`, `{"old_to_new": {…}}`, `[[old, new], …]`, or `[old₀, old₁, …]` (index = new id, the kept
 * list a pruning step writes). Fails when two old ids map to one new id.
 */
export async function readIdMap(path: string): Promise<Map<number, number>> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw new MegahubError("USAGE", `cannot read id map: ${(e as Error).message}`, { file: path });
  }
  if (typeof raw === "object" && raw !== null && !Array.isArray(raw) && "old_to_new" in raw) {
    raw = (raw as { old_to_new: unknown }).old_to_new;
  }
  const pairs: [number, number][] = [];
  if (Array.isArray(raw)) {
    raw.forEach((e: unknown, i) => {
      if (Array.isArray(e) && e.length === 2) pairs.push([Number(e[0]), Number(e[1])]);
      else pairs.push([Number(e), i]);
    });
  } else if (typeof raw === "object" && raw !== null) {
    for (const [k, v] of Object.entries(raw)) pairs.push([Number(k), Number(v)]);
  }
  const map = new Map<number, number>();
  const seen = new Set<number>();
  for (const [o, n] of pairs) {
    if (!Number.isSafeInteger(o) || !Number.isSafeInteger(n) || o < 0 || n < 0) {
      throw new MegahubError("USAGE", `id map entry ${o} → ${n} is not a pair of non-negative integers`, { file: path });
    }
    if (seen.has(n)) throw new MegahubError("USAGE", `id map sends two old ids to new id ${n}`, { file: path });
    seen.add(n);
    map.set(o, n);
  }
  if (map.size === 0) throw new MegahubError("USAGE", "id map is empty", { file: path });
  return map;
}

/** Maps every input id through `map`; an id the map drops cannot be fed to the pruned model. */
export function remapInputs(x: ForwardInputs, map: ReadonlyMap<number, number>): ForwardInputs {
  const remap = (ids: BigInt64Array, what: string, mask?: BigInt64Array) =>
    ids.map((id, i) => {
      if (mask && mask[i] === 0n) return id;
      const n = map.get(Number(id));
      if (n === undefined) {
        throw new MegahubError("USAGE", `${what} holds id ${id}, which the id map does not keep; use inputs made of kept ids`);
      }
      return BigInt(n);
    });
  const inputIds = remap(x.inputIds, "input_ids", x.attentionMask);
  // A decoder-only batch's decoder ids are its input ids (padding included).
  return { ...x, inputIds, decoderInputIds: x.decoderOnly === true ? inputIds : remap(x.decoderInputIds, "decoder_input_ids") };
}

/** Gathers logits [B,T,V] at `ids` along the last axis → [B,T,ids.length]. */
export function selectVocab(logits: Float32Array, rows: number, vocab: number, ids: readonly number[]): Float32Array {
  const out = new Float32Array(rows * ids.length);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < ids.length; k++) out[r * ids.length + k] = logits[r * vocab + (ids[k] as number)] as number;
  }
  return out;
}
