import { MegahubError } from "../errors.js";
import { argNumber, type MegatronCheckpoint, type MegatronShard } from "../formats/megatron/read.js";
import type { PyCall } from "../formats/torch/values.js";
import type { Recipe } from "../plan/recipe.js";
import { EXPERT, expand, LAYER, nameAt, type Features, type ModelDims, type ParamRule, type SpecFlavour } from "./arch.js";
import { detectGptDims } from "./gpt/dims.js";
import { GPT_IGNORED } from "./gpt/spec.js";
import { denseFfnShim, detectMoeDims, withMoeFeatures, type McoreMoe } from "./moe/dims.js";
import { routingFromArgs } from "./moe/hf-config.js";
import { expertKey, MCORE_PARAMS } from "./moe/spec.js";
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
  /** Mixture of experts (dims.moe holds the shapes): expert layout and routing. */
  readonly moe?: McoreMoe | undefined;
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
  for (const rule of rules) {
    rule.megatron.forEach((m, i) => out.set(m, { rule, te: i > 0 }));
    if (rule.grouped !== undefined) out.set(rule.grouped, { rule, te: true });
  }
  return out;
}

export interface Resolved {
  readonly name: string;
  readonly rule: ParamRule;
  readonly te: boolean;
  /** The local expert index of a per-expert key. */
  readonly local?: number | undefined;
  readonly grouped?: boolean;
}

/**
 * Resolves a key to its rule and canonical name (with `layer` as its layer number and `expert` turning a local
 * expert index into the global one), or undefined when unknown.
 */
export function resolveKey(key: string, table: Map<string, Spelling>, layer: (local: number) => number, expert: (local: number) => number = (j) => j): Resolved | undefined {
  const ek = expertKey(key);
  const m = LAYER_KEY.exec(ek?.pattern ?? key);
  const pattern = m ? `decoder.layers.${LAYER}.${m[2]}` : key;
  const hit = table.get(pattern);
  if (!hit || hit.rule.megatron[0].includes(EXPERT) !== (ek !== undefined)) return undefined;
  const canonical = hit.rule.megatron[0];
  const name = m ? nameAt(canonical, layer(Number(m[1])), ek ? expert(ek.local) : undefined) : canonical;
  return { name, rule: hit.rule, te: hit.te, local: ek?.local, grouped: ek !== undefined && pattern === hit.rule.grouped };
}

/** Stage groups in global layer order: virtual chunk first, then pipeline stage (the interleaved schedule); every EP rank's shards. */
function stageGroups(shards: readonly MegatronShard[]): MegatronShard[][] {
  const groups = new Map<string, MegatronShard[]>();
  for (const s of shards) {
    const k = `${s.chunk ?? 0}/${s.pp}`;
    groups.set(k, [...(groups.get(k) ?? []), s]);
  }
  return [...groups.entries()]
    .sort(([a], [b]) => {
      const [ca, pa] = a.split("/").map(Number) as [number, number];
      const [cb, pb] = b.split("/").map(Number) as [number, number];
      return ca - cb || pa - pb;
    })
    .map(([, g]) => g.sort((x, y) => x.ep - y.ep || x.tp - y.tp));
}

/** One stage group's shards per EP rank, each in TP order. */
function byEp(group: readonly MegatronShard[]): MegatronShard[][] {
  const out: MegatronShard[][] = [];
  for (const s of group) (out[s.ep] ??= []).push(s);
  return out;
}

/** The global expert count (a router's rows) of a stage, for local → global expert numbers. */
function routerRows(shard: MegatronShard): number | undefined {
  for (const [k, t] of shard.tensors) if (k.endsWith(".mlp.router.weight")) return t.shape[0];
  return undefined;
}

/** Builds the global model of a legacy Megatron-Core checkpoint from headers; every unknown or missing tensor is listed at once. */
export function megatronMcoreModel(ckpt: MegatronCheckpoint, rules: readonly ParamRule[] = MCORE_PARAMS): McoreModel {
  const table = spellings(rules);
  const tensors = new Map<string, Recipe>();
  const unknown = new Set<string>();
  const notes: string[] = [];
  let te = false;
  let grouped = false;
  let offset = 0;
  const extraState = new Set<string>();
  const untieArg = ckpt.args?.field("untie_embeddings_and_output_weights");
  const groups = stageGroups(ckpt.shards);
  const epSize = ckpt.parallel.ep;
  checkExpertTp(ckpt);
  for (const [gi, fullGroup] of groups.entries()) {
    const eps = byEp(fullGroup);
    const group = eps[0] as MegatronShard[];
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
      if (hit.local !== undefined) continue; // experts: every EP rank's, below
      if (tensors.has(hit.name)) throw new MegahubError("MODEL", `${hit.name} appears on two pipeline stages`, { file: first.file, tensor: key });
      const parts = tpParts(ckpt, group, key);
      checkParts(hit.rule, parts, group, key);
      tensors.set(hit.name, mergeTp(hit.rule.tp, parts));
    }
    const experts = routerRows(first);
    if (experts !== undefined && experts % epSize !== 0) {
      throw new MegahubError("MODEL", `${experts} experts do not split over EP ${epSize}`, { file: first.file, tensor: "mlp.router.weight" });
    }
    const perRank = experts === undefined ? 0 : experts / epSize;
    const moeLayers = locals.filter((l) => first.tensors.has(`decoder.layers.${l}.mlp.router.weight`));
    for (const [ep, shards] of eps.entries()) {
      const head = shards[0] as MegatronShard;
      if (ep > 0) checkDenseCopy(ckpt, group, shards);
      checkLocalExperts(head, moeLayers, perRank);
      for (const key of head.tensors.keys()) {
        const hit = resolveKey(key, table, (local) => offset + local, (j) => ep * perRank + j);
        // an unknown expert name on EP rank > 0 (EP rank 0's are listed above; dense names were checked against rank 0)
        if (!hit && expertKey(key) !== undefined && !GPT_IGNORED.some((re) => re.test(key))) unknown.add(key.replace(/^decoder\.layers\.\d+\./, "decoder.layers.N."));
        if (!hit || hit.local === undefined) continue;
        if (hit.local >= perRank) {
          throw new MegahubError("MODEL", `local expert ${hit.local} on EP rank ${ep}, but ${experts ?? 0} experts over EP ${epSize} give ${perRank} per rank`, { file: head.file, tensor: key });
        }
        te ||= hit.te;
        grouped ||= hit.grouped === true;
        if (tensors.has(hit.name)) throw new MegahubError("MODEL", `${hit.name} appears twice (two EP ranks or stages)`, { file: head.file, tensor: key });
        const parts = tpParts(ckpt, shards, key);
        checkParts(hit.rule, parts, shards, key);
        tensors.set(hit.name, mergeTp(hit.rule.tp, parts));
      }
    }
    offset += locals.length;
  }
  if (unknown.size > 0) {
    const list = [...unknown];
    const hint = list.some((k) => k.includes(".mlp.experts.") || k.includes(".mlp.router."))
      ? " (mixture-of-experts parts not mapped: the legacy GroupedMLP's weight1/weight2, expert biases)"
      : list.some((k) => k.includes("position_embeddings"))
        ? " (learned absolute position embeddings)"
        : "";
    throw new MegahubError("MODEL", `${list.length} tensor names are not part of Megatron-Core GPT${hint}: ${list.slice(0, 6).join(", ")}${list.length > 6 ? ", …" : ""}`, {
      file: ckpt.layout.tree.name,
    });
  }
  const where = ckpt.layout.tree.name;
  const { dims, features } = globalDims(rules, tensors, offset, ckpt.args, where);
  const trueVocab = argNumber(ckpt.args, "vocab_size");
  const moeFacts = dims.moe ? { moe: { layout: grouped ? ("grouped" as const) : ("sequential" as const), routing: routingFromArgs(ckpt.args) } } : {};
  return { arch: "gpt", dims, features, flavour: te ? "te" : "local", tensors, args: ckpt.args, trueVocab, ...moeFacts, notes, extraState };
}

/**
 * Dims and features of global (canonical) tensors, dense or mixture-of-experts, checked against the parameter table:
 * what every Megatron reader (legacy rank files, torch_dist) derives the same way.
 */
export function globalDims(rules: readonly ParamRule[], tensors: ReadonlyMap<string, Recipe>, layers: number, args: PyCall | undefined, where: string): { dims: ModelDims; features: Features } {
  const shapeOf = (n: string) => tensors.get(n)?.shape;
  const moe = detectMoeDims(shapeOf, layers, where);
  const features = withMoeFeatures(featuresOf(tensors), moe, tensors);
  const gqa = args?.field("group_query_attention");
  const dense = detectGptDims(
    denseFfnShim(shapeOf, moe, argNumber(args, "ffn_hidden_size")),
    layers,
    {
      headDim: argNumber(args, "kv_channels"),
      heads: argNumber(args, "num_attention_heads"),
      kvHeads: gqa === true ? argNumber(args, "num_query_groups") : gqa === false ? argNumber(args, "num_attention_heads") : undefined,
    },
    where,
  );
  const dims: ModelDims = moe ? { ...dense, moe } : dense;
  checkShapes(rules, tensors, dims, features, where);
  return { dims, features };
}

/** Every MoE layer of an EP rank's file holds local experts 0 … E/EP − 1, each with fc1 and fc2. */
function checkLocalExperts(shard: MegatronShard, moeLayers: readonly number[], perRank: number): void {
  const found = new Map<string, number>();
  for (const key of shard.tensors.keys()) {
    const ek = expertKey(key);
    const layer = ek && LAYER_KEY.exec(ek.pattern);
    if (ek && layer && /linear_fc[12]\.weight/.test(ek.pattern)) found.set(`${layer[1]}/${ek.local}`, (found.get(`${layer[1]}/${ek.local}`) ?? 0) + 1);
  }
  for (const l of moeLayers) {
    const lacking = Array.from({ length: perRank }, (_, j) => j).filter((j) => (found.get(`${l}/${j}`) ?? 0) < 2);
    if (lacking.length > 0) {
      throw new MegahubError("MODEL", `EP rank ${shard.ep} lacks local expert${lacking.length > 1 ? "s" : ""} ${lacking.join(", ")} of its ${perRank} in stage-local layer ${l} (global experts ${lacking.map((j) => shard.ep * perRank + j).join(", ")}): fc1 and fc2 expected`, {
        file: shard.file,
      });
    }
  }
}

/** One key from every TP rank of one EP rank's shards. */
function tpParts(ckpt: MegatronCheckpoint, shards: readonly MegatronShard[], key: string): Recipe[] {
  return shards.map((s) => {
    if (!s.tensors.get(key)) throw new MegahubError("MODEL", `TP rank ${s.tp} lacks a tensor rank 0 has`, { file: s.file, tensor: key });
    return ckpt.recipe(s, key);
  });
}

/**
 * Every EP rank's file carries the dense (non-expert) weights again (megatron-core-format.md §1.1): they are taken
 * from EP rank 0; the other copies must hold the same names, dtypes and shapes.
 */
function checkDenseCopy(ckpt: MegatronCheckpoint, ep0: readonly MegatronShard[], epN: readonly MegatronShard[]): void {
  const dense = (s: MegatronShard) => [...s.tensors.keys()].filter((k) => expertKey(k) === undefined && !GPT_IGNORED.some((re) => re.test(k)));
  ep0.forEach((a, tp) => {
    const b = epN[tp] as MegatronShard;
    const want = dense(a);
    const got = new Set(dense(b));
    const missing = want.filter((k) => !got.has(k));
    const extra = [...got].filter((k) => !a.tensors.has(k));
    if (missing.length > 0 || extra.length > 0) {
      const list = [...missing.map((k) => `lacks ${k}`), ...extra.map((k) => `has ${k} that EP rank 0 lacks`)];
      throw new MegahubError("MODEL", `EP rank ${b.ep}'s copy of the dense weights differs from EP rank 0's: ${list.slice(0, 3).join(", ")}${list.length > 3 ? ", …" : ""}`, { file: b.file });
    }
    for (const k of want) {
      const x = ckpt.recipe(a, k);
      const y = ckpt.recipe(b, k);
      if (x.dtype !== y.dtype || x.shape.join() !== y.shape.join()) {
        throw new MegahubError("MODEL", `EP rank ${b.ep} holds ${y.dtype}[${y.shape.join(", ")}], EP rank 0 ${x.dtype}[${x.shape.join(", ")}]: the dense weights of EP files must agree`, { file: b.file, tensor: k });
      }
    }
  });
}

/** Legacy files are named by the dense TP rank; expert TP other than TP leaves a partial grid megahub does not read. */
function checkExpertTp(ckpt: MegatronCheckpoint): void {
  const etp = argNumber(ckpt.args, "expert_tensor_parallel_size");
  if (ckpt.parallel.ep > 1 || ckpt.shards.some((s) => [...s.tensors.keys()].some((k) => expertKey(k) !== undefined))) {
    if (etp !== undefined && etp !== ckpt.parallel.tp) {
      throw new MegahubError("UNSUPPORTED", `expert_tensor_parallel_size ${etp} differs from TP ${ckpt.parallel.tp}: legacy files of decoupled expert TP are not read (reshard it in Megatron with equal TP and expert TP)`, {
        file: ckpt.layout.tree.name,
      });
    }
  }
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
