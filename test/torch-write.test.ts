import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isMegahubError } from "../src/errors.js";
import { loadTorch, type TorchFile } from "../src/formats/torch/load.js";
import { unpickle } from "../src/formats/torch/pickle-read.js";
import { pickleValue } from "../src/formats/torch/pickle-write.js";
import { rebuildHook, storageFromPid } from "../src/formats/torch/rebuild.js";
import { byteSourceBlocks, newTensor, saveTorchCheckpoint, torchFileForPlan, torchFileSize, type SaveOptions } from "../src/formats/torch/save.js";
import { PyCall, PyDict, PyFloat, PyGlobal, PyList, PySet, PyTuple, TorchStorage, TorchTensor, walkTensors, type PyValue } from "../src/formats/torch/values.js";
import { readZip } from "../src/formats/torch/zip.js";
import { zipLayout } from "../src/formats/torch/zip-write.js";
import { FileSource } from "../src/io/byte-source.js";
import { executePlan } from "../src/plan/execute.js";
import { readTensor } from "../src/plan/recipe.js";
import { DTYPES } from "../src/tensors/dtypes.js";
import { HAS_TORCH, PY_EQUAL, PY_MEGATRON_CHECKPOINT, PY_PRELUDE, runPython, zipRecords } from "./helpers/torch.js";

/** Why torch interop tests are skipped, in their titles, when they are. */
const NO_TORCH = HAS_TORCH ? "" : " — skipped: /usr/bin/python3 cannot import torch";
const tmp = mkdtempSync(join(tmpdir(), "megahub-torch-write-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let fileNo = 0;
const tmpFile = (name = "ckpt.pt") => join(tmp, `${fileNo++}-${name}`);

const g = (m: string, n: string) => new PyGlobal(m, n);
const od = (entries: [PyValue, PyValue][]) => new PyDict(entries, true);
const namespace = (fields: [string, PyValue][]) => {
  const c = new PyCall(g("argparse", "Namespace"), new PyTuple([]), "newobj");
  c.state = new PyDict(fields);
  return c;
};
const modelType = (v: number) => new PyCall(g("megatron.core.enums", "ModelType"), new PyTuple([v]));

const readBack = (bytes: Uint8Array) =>
  unpickle(bytes, "mem", { persistentLoad: (pid) => storageFromPid(pid, "mem"), reduce: rebuildHook("mem") }).value;

/** A comparable picture of a value: protocol-2 spellings of bytes and sets are mapped to what they mean. */
function norm(v: PyValue, seen = new Map<object, number>()): unknown {
  if (v === null || typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "bigint") return Number.isInteger(v) || typeof v === "bigint" ? { int: String(v) } : { float: String(v) };
  if (v instanceof PyFloat) return { float: Object.is(v.value, -0) ? "-0" : String(v.value) };
  if (v instanceof PyGlobal) return { global: v.qualified.replace(/^__builtin__\./, "builtins.") };
  if (v instanceof TorchStorage) return { storage: [v.key, v.dtype, v.numel, v.location] };
  const id = seen.get(v);
  if (id !== undefined) return { ref: id };
  seen.set(v, seen.size);
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v).toString("hex") };
  if (v instanceof PyList) return { list: v.items.map((x) => norm(x, seen)) };
  if (v instanceof PyTuple) return { tuple: v.items.map((x) => norm(x, seen)) };
  if (v instanceof PyDict) return { dict: v.entries.map(([k, x]) => [norm(k, seen), norm(x, seen)]), ordered: v.ordered };
  if (v instanceof PySet) return { set: v.items.map((x) => norm(x, seen)), frozen: v.frozen };
  if (v instanceof TorchTensor) return { tensor: [norm(v.storage), v.storageOffset, v.shape, v.stride, v.requiresGrad, v.isParameter] };
  const [a0, a1] = v.args.items;
  const name = v.global?.qualified.replace(/^__builtin__\./, "builtins.");
  if (name === "_codecs.encode" && typeof a0 === "string" && a1 === "latin1") return { bytes: Buffer.from(a0, "latin1").toString("hex") };
  if (name === "builtins.bytes" && v.args.items.length === 0) return { bytes: "" };
  if ((name === "builtins.set" || name === "builtins.frozenset") && a0 instanceof PyList)
    return { set: a0.items.map((x) => norm(x, seen)), frozen: name === "builtins.frozenset" };
  return {
    call: norm(v.callable, seen),
    args: norm(v.args, seen),
    kind: v.kind,
    state: v.state === undefined ? "none" : norm(v.state, seen),
    list: v.listItems.map((x) => norm(x, seen)),
    dict: v.dictItems.map(([k, x]) => [norm(k, seen), norm(x, seen)]),
  };
}

/** Deterministic bytes for a storage (bool storages get 0/1). */
function fill(s: TorchStorage): Uint8Array {
  const n = s.numel * DTYPES[s.dtype].bytes;
  const b = new Uint8Array(n);
  let x = 0x9e3779b9 ^ (s.key.length * 7919) ^ Number.parseInt(s.key.replace(/\D/g, "") || "0", 10);
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    b[i] = s.dtype === "BOOL" ? (x >>> 31) & 1 : x >>> 24;
  }
  return b;
}

async function* once(b: Uint8Array): AsyncGenerator<Uint8Array> {
  // Uneven blocks exercise CRC continuation across blocks.
  for (let i = 0; i < b.length; i += 7) yield b.subarray(i, Math.min(b.length, i + 7));
}

async function save(root: PyValue, options: SaveOptions = {}, name?: string) {
  const path = tmpFile(name);
  await saveTorchCheckpoint(path, root, (s) => once(fill(s)), options);
  return path;
}

/** The bytes of a (possibly strided) view, gathered from its storage's bytes. */
function viewSha(t: TorchTensor): string {
  const w = DTYPES[t.dtype].bytes;
  const data = fill(t.storage);
  const n = t.shape.reduce((a, b) => a * b, 1);
  const out = new Uint8Array(n * w);
  const idx = t.shape.map(() => 0);
  for (let e = 0; e < n; e++) {
    const off = t.storageOffset + idx.reduce((a, i, d) => a + i * (t.stride[d] as number), 0);
    out.set(data.subarray(off * w, off * w + w), e * w);
    for (let d = idx.length - 1; d >= 0; d--) {
      idx[d] = (idx[d] as number) + 1;
      if ((idx[d] as number) < (t.shape[d] as number)) break;
      idx[d] = 0;
    }
  }
  return createHash("sha256").update(out).digest("hex");
}

/** Every record's data must start on a 64-byte boundary behind an FB field of Z bytes; returns the record names. */
async function expectAligned(path: string): Promise<string[]> {
  const records = await zipRecords(path);
  for (const r of records) expect([r.name, r.dataOffset % 64, r.fbPadding]).toEqual([r.name, 0, "ok"]);
  return records.map((r) => r.name);
}

async function load(path: string): Promise<{ file: TorchFile; close: () => Promise<void> }> {
  const src = await FileSource.open(path);
  return { file: await loadTorch(src), close: () => src.close() };
}

describe("pickle writer", () => {
  const shared = new TorchStorage("7", "F16", "cpu", 12, g("torch", "HalfStorage"));
  const viewA = new TorchTensor(shared, 0, [2, 3], [3, 1], false, false);
  const value = () => {
    const cyclic = new PyList([1]);
    cyclic.items.push(cyclic);
    const ns = namespace([["params_dtype", g("torch", "bfloat16")], ["model_type", modelType(1)], ["lr", new PyFloat(3.0)], ["tp", 2]]);
    (ns.state as PyDict).set("self", ns);
    const withItems = new PyCall(g("collections", "defaultdict"), new PyTuple([g("builtins", "list")]));
    withItems.dictItems.push(["k", new PyList([1, 2])]);
    const listy = new PyCall(g("mod", "MyList"), new PyTuple([]), "newobj");
    listy.listItems.push(1, "two");
    listy.state = null;
    return od([
      ["ints", new PyList([0, 255, 256, 65535, 65536, -1, -129, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, 2 ** 53 - 1, 2n ** 70n, -(2n ** 63n), 2n ** 3000n])],
      ["floats", new PyList([new PyFloat(3.0), 0.5, new PyFloat(-0), new PyFloat(Number.NaN), Number.POSITIVE_INFINITY, 1e-300])],
      ["strings", new PyTuple(["", "héllo", "日本語", "😀", "a\nb"])],
      ["bytes", new PyTuple([new Uint8Array([0, 255, 128, 10]), new Uint8Array(0)])],
      ["tuples", new PyList([new PyTuple([]), new PyTuple([1]), new PyTuple([1, 2]), new PyTuple([1, 2, 3]), new PyTuple([1, 2, 3, 4, 5])])],
      ["nested", new PyDict([[1, od([["a", new PyDict([[new PyTuple([1, "x"]), null]])]])], [true, false]])],
      ["big", new PyList(Array.from({ length: 2500 }, (_, i) => `s${i}`))],
      ["bigdict", new PyDict(Array.from({ length: 1500 }, (_, i): [PyValue, PyValue] => [i, i * 2]))],
      ["sets", new PyList([new PySet([1, 2]), new PySet([3], true), new PySet()])],
      ["args", ns], ["enum", modelType(2)], ["defaultdict", withItems], ["listy", listy], ["cyclic", cyclic],
      ["a", viewA], ["a_again", viewA], ["b", new TorchTensor(shared, 6, [3], [2], false, false)], ["storage", shared],
      ["param", newTensor("F32", [2, 2], "p", { parameter: true, requiresGrad: true })], ["f8", newTensor("F8_E4M3", [4], "f8")],
    ]);
  };

  it("round-trips values through our reader, and re-pickles to the same bytes", () => {
    // Fidelity of the pickler itself, so unvetted test globals (m.f, defaultdict) are allowed here.
    const keep = { keepUnknownGlobals: true };
    const bytes = pickleValue(value(), keep);
    const back = readBack(bytes);
    expect(norm(back)).toEqual(norm(value()));
    expect(Buffer.from(pickleValue(back, keep)).equals(Buffer.from(bytes))).toBe(true);
    const d = back as PyDict;
    expect(d.get("a")).toBe(d.get("a_again")); // one object, memoized
    const ns = d.get("args") as PyCall;
    expect(ns.field("self")).toBe(ns);
    const cyclic = d.get("cyclic") as PyList;
    expect(cyclic.items[1]).toBe(cyclic);
    expect((d.get("f8") as TorchTensor).dtype).toBe("F8_E4M3");
  });

  it.skipIf(!HAS_TORCH)(`writes what CPython's pickler writes at protocol 2${NO_TORCH}`, () => {
    const values: PyValue[] = [
      null, true, false, 0, 255, 256, 65536, -1, -129, 2 ** 31, -(2 ** 31) - 1, -(2n ** 63n), 2n ** 63n, 2n ** 3000n,
      new PyFloat(3.0), 0.1, "é\u{1F600}", new Uint8Array(0), new Uint8Array([0, 255]), new PyTuple([1, 2, 3, 4]),
      new PyList([1]), new PyDict([[1, 2]]), new PySet([1, 2]), new PySet([3], true), od([["a", 1]]),
      new PyList(Array.from({ length: 2500 }, (_, i) => i)), new PyDict(Array.from({ length: 1500 }, (_, i): [PyValue, PyValue] => [i, -i])),
      new PyList(Array.from({ length: 300 }, (_, i) => new PyList([i]))),
    ];
    const py = `
import pickle, collections, sys
vals = [None, True, False, 0, 255, 256, 65536, -1, -129, 2**31, -2**31-1, -2**63, 2**63, 2**3000, 3.0, 0.1, 'é\\U0001F600',
  b'', b'\\x00\\xff', (1,2,3,4), [1], {1: 2}, {1, 2}, frozenset([3]), collections.OrderedDict(a=1), list(range(2500)),
  {i: -i for i in range(1500)}, [[i] for i in range(300)]]
t = ([],); t[0].append(t)
vals.append(t)
print('\\n'.join(pickle.dumps(v, 2).hex() for v in vals))`;
    const recursive = new PyTuple([new PyList()]);
    (recursive.items[0] as PyList).items.push(recursive);
    const expected = runPython(py).trim().split("\n");
    [...values, recursive].forEach((v, i) => expect(Buffer.from(pickleValue(v)).toString("hex"), `value ${i}`).toBe(expected[i]));
  });

  it("refuses cycles it cannot express instead of looping", () => {
    const call = new PyCall(g("m", "f"), new PyTuple([]));
    const args = [1] as PyValue[];
    const selfCall = new PyCall(g("m", "f"), new PyTuple(args));
    args.push(selfCall);
    const keep = { keepUnknownGlobals: true };
    expect(() => pickleValue(selfCall, keep)).toThrow(/contains itself/);
    const items: PyValue[] = [];
    const t = new PyTuple(items);
    items.push(new PyTuple([t]));
    expect(() => pickleValue(t)).toThrow(/contains itself/);
    expect(() => pickleValue(call, keep)).not.toThrow();
    expect(() => pickleValue(call)).toThrow(/not on megahub's allow-list/);
    const set = new PySet();
    set.items.push(set);
    expect(() => pickleValue(set)).toThrow(/contains itself/);
  });
});

describe("zip writer", () => {
  it("aligns every record to 64 bytes and is read back by our reader (plain and forced ZIP64)", async () => {
    for (const forceZip64 of [false, true]) {
      const root = od([["w", newTensor("F32", [3, 5], "0")], ["b", newTensor("BF16", [7], "1")]]);
      const path = await save(root, { prefix: "model_optim_rng", forceZip64 });
      expect(readFileSync(path).length).toBe(torchFileSize(root, { prefix: "model_optim_rng", forceZip64 }));
      const names = ["data.pkl", "byteorder", "data/0", "data/1", "version"];
      expect(await expectAligned(path)).toEqual(names.map((n) => `model_optim_rng/${n}`));
      const { file, close } = await load(path);
      const w = (file.root as PyDict).get("w") as TorchTensor;
      expect(Buffer.from(await file.storageSource(w.storage).read(0, 60))).toEqual(Buffer.from(fill(w.storage)));
      await close();
    }
  });

  it("switches to ZIP64 for records and offsets past 4 GiB (layout only)", () => {
    const GiB = 2 ** 30;
    const l = zipLayout([{ name: "a/data/0", bytes: 5 * GiB }, { name: "a/data/1", bytes: 10 }, { name: "a/version", bytes: 2 }]);
    expect(l.records.map((r) => r.zip64)).toEqual([true, true, true]);
    expect(l.records.map((r) => r.dataOffset % 64)).toEqual([0, 0, 0]);
    const small = zipLayout([{ name: "a/x", bytes: 10 }]);
    expect(small.records[0]?.zip64).toBe(false);
    expect(small.totalBytes).toBe(64 + 10 + 16 + 46 + 3 + 56 + 20 + 22);
  });

  it("refuses data that does not match the planned size and leaves no file", async () => {
    const root = od([["w", newTensor("F32", [4], "0")]]);
    const path = tmpFile();
    const err = await saveTorchCheckpoint(path, root, () => once(new Uint8Array(15))).catch((e: unknown) => e);
    expect(isMegahubError(err) && err.code === "OUTPUT").toBe(true);
    expect(() => readFileSync(path)).toThrow();
    const clash = od([["a", newTensor("F32", [4], "0")], ["b", newTensor("F16", [4], "0")]]);
    expect(() => torchFileSize(clash)).toThrow(/share key "0"/);
    expect(() => torchFileSize(clash, { renumber: true })).toThrow(/share key "0"/);
    const planned = od([["w", newTensor("F32", [4], "9")]]);
    expect(() => torchFileForPlan("x.pt", planned, [])).toThrow(/no recipe for storage "9"/);
  });
});

describe.skipIf(!HAS_TORCH)(`torch.load reads what we write${NO_TORCH}`, () => {
  it("keeps dtypes, shapes, values, parameters, shared storages, Namespace, enums and OrderedDicts", async () => {
    const shared = new TorchStorage("s", "F32", "cpu", 12, g("torch", "FloatStorage"));
    const tensors: [string, TorchTensor][] = [
      ["f16", newTensor("F16", [2, 3], "0")], ["bf16", newTensor("BF16", [4], "1")], ["i64", newTensor("I64", [3], "3")],
      ["f32p", newTensor("F32", [2, 2], "2", { parameter: true, requiresGrad: true })], ["bool", newTensor("BOOL", [5], "4")],
      ["u8", newTensor("U8", [2, 2], "5")], ["i32", newTensor("I32", [3, 1], "6")], ["f64", newTensor("F64", [], "7")],
      ["empty", newTensor("F32", [0, 3], "8")], ["view_a", new TorchTensor(shared, 0, [2, 3], [3, 1], false, false)],
      ["view_b", new TorchTensor(shared, 6, [6], [1], false, false)], ["view_t", new TorchTensor(shared, 0, [3, 2], [1, 3], false, false)],
    ];
    const args = namespace([["params_dtype", g("torch", "bfloat16")], ["model_type", modelType(2)], ["lr", new PyFloat(3.0)],
      ["name", "héllo"], ["layers", new PyList([1, 2n ** 70n])]]);
    const root = new PyDict([["model", od(tensors)], ["args", args], ["checkpoint_version", new PyFloat(3.0)],
      ["blob", new Uint8Array([0, 1, 255])], ["set", new PySet(["x"])]]);
    const path = await save(root, { prefix: "model_optim_rng" });
    await expectAligned(path);
    const out = runPython(
      `${PY_PRELUDE}
for kw in ({}, {'weights_only': False}):
    d = torch.load(sys.argv[1], **kw)
    m = d['model']
    a = d['args']
    print(json.dumps({
        'model_type': type(m).__name__,
        'tensors': {k: [str(t.dtype), list(t.shape), sha(t), isinstance(t, torch.nn.Parameter), t.requires_grad] for k, t in m.items()},
        'shared': m['view_a'].storage().data_ptr() == m['view_b'].storage().data_ptr() == m['view_t'].storage().data_ptr(),
        'offset_b': (m['view_b'].data_ptr() - m['view_a'].data_ptr()) // 4,
        'args': [type(a).__name__, repr(a.params_dtype), a.model_type.name, repr(a.lr), a.name, a.layers],
        'cv': repr(d['checkpoint_version']), 'blob': d['blob'].hex(), 'set': sorted(d['set']),
        'crc_ok': zipfile.ZipFile(sys.argv[1]).testzip() is None}))`,
      [path],
    );
    const torchName = (t: TorchTensor) => `torch.${DTYPES[t.dtype].torch}`;
    for (const line of out.trim().split("\n")) {
      expect(JSON.parse(line)).toEqual({
        model_type: "OrderedDict",
        tensors: Object.fromEntries(tensors.map(([k, t]) => [k, [torchName(t), t.shape, viewSha(t), t.isParameter, t.requiresGrad]])),
        shared: true,
        offset_b: 6,
        args: ["Namespace", "torch.bfloat16", "encoder_and_decoder", "3.0", "héllo", [1, 2 ** 70]],
        cv: "3.0",
        blob: "0001ff",
        set: ["x"],
        crc_ok: true,
      });
    }
  });

  it("loads with weights_only=True when only allowed globals are present, and with forced ZIP64", async () => {
    const root = od([
      ["w", newTensor("F16", [2, 2], "0")],
      ["p", newTensor("F32", [3], "1", { parameter: true })],
      ["nested", new PyDict([["list", new PyList([1, "a", true, null])], ["n", 7]])],
    ]);
    for (const forceZip64 of [false, true]) {
      const path = await save(root, { forceZip64 });
      await expectAligned(path);
      const out = runPython(
        `${PY_PRELUDE}
d = torch.load(sys.argv[1], weights_only=True)
print(json.dumps([type(d).__name__, sha(d['w']), sha(d['p']), type(d['p']).__name__, d['nested'], zipfile.ZipFile(sys.argv[1]).testzip() is None]))`,
        [path],
      );
      const t = (k: string) => root.get(k) as TorchTensor;
      expect(JSON.parse(out)).toEqual(["OrderedDict", viewSha(t("w")), viewSha(t("p")), "Parameter", { list: [1, "a", true, null], n: 7 }, true]);
    }
  });
});


const COMPARE = `${PY_PRELUDE}
${PY_EQUAL}
a = torch.load(sys.argv[1])
for path in sys.argv[2:]:
    for kw in ({}, {'weights_only': False}):
        b = torch.load(path, **kw)
        eq(a, b, 'root')
        assert storage_groups(a) == storage_groups(b), path
        assert b['model']['language_model']['encoder']['emb'] is b['model']['language_model']['embedding']['word_embeddings']['weight']
print('equal')
`;

describe.skipIf(!HAS_TORCH)(`a torch-saved checkpoint read and rewritten${NO_TORCH}`, () => {
  it("loads in torch with equal objects, via saveTorchCheckpoint and via a plan", async () => {
    const original = tmpFile("model_optim_rng.pt");
    runPython(PY_MEGATRON_CHECKPOINT, [original]);
    const { file, close } = await load(original);
    try {
      // Megatron's enums are on the allow-list: nothing unvetted in a genuine checkpoint.
      expect(file.report.unknown).toEqual([]);
      const direct = tmpFile("model_optim_rng.pt");
      await saveTorchCheckpoint(direct, file.root, (s) => byteSourceBlocks(file.storageSource(s), 5), { prefix: file.prefix });
      // Through the executor: one recipe per storage, reading the original record.
      const byKey = new Map<string, { name: string; tensor: TorchTensor }>();
      for (const [name, t] of walkTensors(file.root)) if (!byKey.has(t.storage.key)) byKey.set(t.storage.key, { name, tensor: t });
      const planned = [...byKey.values()].map(({ name, tensor }) => ({
        name,
        tensor,
        recipe: readTensor(file.storageSource(tensor.storage), 0, tensor.dtype, [tensor.storage.numel], name),
      }));
      const dir = join(tmp, `plan-${fileNo++}`);
      const custom = torchFileForPlan("mp_rank_00/model_optim_rng.pt", file.root, planned);
      const result = await executePlan({ files: [custom], notes: [] }, dir, { blockBytes: 16 });
      const viaPlan = join(dir, "mp_rank_00/model_optim_rng.pt");
      expect(result.files["mp_rank_00/model_optim_rng.pt"]?.bytes).toBe(custom.bytes);
      await expectAligned(direct);
      expect(await expectAligned(viaPlan)).toContain("model_optim_rng/data.pkl");
      expect(runPython(COMPARE, [original, direct, viaPlan]).trim()).toBe("equal");
      // Storage records are copied byte for byte; the pickle differs only where CPython memoizes equal strings twice.
      const records = async (p: string) => {
        const src = await FileSource.open(p);
        const zip = await readZip(src);
        const out: Record<string, string> = {};
        for (const e of zip.entries.values()) {
          if (e.name.endsWith("data.pkl")) continue;
          out[e.name] = createHash("sha256").update(await (await zip.open(e.name)).read(0, e.size)).digest("hex");
        }
        await src.close();
        return out;
      };
      expect(await records(direct)).toEqual({
        ...(await records(original)),
        [`${file.prefix ?? ""}/byteorder`]: createHash("sha256").update("little").digest("hex"),
      });
    } finally {
      await close();
    }
  });
});

describe.skipIf(!HAS_TORCH)(`byte identity with torch.save${NO_TORCH}`, () => {
  it("rewrites a simple torch 1.13 checkpoint to the identical file when the byteorder record is left out", async () => {
    const original = tmpFile("ref.pt");
    runPython(
      `${PY_PRELUDE}
a = torch.arange(6, dtype=torch.float16).reshape(2, 3)
torch.save(collections.OrderedDict(a=a, b=a[1], t=a.t(), p=torch.nn.Parameter(torch.ones(3)), i=torch.arange(4),
    args=argparse.Namespace(x=1, dt=torch.bfloat16, mt=ModelType.encoder_or_decoder), f=3.0, big=2**70, s={1, 2}), sys.argv[1])`,
      [original],
    );
    const { file, close } = await load(original);
    try {
      const copy = tmpFile("ref.pt");
      await saveTorchCheckpoint(copy, file.root, (s) => byteSourceBlocks(file.storageSource(s)), { prefix: file.prefix, byteorder: false });
      expect(readFileSync(copy).equals(readFileSync(original))).toBe(true);
    } finally {
      await close();
    }
  });
});
