import { MegahubError } from "../errors.js";
import { argNumber, type MegatronCheckpoint, type MegatronShard } from "../formats/megatron/read.js";
import type { PyCall } from "../formats/torch/values.js";
import type { Recipe } from "../plan/recipe.js";
import { expand, LAYER, type Features, type ModelDims, type ParamRule, type SpecFlavour } from "./arch.js";
import { detectGptDims } from "./gpt/dims.js";
import { GPT_IGNORED, GPT_PARAMS } from "./gpt/spec.js";
import { mergeTp, tpDim } from "./parallel.js";

/**
 * A Megatron-Core model as global tensors: TP merged, PP stages and virtual chunks renumbered to global layers,
 * every spelling resolved to the local spec's canonical name. Readers of every format produce it; HF and Megatron
 * writers consume it.
 */
export interface McoreModel {
  readonly arch: "gpt";
  readonly dims: ModelDims;
  readonly features: Features;
  /** Which names the source used (writers keep them). */
  readonly flavour: SpecFlavour;
  readonly tensors: ReadonlyMap<string, Recipe>;
  readonly args?: PyCall | undefined;
  /** Tokens with meaning (the other embedding rows are padding), when known. */
  readonly trueVocab?: number | undefined;
  readonly notes: readonly string[];
  /**
   * Modules whose `_extra_state` entries the source carried (`decoder.layers.{layer}.self_attention.linear_qkv`,
   * `output_layer` …): a strict Megatron load expects the same set back. Undefined when the source was not Megatron.
   */
  readonly extraState?: ReadonlySet<string> | undefined;
}

const LAYER_KEY = /^decoder\.layers\.(\d+)\.(.+)$/;

export interface Spelling {
  readonly rule: ParamRule;
  readonly te: boolean;
}

export function spellings(rules: readonly ParamRule[]): Map<string, Spelling> {
  const out = new Map<string, Spelling>();
  for (const rule of rules) rule.megatron.forEach((m, i) => out.set(m, { rule, te: i > 0 }));
  return out;
}

/** Resolves a key to its rule and canonical name (with `layer` as its layer number), or undefined when unknown. */
export function resolveKey(key: string, table: Map<string, Spelling>, layer: (local: number) => number): { name: string; rule: ParamRule; te: boolean } | undefined {
  const m = LAYER_KEY.exec(key);
  const pattern = m ? `decoder.layers.${LAYER}.${m[2]}` : key;
  const hit = table.get(pattern);
  if (!hit) return undefined;
  const name = m ? hit.rule.megatron[0].replace(LAYER, String(layer(Number(m[1])))) : hit.rule.megatron[0];
  return { name, rule: hit.rule, te: hit.te };
}

/** Stage groups in global layer order: virtual chunk first, then pipeline stage (the interleaved schedule). */
function stageGroups(shards: readonly MegatronShard[]): MegatronShard[][] {
  const groups = new Map<string, MegatronShard[]>();
  for (const s of shards.filter((x) => x.ep === 0)) {
    const k = `${s.chunk ?? 0}/${s.pp}`;
    groups.set(k, [...(groups.get(k) ?? []), s]);
  }
  return [...groups.entries()]
    .sort(([a], [b]) => {
      const [ca, pa] = a.split("/").map(Number) as [number, number];
      const [cb, pb] = b.split("/").map(Number) as [number, number];
      return ca - cb || pa - pb;
    })
    .map(([, g]) => g.sort((x, y) => x.tp - y.tp));
}

/** Builds the global model of a legacy Megatron-Core checkpoint from headers; every unknown or missing tensor is listed at once. */
export function megatronMcoreModel(ckpt: MegatronCheckpoint, rules: readonly ParamRule[] = GPT_PARAMS): McoreModel {
  const table = spellings(rules);
  const tensors = new Map<string, Recipe>();
  const unknown = new Set<string>();
  const notes: string[] = [];
  let te = false;
  let offset = 0;
  const extraState = new Set<string>();
  const untieArg = ckpt.args?.field("untie_embeddings_and_output_weights");
  const groups = stageGroups(ckpt.shards);
  for (const [gi, group] of groups.entries()) {
    const first = group[0] as MegatronShard;
    const locals = [...new Set([...first.tensors.keys()].map((k) => LAYER_KEY.exec(k)?.[1]).filter((x): x is string => x !== undefined).map(Number))].sort((a, b) => a - b);
    locals.forEach((v, i) => {
      if (v !== i) throw new MegahubError("MODEL", `stage-local layer numbers are not 0..${locals.length - 1}: found ${locals.join(", ")}`, { file: first.file });
    });
    const isLast = gi === groups.length - 1;
    for (const key of first.keys) {
      if (key.endsWith("._extra_state")) extraState.add(key.slice(0, -"._extra_state".length).replace(/^decoder\.layers\.\d+\./, `decoder.layers.${LAYER}.`));
    }
    for (const key of first.tensors.keys()) {
      if (GPT_IGNORED.some((re) => re.test(key))) continue;
      const hit = resolveKey(key, table, (local) => offset + local);
      if (!hit) {
        unknown.add(key.replace(/^decoder\.layers\.\d+\./, "decoder.layers.N."));
        continue;
      }
      te ||= hit.te;
      // A tied model's last stage holds a copy of the embedding as output_layer (megatron-core-format.md §1.3).
      if (hit.name === "output_layer.weight" && untieArg === false && isLast && groups.length > 1) {
        notes.push("tied embeddings: the last pipeline stage's copy of the embedding (output_layer.weight) is not a separate weight");
        continue;
      }
      if (tensors.has(hit.name)) throw new MegahubError("MODEL", `${hit.name} appears on two pipeline stages`, { file: first.file, tensor: key });
      const parts = group.map((s) => {
        const t = s.tensors.get(key);
        if (!t) throw new MegahubError("MODEL", `TP rank ${s.tp} lacks a tensor rank 0 has`, { file: s.file, tensor: key });
        return ckpt.recipe(s, key);
      });
      checkParts(hit.rule, parts, group, key);
      tensors.set(hit.name, mergeTp(hit.rule.tp, parts));
    }
    offset += locals.length;
  }
  if (unknown.size > 0) {
    const list = [...unknown];
    const hint = list.some((k) => k.includes(".mlp.experts.") || k.includes(".mlp.router."))
      ? " (mixture-of-experts layers)"
      : list.some((k) => k.includes("position_embeddings"))
        ? " (learned absolute position embeddings)"
        : "";
    throw new MegahubError("MODEL", `${list.length} tensor names are not part of Megatron-Core GPT${hint}: ${list.slice(0, 6).join(", ")}${list.length > 6 ? ", …" : ""}`, {
      file: ckpt.layout.tree.name,
    });
  }
  const features = featuresOf(tensors);
  const where = ckpt.layout.tree.name;
  const gqa = ckpt.args?.field("group_query_attention");
  const dims = detectGptDims(
    (n) => tensors.get(n)?.shape,
    offset,
    {
      headDim: argNumber(ckpt.args, "kv_channels"),
      heads: argNumber(ckpt.args, "num_attention_heads"),
      kvHeads: gqa === true ? argNumber(ckpt.args, "num_query_groups") : gqa === false ? argNumber(ckpt.args, "num_attention_heads") : undefined,
    },
    where,
  );
  checkShapes(rules, tensors, dims, features, where);
  const trueVocab = argNumber(ckpt.args, "vocab_size");
  return { arch: "gpt", dims, features, flavour: te ? "te" : "local", tensors, args: ckpt.args, trueVocab, notes, extraState };
}

export function featuresOf(tensors: ReadonlyMap<string, unknown>): Features {
  const has = (n: string) => tensors.has(n);
  return {
    qkvBias: has("decoder.layers.0.self_attention.linear_qkv.bias"),
    qkNorm: has("decoder.layers.0.self_attention.q_layernorm.weight"),
    linearBias: has("decoder.layers.0.self_attention.linear_proj.bias"),
    normBias: has("decoder.layers.0.input_layernorm.bias"),
    untied: has("output_layer.weight"),
  };
}

/** Per-rank parts must agree outside the split dim (replicated ones everywhere). */
function checkParts(rule: ParamRule, parts: readonly Recipe[], group: readonly MegatronShard[], key: string): void {
  const dim = tpDim(rule.tp);
  const s0 = (parts[0] as Recipe).shape;
  parts.forEach((p, i) => {
    if (p.shape.length !== s0.length || p.shape.some((v, k) => k !== dim && v !== s0[k]) || p.dtype !== (parts[0] as Recipe).dtype) {
      throw new MegahubError("MODEL", `${p.dtype}[${p.shape.join(", ")}] on TP rank ${i} does not line up with rank 0's ${(parts[0] as Recipe).dtype}[${s0.join(", ")}]${dim === undefined ? " (replicated)" : ` outside dim ${dim}`}`, {
        file: group[i]?.file,
        tensor: key,
      });
    }
  });
}

/** Every expected parameter present with its expected global shape, every problem listed at once. */
export function checkShapes(rules: readonly ParamRule[], tensors: ReadonlyMap<string, Recipe>, d: ModelDims, features: Features, where: string): void {
  const problems: string[] = [];
  const expected = expand(rules, d, features);
  for (const p of expected) {
    const r = tensors.get(p.name);
    if (!r) problems.push(`missing ${p.name}`);
    else if (r.shape.join() !== p.shape.join()) problems.push(`${p.name} is [${r.shape.join(", ")}], expected [${p.shape.join(", ")}]`);
  }
  const known = new Set(expected.map((p) => p.name));
  for (const name of tensors.keys()) if (!known.has(name)) problems.push(`${name} is not expected for this model (a layer's optional part differs from layer 0?)`);
  if (problems.length > 0) {
    const dims = `hidden ${d.hidden}, ${d.heads} heads / ${d.kvHeads} groups × ${d.headDim}, FFN ${d.ffn}, ${d.layers} layers`;
    throw new MegahubError("MODEL", `${problems.length} problems (${dims}): ${problems.slice(0, 5).join("; ")}${problems.length > 5 ? "; …" : ""}`, { file: where });
  }
}
