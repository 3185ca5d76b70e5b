import { MegahubError } from "../../errors.js";
import type { TensorRef } from "../../checkpoints/hf-safetensors.js";
import type { ByteSource } from "../../io/byte-source.js";
import type { PlannedTensor } from "../../plan/plan.js";
import { cast, concat, readTensor, select, type Recipe } from "../../plan/recipe.js";
import { canCast } from "../../tensors/cast.js";
import type { Dtype } from "../../tensors/dtypes.js";
import { expand, nameAt, type Features, type ModelDims, type ParamRule } from "../arch.js";
import { range } from "../parallel.js";
import { qkvRows } from "./dims.js";
import { GPT_PARAMS } from "./spec.js";

/** How a table's HF names become a class's (Mixtral renames the Qwen-MoE names of the MoE table). */
export interface HfNaming {
  readonly rules: readonly ParamRule[];
  readonly hfName: (name: string) => string;
}
const DENSE: HfNaming = { rules: GPT_PARAMS, hfName: (n) => n };

/** HF tensors of a global GPT model: q/k/v and gate/up split out, vocabulary rows trimmed to `rows`. */
export function gptHfTensors(tensors: ReadonlyMap<string, Recipe>, d: ModelDims, f: Features, rows: number, target?: Dtype, naming: HfNaming = DENSE): PlannedTensor[] {
  const qkv = qkvRows(d);
  const out: PlannedTensor[] = [];
  for (const p of expand(naming.rules, d, f)) {
    let r = tensors.get(p.name);
    if (!r) throw new MegahubError("MODEL", "missing from the model", { tensor: p.name });
    if (target && !canCast(r.dtype, target)) throw new MegahubError("USAGE", `cannot cast ${r.dtype} to ${target}`, { tensor: p.name });
    if (target) r = cast(r, target);
    const hf = p.rule.hf;
    const at = (n: string) => naming.hfName(p.layer === undefined ? n : nameAt(n, p.layer, p.expert));
    if (hf === null) throw new MegahubError("UNSUPPORTED", "has no counterpart in the Llama-family HF classes", { tensor: p.name });
    if (typeof hf === "string") {
      out.push({ name: at(hf), recipe: p.rule.tp === "vocab" && rows !== d.vocab ? select(r, 0, range(0, rows)) : r });
    } else if (hf.by === "qkv") {
      const [q, k, v] = hf.split as [string, string, string];
      out.push({ name: at(q), recipe: select(r, 0, qkv.q) }, { name: at(k), recipe: select(r, 0, qkv.k) }, { name: at(v), recipe: select(r, 0, qkv.v) });
    } else {
      const n = (r.shape[0] as number) / hf.split.length;
      hf.split.forEach((name, i) => out.push({ name: at(name), recipe: select(r, 0, range(i * n, (i + 1) * n)) }));
    }
  }
  return out;
}

/**
 * The global (Megatron-named) tensors of an HF GPT directory: q/k/v fused back per query group, gate/up stacked,
 * every read a byte range of a shard. Unknown or missing HF names are listed at once.
 */
export function gptFromHfTensors(
  refs: ReadonlyMap<string, TensorRef>,
  source: (file: string) => ByteSource,
  d: ModelDims,
  f: Features,
  where: string,
  naming: HfNaming = DENSE,
): Map<string, Recipe> {
  const used = new Set<string>();
  const missing: string[] = [];
  const take = (name: string): Recipe | undefined => {
    const t = refs.get(name);
    if (!t) {
      missing.push(name);
      return undefined;
    }
    used.add(name);
    return readTensor(source(t.file), t.offset, t.dtype, t.shape, `${t.file}:${name}`);
  };
  const qkv = qkvRows(d);
  const perGroupQ = (d.heads / d.kvHeads) * d.headDim;
  const out = new Map<string, Recipe>();
  for (const p of expand(naming.rules, d, f)) {
    const hf = p.rule.hf;
    const at = (n: string) => naming.hfName(p.layer === undefined ? n : nameAt(n, p.layer, p.expert));
    if (hf === null) continue;
    if (typeof hf === "string") {
      const r = take(at(hf));
      if (r) out.set(p.name, r);
      continue;
    }
    const parts = hf.split.map((n) => take(at(n)));
    if (parts.some((x) => x === undefined)) continue;
    const [a, b, c] = parts as Recipe[];
    if (hf.by === "parts") {
      out.set(p.name, concat(0, parts as Recipe[]));
    } else {
      const rows = (r: Recipe | undefined, want: number, label: string) => {
        if ((r?.shape[0] ?? 0) !== want) throw new MegahubError("MODEL", `${label} has ${r?.shape[0]} rows, expected ${want}`, { file: where, tensor: p.name });
      };
      rows(a, qkv.q.length, "q_proj");
      rows(b, qkv.k.length, "k_proj");
      rows(c, qkv.v.length, "v_proj");
      const groups: Recipe[] = [];
      for (let g = 0; g < d.kvHeads; g++) {
        groups.push(
          select(a as Recipe, 0, range(g * perGroupQ, (g + 1) * perGroupQ)),
          select(b as Recipe, 0, range(g * d.headDim, (g + 1) * d.headDim)),
          select(c as Recipe, 0, range(g * d.headDim, (g + 1) * d.headDim)),
        );
      }
      out.set(p.name, concat(0, groups));
    }
  }
  const extra = [...refs.keys()].filter((n) => !used.has(n) && !/rotary_emb\.inv_freq$/.test(n));
  if (missing.length > 0 || extra.length > 0) {
    const parts = [
      missing.length > 0 ? `missing ${missing.slice(0, 4).join(", ")}${missing.length > 4 ? ` (+${missing.length - 4})` : ""}` : "",
      extra.length > 0 ? `unexpected ${extra.slice(0, 4).join(", ")}${extra.length > 4 ? ` (+${extra.length - 4})` : ""}` : "",
    ].filter(Boolean);
    throw new MegahubError("MODEL", `not the expected ${d.moe ? "mixture-of-experts" : "Llama-family"} tensors: ${parts.join("; ")}`, { file: where });
  }
  return out;
}
