import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { megatronGlobalModel } from "../src/ops/openba/global-model.js";
import { pruneVocab } from "../src/ops/vocab/run.js";
import { ID_MAP_FILE } from "../src/ops/vocab/remap.js";
import { parseSentencePieceModel } from "../src/formats/sentencepiece/model.js";
import { argNumber, openMegatron } from "../src/formats/megatron/read.js";
import { materializeRows } from "../src/plan/materialize.js";
import type { Manifest } from "../src/plan/manifest.js";
import { verifyModel } from "../src/verify/verify-model.js";
import { fixture, openSafetensors } from "./helpers/fixtures.js";
import { HAS_TORCH, PY_PRELUDE, runPython } from "./helpers/torch.js";
import { cleanupHfDirs, fixtureHfDir } from "./verify-helpers.js";

const TRAIN = fixture("corpus", "train.txt");
const SPIECE = fixture("tokenizer", "spiece.model");
const EMB = "language_model.embedding.word_embeddings.weight";

interface IdMap {
  old: { spSize: number; trueVocab: number; rows: number };
  new: { spSize: number; trueVocab: number; rows: number };
  old_to_new: Record<string, number>;
  kept_old_ids: number[];
  row_source: number[];
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "megahub-vocab-prune-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
  await cleanupHfDirs();
});

const readJson = async <T>(path: string): Promise<T> => JSON.parse(await readFile(path, "utf8")) as T;

/** The id map must describe the tokenizer it came with: piece i of the new model is piece kept_old_ids[i] of the old. */
async function checkIdMap(out: string, newSp: number): Promise<IdMap> {
  const map = await readJson<IdMap>(join(out, ID_MAP_FILE));
  const oldModel = parseSentencePieceModel(await readFile(SPIECE), SPIECE);
  const newModel = parseSentencePieceModel(await readFile(join(out, "spiece.model")), "new");
  expect(newModel.pieces).toHaveLength(newSp);
  expect(newModel.pieces.map((p) => p.piece)).toEqual(map.kept_old_ids.slice(0, newSp).map((o) => oldModel.pieces[o]?.piece));
  expect(map.kept_old_ids.slice(newSp)).toEqual(Array.from({ length: 103 }, (_, j) => 1000 + j));
  expect(map.kept_old_ids).toEqual([...map.kept_old_ids].sort((a, b) => a - b));
  expect(map.row_source.slice(0, map.new.trueVocab)).toEqual(map.kept_old_ids);
  // Padding: the source's own padding rows first (never a target, so they keep low logits), then Megatron's copies
  // of the last real row if more are needed.
  const oldPadding = Array.from({ length: map.old.rows - 1103 }, (_, j) => 1103 + j);
  const padding = map.new.rows - map.new.trueVocab;
  expect(map.row_source.slice(map.new.trueVocab)).toEqual([...oldPadding, ...new Array<number>(Math.max(0, padding - oldPadding.length)).fill(1102)].slice(0, padding));
  expect(Object.keys(map.old_to_new)).toHaveLength(map.new.trueVocab);
  return map;
}

describe("prune-vocab: HF in, HF out", () => {
  let original: string;
  let out: string;
  let map: IdMap;
  beforeAll(async () => {
    original = await fixtureHfDir("fp16-tp1");
    out = join(dir, "hf");
    await pruneVocab({ input: original, out, corpus: [TRAIN], keep: 600, tp: 2 });
    map = await checkIdMap(out, 600);
  });

  it("writes rows that are bit copies of the rows they came from, re-padded to 128 × TP 2, and every other tensor unchanged", async () => {
    expect(map.new).toEqual({ spSize: 600, trueVocab: 703, rows: 768 });
    const a = await openSafetensors(join(original, "model.safetensors"));
    const b = await openSafetensors(join(out, "model.safetensors"));
    try {
      expect(b.st.entries.map((e) => e.name).sort()).toEqual(a.st.entries.map((e) => e.name).sort());
      for (const e of a.st.entries) {
        const before = await a.bytes(e.name);
        const after = await b.bytes(e.name);
        if (e.name === "shared_embedding.weight" || e.name.startsWith("lm_head.")) {
          const rowBytes = before.length / 1152;
          expect(b.st.get(e.name)?.shape[0], e.name).toBe(768);
          const wrong = map.row_source.filter((o, n) => Buffer.compare(after.subarray(n * rowBytes, (n + 1) * rowBytes), before.subarray(o * rowBytes, (o + 1) * rowBytes)) !== 0);
          expect(wrong, e.name).toEqual([]);
        } else {
          expect(Buffer.compare(after, before), e.name).toBe(0);
        }
      }
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("writes consistent config and tokenizer files with the new ids, and the lineage", async () => {
    const config = await readJson<Record<string, unknown>>(join(out, "config.json"));
    const before = await readJson<Record<string, unknown>>(join(original, "config.json"));
    expect(config).toEqual({ ...before, vocab_size: 768 });
    expect(await readJson(join(out, "added_tokens.json"))).toEqual({ "<R>": 700, "<S>": 701, "<X>": 702 });
    const tc = await readJson<{ added_tokens_decoder: Record<string, { content: string }>; chat_template: string }>(join(out, "tokenizer_config.json"));
    expect(tc.added_tokens_decoder["600"]?.content).toBe("<extra_id_99>");
    expect(tc.added_tokens_decoder["699"]?.content).toBe("<extra_id_0>");
    expect(tc.added_tokens_decoder["702"]?.content).toBe("<X>");
    expect(tc.chat_template).toContain("<extra_id_0>");
    const stm = await readJson<{ additional_special_tokens: string[] }>(join(out, "special_tokens_map.json"));
    expect(stm.additional_special_tokens).toHaveLength(100);
    const manifest = await readJson<Manifest>(join(out, "megahub.json"));
    const step = manifest.lineage.at(-1);
    expect(step?.step).toBe("prune-vocab");
    expect(step?.settings).toMatchObject({ keep: 600, pieces: { before: 1000, after: 600 }, rows: { before: 1152, after: 768 }, idMap: ID_MAP_FILE });
    expect(manifest.model.vocab).toBe(768);
    expect(Object.keys(manifest.files)).toEqual(expect.arrayContaining(["spiece.model", ID_MAP_FILE, "model.safetensors"]));
  });
});

describe("prune-vocab: Megatron in, Megatron out", () => {
  let out: string;
  let map: IdMap;
  beforeAll(async () => {
    out = join(dir, "megatron");
    await pruneVocab({ input: fixture("megatron", "fp16-tp2"), out, tokenizer: SPIECE, corpus: [TRAIN], coverage: 0.9 });
    map = await checkIdMap(out, (await readJson<IdMap>(join(out, ID_MAP_FILE))).new.spSize);
  });

  it("re-indexes word_embeddings and lm_head.bias (bit copies), pads for the source's TP 2, and says so in args", async () => {
    expect(map.new.rows % 256).toBe(0);
    expect(map.new.rows).toBe(Math.ceil(map.new.trueVocab / 256) * 256);
    const src = await openMegatron(fixture("megatron", "fp16-tp2"));
    const dst = await openMegatron(out);
    try {
      expect(dst.layout.tp).toBe(2);
      expect(argNumber(dst.args, "padded_vocab_size")).toBe(map.new.rows);
      const a = megatronGlobalModel(src);
      const b = megatronGlobalModel(dst);
      expect(b.dims).toEqual({ ...a.dims, vocab: map.new.rows });
      for (const [key, recipe] of a.tensors) {
        const after = b.tensors.get(key);
        if (!after) throw new Error(`${key} missing`);
        const stats = { overflows: 0 };
        const before = await materializeRows(recipe, 0, recipe.shape[0] ?? 1, stats);
        const got = await materializeRows(after, 0, after.shape[0] ?? 1, stats);
        if (key === EMB || key === "lm_head.bias") {
          const rowBytes = before.length / 1280;
          const wrong = map.row_source.filter((o, n) => Buffer.compare(got.subarray(n * rowBytes, (n + 1) * rowBytes), before.subarray(o * rowBytes, (o + 1) * rowBytes)) !== 0);
          expect(wrong, key).toEqual([]);
        } else {
          expect(Buffer.compare(got, before), key).toBe(0);
        }
      }
    } finally {
      await src.close();
      await dst.close();
    }
  });

  it.skipIf(!HAS_TORCH)("torch agrees: rank shards concatenated give rows old[row_source], args.padded_vocab_size updated", () => {
    const code = `${PY_PRELUDE}
import glob, os
def ranks(root):
    files = sorted(glob.glob(os.path.join(root, 'iter_*', 'mp_rank_*', 'model_optim_rng.pt')))
    return [torch.load(f, map_location='cpu', weights_only=False) for f in files]
old, new = ranks(sys.argv[1]), ranks(sys.argv[2])
m = json.load(open(os.path.join(sys.argv[2], 'vocab-id-map.json')))
idx = torch.tensor(m['row_source'])
cat = lambda cs, f: torch.cat([f(c) for c in cs])
emb = lambda c: c['model']['language_model']['embedding']['word_embeddings']['weight']
bias = lambda c: c['model']['lm_head']['bias']
ok = torch.equal(cat(new, emb), cat(old, emb)[idx]) and torch.equal(cat(new, bias), cat(old, bias)[idx])
print(json.dumps({'ok': ok, 'padded': new[0]['args'].padded_vocab_size, 'ranks': len(new), 'rows': [emb(c).shape[0] for c in new]}))
`;
    const r = JSON.parse(runPython(code, [fixture("megatron", "fp16-tp2"), out])) as { ok: boolean; padded: number; ranks: number; rows: number[] };
    expect(r).toEqual({ ok: true, padded: map.new.rows, ranks: 2, rows: [map.new.rows / 2, map.new.rows / 2] });
  });

  it("writes the pruned spiece.model beside the checkpoint", async () => {
    expect((await readdir(out)).sort()).toEqual(["iter_0002000", "latest_checkpointed_iteration.txt", "megahub.json", "spiece.model", ID_MAP_FILE].sort());
  });
});

describe("prune-vocab: logits on kept ids equal the original's (megahub verify --against --id-map)", () => {
  it("a Megatron fp32 checkpoint pruned straight to HF matches the unpruned HF model on every kept id", async () => {
    const out = join(dir, "verify");
    const res = await pruneVocab({ input: fixture("megatron", "fp32-tp1"), out, tokenizer: SPIECE, corpus: [TRAIN], keep: 500, to: "hf" });
    expect(res.remap.new).toEqual({ spSize: 500, trueVocab: 603, rows: 640 });
    const original = await fixtureHfDir("fp32-tp1");
    const v = await verifyModel(out, { against: original, idMap: join(out, ID_MAP_FILE), device: "cpu", record: false });
    expect(v.failures).toEqual([]);
    expect(v.passed).toBe(true);
    expect(v.metrics.vocab).toBe(603);
    expect(v.metrics.maxAbs).toBe(0);
    expect(v.notes.join(" ")).toContain("kept ids");
  });
});

describe("prune-vocab: --dry-run", () => {
  it("plans from the real counts, writes only the report, and the plan's sizes are the output's", async () => {
    const out = join(dir, "dry");
    const report = join(dir, "dry.html");
    const res = await pruneVocab({ input: fixture("megatron", "fp16-tp1"), out, tokenizer: SPIECE, corpus: [TRAIN], keep: 700, dryRun: true, report });
    expect(existsSync(out)).toBe(false);
    expect(res.execution).toBeUndefined();
    expect(res.remap.new).toEqual({ spSize: 700, trueVocab: 803, rows: 896 });
    expect(res.report.params.before.total - res.report.params.after.total).toBe((1152 - 896) * (64 + 1));
    const html = await readFile(report, "utf8");
    expect(html).toContain("<svg");
    expect(html).toContain('data-chosen="700"');
    expect(html).not.toContain("<script");
    const real = await pruneVocab({ input: fixture("megatron", "fp16-tp1"), out, tokenizer: SPIECE, corpus: [TRAIN], keep: 700 });
    const written = real.execution?.files ?? {};
    expect(Object.fromEntries(res.summary.files.map((f) => [f.path, f.bytes]))).toEqual(Object.fromEntries(Object.entries(written).map(([k, v]) => [k, v.bytes])));
  });
});
