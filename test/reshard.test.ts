import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { cp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { convertMegatronToHf } from "../src/ops/openba/convert.js";
import { reshardMegatron } from "../src/ops/openba/reshard.js";
import { hfToMegatron } from "../src/ops/openba/to-megatron.js";
import { isMegahubError } from "../src/errors.js";
import { fixture, hasFixture, openSafetensors } from "./helpers/fixtures.js";
import { megahub } from "./helpers/cli.js";
import { HAS_TORCH, runPython } from "./helpers/torch.js";

const work = mkdtempSync(join(tmpdir(), "megahub-reshard-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const out = (tag = "out") => join(work, `${tag}${n++}`);

async function hfBytes(dir: string): Promise<Map<string, Buffer>> {
  const f = await openSafetensors(join(dir, "model.safetensors"));
  const m = new Map<string, Buffer>();
  for (const e of f.st.entries) m.set(e.name, Buffer.from(await f.bytes(e.name)));
  await f.close();
  return m;
}

const VOCAB_ROWS = new Set(["shared_embedding.weight", "lm_head.weight", "lm_head.bias"]);

/**
 * Converting after a chain of re-splits must give the very bytes of converting the source. When a TP in the chain
 * trimmed the vocabulary padding, the rows it re-created must be copies of the last real row (Megatron's rule).
 */
async function expectSameModel(a: string, b: string, rowsKept?: { rows: number; lastReal: number }): Promise<void> {
  const [x, y] = [await hfBytes(a), await hfBytes(b)];
  expect([...y.keys()].sort()).toEqual([...x.keys()].sort());
  for (const [k, v] of x) {
    const w = y.get(k) as Buffer;
    if (!rowsKept || !VOCAB_ROWS.has(k)) {
      expect(Buffer.compare(v, w), k).toBe(0);
      continue;
    }
    const rowBytes = v.byteLength / (k === "lm_head.bias" ? v.byteLength / 2 : v.byteLength / (2 * 64));
    const keep = rowsKept.rows * rowBytes;
    expect(Buffer.compare(v.subarray(0, keep), w.subarray(0, keep)), `${k} real rows`).toBe(0);
    const last = w.subarray(rowsKept.lastReal * rowBytes, (rowsKept.lastReal + 1) * rowBytes);
    for (let off = keep; off < w.byteLength; off += rowBytes) {
      expect(Buffer.compare(w.subarray(off, off + rowBytes), last), `${k} padding row ${off / rowBytes}`).toBe(0);
    }
  }
}

const hasFixtures = hasFixture("megatron", "fp16-tp1") && hasFixture("megatron", "fp16-tp2") && hasFixture("tokenizer", "spiece.model");
const tokenizer = fixture("tokenizer", "spiece.model");

describe.skipIf(!hasFixtures)("reshard round trips are bit-exact", () => {
  it("TP 1 → 2 → 4 → 1", async () => {
    const src = fixture("megatron", "fp16-tp1");
    const t2 = out();
    const t4 = out();
    const t1 = out();
    await reshardMegatron({ input: src, out: t2, tp: 2, tokenizer });
    await reshardMegatron({ input: t2, out: t4, tp: 4, tokenizer });
    const res = await reshardMegatron({ input: t4, out: t1, tp: 1, tokenizer });
    expect(res.dropped).toEqual([]); // t4 has no optimizer state left to drop
    const [a, b] = [out("hf"), out("hf")];
    await convertMegatronToHf({ input: src, out: a });
    await convertMegatronToHf({ input: t1, out: b });
    await expectSameModel(a, b);
  });

  it("TP 2 → 3 (not a power of two) → 2", async () => {
    const src = fixture("megatron", "fp16-tp2");
    const t3 = out();
    const t2 = out();
    const r3 = await reshardMegatron({ input: src, out: t3, tp: 3, tokenizer });
    expect(r3.dropped).toContain("optimizer");
    expect(r3.dropped).toContain("rng_state");
    await reshardMegatron({ input: t3, out: t2, tp: 2, tokenizer });
    const [a, b] = [out("hf"), out("hf")];
    await convertMegatronToHf({ input: src, out: a });
    await convertMegatronToHf({ input: t2, out: b });
    // TP 3 pads 1103 tokens to 1152 rows: rows 1152..1279 come back as copies of row 1102.
    await expectSameModel(a, b, { rows: r3.paddedVocab, lastReal: (await trueVocab()) - 1 });
  });

  it("convert ∘ to-megatron gives back the model tensors", async () => {
    const src = fixture("megatron", "fp16-tp2");
    const hf = out("hf");
    await convertMegatronToHf({ input: src, out: hf, tokenizer });
    const back = out();
    await hfToMegatron({ input: hf, out: back, tp: 2 });
    const [a, b] = [out("hf"), out("hf")];
    await convertMegatronToHf({ input: src, out: a });
    await convertMegatronToHf({ input: back, out: b });
    await expectSameModel(a, b);
  });
});

describe.skipIf(!hasFixtures)("bad input", () => {
  it("refuses a TP that does not divide the heads, naming the numbers", async () => {
    const target = out();
    const err = await reshardMegatron({ input: fixture("megatron", "fp16-tp1"), out: target, tp: 5, tokenizer }).catch((e: unknown) => e);
    expect(isMegahubError(err) && err.message).toMatch(/TP 5 does not divide the 12 attention heads/);
    expect(existsSync(target)).toBe(false);
  });

  it("refuses to guess the vocabulary when padding must change", async () => {
    // 1152 rows are not a multiple of 128 × 4 and Megatron's args do not record the tokenizer's size.
    const err = await reshardMegatron({ input: fixture("megatron", "fp16-tp1"), out: out(), tp: 4 }).catch((e: unknown) => e);
    expect(isMegahubError(err) && err.message).toMatch(/1152 embedding rows are not a multiple of 128 × TP 4.*--true-vocab-size/);
  });

  it("a corrupt shard is a clear error and nothing is written", async () => {
    const copy = out("corrupt");
    await cp(fixture("megatron", "fp16-tp2"), copy, { recursive: true });
    const iter = readdirSync(copy).find((d) => d.startsWith("iter_")) as string;
    const file = join(copy, iter, "mp_rank_01", "model_optim_rng.pt");
    const bytes = await readFile(file);
    writeFileSync(file, bytes.subarray(0, bytes.length >> 1));
    const target = out();
    const r = megahub(["reshard", copy, "--out", target, "--tp", "4", "--tokenizer", tokenizer]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/mp_rank_01/);
    expect(existsSync(target)).toBe(false);
    expect(readdirSync(work).some((f) => f.startsWith(".") && f.includes("tmp"))).toBe(false);
  });
});

describe.skipIf(!hasFixtures || !HAS_TORCH)("torch loads what megahub writes", () => {
  it("the built CLI's zip CRCs (computed on the hash workers) pass Python's zipfile check, with and without --no-hash", () => {
    for (const flags of [[], ["--no-hash"]]) {
      const target = out();
      const r = megahub(["reshard", fixture("megatron", "fp16-tp2"), "--out", target, "--tp", "4", "--true-vocab-size", "1000", "--quiet", ...flags]);
      expect(r.code, r.stderr).toBe(0);
      const files = readdirSync(join(target, "iter_0002000")).map((rank) => join(target, "iter_0002000", rank, "model_optim_rng.pt"));
      expect(files.length).toBe(4);
      const bad = runPython("import sys, zipfile\nfor p in sys.argv[1:]:\n    print(zipfile.ZipFile(p).testzip())", files);
      expect(bad.trim().split("\n")).toEqual(["None", "None", "None", "None"]);
    }
  });

  it("same keys, nesting, dtypes, shapes, values and args as the shards torch wrote", async () => {
    const target = out();
    await reshardMegatron({ input: fixture("megatron", "fp16-tp1"), out: target, tp: 2, tokenizer });
    const report = runPython(
      `
import sys, types, enum, torch, json, argparse, collections
for m in ["megatron", "megatron.core"]: sys.modules.setdefault(m, types.ModuleType(m))
e = types.ModuleType("megatron.core.enums")
class ModelType(enum.Enum):
    encoder_or_decoder = 1
    encoder_and_decoder = 2
    retro_encoder = 3
    retro_decoder = 4
e.ModelType = ModelType
sys.modules["megatron.core.enums"] = e
import os, glob
ours_root, ref_root, true_vocab = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rank_files(root):
    it = open(os.path.join(root, "latest_checkpointed_iteration.txt")).read().strip()
    d = "release" if it == "release" else "iter_%07d" % int(it)
    return sorted(glob.glob(os.path.join(root, d, "mp_rank_*", "model_optim_rng.pt")))
def flat(x, p=""):
    out = {}
    if isinstance(x, dict):
        for k, v in x.items(): out.update(flat(v, p + "/" + str(k)))
    else: out[p] = x
    return out
problems, checked = [], 0
ours, refs = rank_files(ours_root), rank_files(ref_root)
assert len(ours) == len(refs) == 2, (ours, refs)
for a_path, b_path in zip(ours, refs):
    a = torch.load(a_path)
    a2 = torch.load(a_path, weights_only=False)
    b = torch.load(b_path, map_location="cpu")
    fa, fb = flat(a["model"]), flat(b["model"])
    if sorted(fa) != sorted(fb): problems.append(("keys", sorted(set(fa) ^ set(fb))[:5]))
    for k in fb:
        x, y = fa.get(k), fb[k]
        if x is None: continue
        checked += 1
        if x.dtype != y.dtype or x.shape != y.shape: problems.append((k, str(x.dtype), tuple(x.shape), str(y.dtype), tuple(y.shape))); continue
        if "word_embeddings" in k or "lm_head" in k:
            rows = x.shape[0]; r0 = int(a_path.split("mp_rank_")[1][:2]) * rows
            real = max(0, min(rows, true_vocab - r0))
            if not torch.equal(x[:real], y[:real]): problems.append((k, "values"))
        elif not torch.equal(x, y): problems.append((k, "values"))
    va, vb = vars(a["args"]), vars(b["args"])
    for f in ["tensor_model_parallel_size", "hidden_size", "num_attention_heads", "ffn_hidden_size", "kv_channels", "padded_vocab_size"]:
        if va.get(f) != vb.get(f): problems.append(("args", f, va.get(f), vb.get(f)))
    for f, v in vb.items():
        if f not in va: problems.append(("args missing", f))
    if a["checkpoint_version"] != b["checkpoint_version"] or a["iteration"] != b["iteration"]: problems.append("header")
    if type(va.get("params_dtype")) != type(vb.get("params_dtype")): problems.append("params_dtype")
print(json.dumps({"problems": [str(p) for p in problems], "checked": checked}))
`,
      [target, fixture("megatron", "fp16-tp2"), String(await trueVocab())],
    );
    const r = JSON.parse(report.trim().split("\n").at(-1) as string) as { problems: string[]; checked: number };
    expect(r.problems).toEqual([]);
    expect(r.checked).toBeGreaterThan(50);
  });
});

async function trueVocab(): Promise<number> {
  const expected = JSON.parse(await readFile(fixture("megatron", "fp16-tp1", "expected-hf.json"), "utf8")) as { dims: { true_vocab: number } };
  return expected.dims.true_vocab;
}

describe.skipIf(!hasFixtures)("to-megatron refuses an untied head", () => {
  it("names the measured difference and writes nothing", async () => {
    const hf = out("hf");
    await convertMegatronToHf({ input: fixture("megatron", "fp16-tp1"), out: hf });
    const st = await openSafetensors(join(hf, "model.safetensors"));
    const e = st.st.get("lm_head.weight");
    const at = (e?.begin ?? 0) + st.st.dataStart + 10;
    await st.close();
    const bytes = await readFile(join(hf, "model.safetensors"));
    bytes[at] = (bytes[at] as number) ^ 0x01; // one fp16 value, lowest mantissa bit
    writeFileSync(join(hf, "model.safetensors"), bytes);
    const target = out();
    const err = await hfToMegatron({ input: hf, out: target, tp: 1 }).catch((x: unknown) => x);
    expect(isMegahubError(err) && err.message).toMatch(/lm_head.weight differs from shared_embedding.weight in 1 of \d+ values \(max \|Δ\| [\d.e-]+\)/);
    expect(existsSync(target)).toBe(false);
  });
});
