import { readFileSync, rmSync, truncateSync, unlinkSync, writeFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isMegahubError } from "../src/errors.js";
import { parseDcpMetadata } from "../src/formats/torch-dcp/metadata.js";
import { openDcp } from "../src/formats/torch-dcp/read.js";
import { loadTorch } from "../src/formats/torch/load.js";
import { PyDict, PyList } from "../src/formats/torch/values.js";
import type { ByteSource } from "../src/io/byte-source.js";
import { fsTree, type Tree } from "../src/io/tree.js";
import { leaves } from "../src/plan/recipe.js";
import { copyDcp, DCP_FIXTURES, dcpDir, ourPicture, PY_DCP_PRELUDE, recipeSha, torchPicture } from "./helpers/dcp.js";
import { HAS_REF, runRefPython } from "./helpers/refpy.js";
import { rng } from "./helpers/rng.js";
import { refused } from "./helpers/bad-input.js";

const NO_REF = HAS_REF ? "" : " — skipped: no reference venv (scripts/make_ref_venv.sh)";


/** A tree that records every read, so tests can prove reads are byte ranges, never whole data files. */
function countingTree(dir: string): { tree: Tree; reads: { file: string; offset: number; length: number }[] } {
  const base = fsTree(dir);
  const reads: { file: string; offset: number; length: number }[] = [];
  const tree: Tree = {
    ...base,
    async open(path) {
      const src = await base.open(path);
      const wrapped: ByteSource = {
        name: src.name,
        size: src.size,
        read(offset, length) {
          reads.push({ file: path, offset, length });
          return src.read(offset, length);
        },
      };
      return wrapped;
    },
  };
  return { tree, reads };
}

describe("DCP .metadata written by torch 2.13 for Megatron-Core layouts", () => {
  it.each(DCP_FIXTURES)("%s: parses with Megatron's planner_data None and all_local_plans, no unknown globals", (name) => {
    const file = join(dcpDir(name), ".metadata");
    const m = parseDcpMetadata(readFileSync(file), file);
    expect(m.className).toBe("torch.distributed.checkpoint.metadata.Metadata");
    expect(m.plannerData).toBe("none");
    expect(m.version).toBe("1.0.0");
    expect(m.extraFields).toEqual(["all_local_plans"]);
    expect(m.unknownGlobals).toEqual([]);
    expect(m.storageMeta?.checkpointId).toBe("iter_0000010");
    const chunks = [...m.items.values()].reduce((a, it) => a + (it.kind === "tensor" ? it.chunks.length : 1), 0);
    expect(m.storageEntries.length).toBe(chunks);
  });

  it("stacked keys carry the layer axis with one chunk per (layer, TP rank); SwiGLU fc1 halves sit at r and r + TP", async () => {
    const dcp = await openDcp(dcpDir("gpt-tp2-pp2"));
    const qkv = dcp.tensors.get("decoder.layers.self_attention.linear_qkv.weight");
    expect(qkv?.shape).toEqual([4, 32, 16]);
    expect(qkv?.chunks.map((c) => c.offsets.join(",")).sort()).toEqual(
      ["0,0,0", "0,16,0", "1,0,0", "1,16,0", "2,0,0", "2,16,0", "3,0,0", "3,16,0"].sort(),
    );
    const fc1 = dcp.tensors.get("decoder.layers.mlp.linear_fc1.weight");
    expect(fc1?.chunks.filter((c) => c.offsets[0] === 0).map((c) => c.offsets[1]).sort((a, b) => (a as number) - (b as number))).toEqual([0, 12, 24, 36]);
    expect([...dcp.bytes.keys()].filter((k) => k.includes("linear_qkv._extra_state"))).toEqual(
      [0, 1, 2, 3].map((l) => `decoder.layers.self_attention.linear_qkv._extra_state/shard_${l}_4`),
    );
    await dcp.close();
  });

  it("byte items are torch.save'd lists, readable with the torch-zip reader", async () => {
    const dcp = await openDcp(dcpDir("gpt-tp2-perlayer"));
    const src = dcp.bytes.get("decoder.layers.0.self_attention.linear_qkv._extra_state/shard_0_1");
    expect(src).toBeDefined();
    const t = await loadTorch(src as ByteSource);
    expect(t.root).toBeInstanceOf(PyList);
    expect((t.root as PyList).items).toEqual([null]);
    await dcp.close();
  });
});

describe(`DCP reader vs torch's own DCP reader${NO_REF}`, () => {
  it.skipIf(!HAS_REF).each(DCP_FIXTURES)("%s: every tensor bit-exact vs dcp_to_torch_save and dcp.load; byte items at torch's ranges", async (name) => {
    const theirs = torchPicture(dcpDir(name));
    const ours = await ourPicture(dcpDir(name));
    expect(Object.keys(ours.tensors).length).toBeGreaterThan(20);
    expect(ours).toEqual(theirs);
  });

  it.skipIf(!HAS_REF)("box(): one layer of a stacked key and a row slice of it equal torch's t[l] and t[l, a:b]", async () => {
    const dir = dcpDir("gpt-tp2-pp2");
    const keys = ["decoder.layers.self_attention.linear_qkv.weight", "decoder.layers.mlp.linear_fc1.weight", "decoder.layers.self_attention.linear_proj.weight", "decoder.layers.mlp.linear_fc1.layer_norm_weight"];
    const expected = JSON.parse(
      runRefPython(
        `${PY_DCP_PRELUDE}
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
d = sys.argv[1]
md = dcp.FileSystemReader(d).read_metadata()
keys = json.loads(sys.argv[2])
sd = {k: torch.empty(md.state_dict_metadata[k].size, dtype=md.state_dict_metadata[k].properties.dtype) for k in keys}
dcp.load(sd, storage_reader=dcp.FileSystemReader(d), no_dist=True)
out = {}
for k, t in sd.items():
    for l in range(t.shape[0]):
        out[f'{k}|{l}'] = sha(t[l])
        if t.dim() == 3:
            out[f'{k}|{l}|rows'] = sha(t[l, 5:13])
            out[f'{k}|{l}|cols'] = sha(t[l, :, 3:11])
print(json.dumps(out))`,
        [dir, JSON.stringify(keys)],
      ),
    ) as Record<string, string>;
    const dcp = await openDcp(dir);
    const got: Record<string, string> = {};
    for (const k of keys) {
      const t = dcp.tensors.get(k);
      if (!t) throw new Error(k);
      const [L, ...rest] = t.shape as [number, ...number[]];
      for (let l = 0; l < L; l++) {
        got[`${k}|${l}`] = await recipeSha(t.box([l, ...rest.map(() => 0)], [1, ...rest], [0]));
        if (rest.length === 2) {
          got[`${k}|${l}|rows`] = await recipeSha(t.box([l, 5, 0], [1, 8, rest[1] as number], [0]));
          got[`${k}|${l}|cols`] = await recipeSha(t.box([l, 0, 3], [1, rest[0] as number, 8], [0]));
        }
      }
    }
    expect(got).toEqual(expected);
    await dcp.close();
  });
});

describe("DCP reads are lazy byte ranges", () => {
  it("open reads .metadata only; one layer reads only that layer's chunks; no read spans a data file", async () => {
    const dir = dcpDir("gpt-tp2-pp2");
    const { tree, reads } = countingTree(dir);
    const dcp = await openDcp(tree);
    expect(new Set(reads.map((r) => r.file))).toEqual(new Set([".metadata"]));
    reads.length = 0;
    const qkv = dcp.tensors.get("decoder.layers.self_attention.linear_qkv.weight");
    const recipe = qkv?.box([2, 0, 0], [1, 32, 16], [0]);
    if (!recipe) throw new Error("no qkv");
    expect(recipe.shape).toEqual([32, 16]);
    expect(leaves(recipe).length).toBe(2); // layer 2's two TP chunks, nothing else
    await recipeSha(recipe);
    const sizes = new Map([...dcp.files]);
    expect(reads.length).toBeGreaterThan(0);
    for (const r of reads) {
      expect(r.length).toBeLessThan(sizes.get(r.file) as number);
    }
    // Layer 2 lives on PP stage 1 (ranks 2 and 3): nothing of ranks 0 and 1 is touched.
    expect(reads.every((r) => r.file.startsWith("__2_") || r.file.startsWith("__3_"))).toBe(true);
    const data = reads.reduce((a, r) => a + r.length, 0);
    expect(data).toBeLessThan(16 * 1024);
    await dcp.close();
    await tree.close(); // a tree the caller passed in stays the caller's to close
  });
});

describe("corrupt DCP checkpoints give one typed error", () => {
  it("a missing .distcp file is a LAYOUT error naming it", async () => {
    const dir = copyDcp("gpt-tp2-perlayer");
    unlinkSync(join(dir, "__1_0.distcp"));
    await refused(openDcp(dir), /__1_0\.distcp named by \.metadata is missing/, "LAYOUT");
    rmSync(dir, { recursive: true });
  });

  it("a chunk past the end of its (truncated) file is a FORMAT error at open", async () => {
    const dir = copyDcp("gpt-tp2-perlayer");
    const f = join(dir, "__0_1.distcp");
    truncateSync(f, statSync(f).size - 100);
    await refused(openDcp(dir), /past the end of the \d+-byte file/, "FORMAT");
    rmSync(dir, { recursive: true });
  });

  it("a missing .metadata is a LAYOUT error", async () => {
    const dir = copyDcp("gpt-tp2-perlayer");
    unlinkSync(join(dir, ".metadata"));
    await refused(openDcp(dir), /no \.metadata/, "LAYOUT");
    rmSync(dir, { recursive: true });
  });

  const edits: [string, string, string, RegExp][] = [
    ["overlapping chunks", "from torch.distributed.checkpoint.metadata import MetadataIndex\nk = 'embedding.word_embeddings.weight'\nc = md.state_dict_metadata[k].chunks; c[1].offsets = torch.Size([16, 0])\nmd.storage_data[MetadataIndex(k, [16, 0])] = md.storage_data.pop(MetadataIndex(k, [32, 0]))", "FORMAT", /overlap/],
    ["a hole", "c = md.state_dict_metadata['embedding.word_embeddings.weight'].chunks; c[1].sizes = torch.Size([16, 16])", "FORMAT", /cover \d+ of the 1024/],
    ["a chunk past the global shape", "c = md.state_dict_metadata['embedding.word_embeddings.weight'].chunks; c[1].offsets = torch.Size([40, 0])", "FORMAT", /reaches past the global shape/],
    ["a chunk without storage", "k = [i for i in md.storage_data if i.fqn == 'decoder.final_layernorm.weight'][0]; del md.storage_data[k]", "FORMAT", /no storage_data entry/],
    ["a path leaving the directory", "i = list(md.storage_data.values())[0]; i.relative_path = '../escape.distcp'", "FORMAT", /not a file name inside the checkpoint/],
    ["a hostile global (os.system)", "class H:\n    def __reduce__(self):\n        return (os.system, ('echo pwned',))\nmd.planner_data = H()", "FORMAT", /code-running global (posix|os)\.system/],
    ["a hostile global (builtins.eval)", "class H:\n    def __reduce__(self):\n        return (eval, ('1+1',))\nmd.all_local_plans = [H()]", "FORMAT", /code-running global builtins\.eval/],
    ["an unknown storage class", "class Odd:\n    pass\nmd.storage_data = Odd()", "FORMAT", /names code-running global __main__\.Odd/],
    ["a wrong dtype in one chunk", "md.state_dict_metadata['decoder.final_layernorm.weight'].properties.dtype = torch.float32", "FORMAT", /chunk holds a \[16\] F16 tensor, \.metadata says \[16\] F32|fewer than its/],
  ];
  // One reference run writes every edited copy (each python start costs seconds).
  const edited = new Map<string, string>();
  beforeAll(() => {
    if (!HAS_REF) return;
    const jobs = edits.map(([what, edit]) => {
      const dir = copyDcp("gpt-tp2-perlayer");
      edited.set(what, dir);
      return [dir, edit];
    });
    runRefPython(
      `${PY_DCP_PRELUDE}
for d, edit in json.loads(sys.argv[1]):
    with open(os.path.join(d, '.metadata'), 'rb') as f:
        md = pickle.load(f)
    exec(edit)
    with open(os.path.join(d, '.metadata'), 'wb') as f:
        pickle.dump(md, f)`,
      [JSON.stringify(jobs)],
    );
  });
  afterAll(() => {
    for (const dir of edited.values()) rmSync(dir, { recursive: true, force: true });
  });
  it.skipIf(!HAS_REF).each(edits)(`%s${NO_REF}`, async (what, _edit, code, pattern) => {
    const dir = edited.get(what) as string;
    const run = async () => {
      const dcp = await openDcp(dir);
      try {
        await dcp.verifyChunks();
        for (const t of dcp.tensors.values()) await recipeSha(t.recipe);
      } finally {
        await dcp.close();
      }
    };
    await refused(run(), pattern, code);
  });

  it("garbage bytes as .metadata are a FORMAT error", async () => {
    const dir = copyDcp("gpt-tp2-perlayer");
    for (const junk of [new Uint8Array(0), Uint8Array.from([0x80, 4, 0x95]), new TextEncoder().encode("not a pickle at all")]) {
      writeFileSync(join(dir, ".metadata"), junk);
      await refused(openDcp(dir), /pickle|expected/, "FORMAT");
    }
    rmSync(dir, { recursive: true });
  });
});


describe("seeded mutation loops: every outcome is a result or a MegahubError", () => {
  const settle = async (dir: string): Promise<"ok" | "error"> => {
    try {
      const dcp = await openDcp(dir);
      try {
        await dcp.verifyChunks();
        for (const t of dcp.tensors.values()) await recipeSha(t.recipe);
      } finally {
        await dcp.close();
      }
      return "ok";
    } catch (e) {
      if (!isMegahubError(e)) throw new Error(`not a MegahubError: ${String(e)}`, { cause: e });
      return "error";
    }
  };

  it("mutating .metadata (300 seeded single-byte and truncation mutations)", async () => {
    const dir = copyDcp("gpt-tp2-perlayer");
    const file = join(dir, ".metadata");
    const original = readFileSync(file);
    const next = rng(11);
    const tally = { ok: 0, error: 0 };
    for (let i = 0; i < 300; i++) {
      const m = Buffer.from(original);
      const at = Math.floor(next() * m.length);
      const bytes = i % 10 === 9 ? m.subarray(0, at) : (m.writeUInt8(Math.floor(next() * 256), at), m);
      writeFileSync(file, bytes);
      tally[await settle(dir)]++;
    }
    expect(tally.error).toBeGreaterThan(50);
    rmSync(dir, { recursive: true });
  });

  it("mutating chunk headers (zip records and pickles inside .distcp files, 200 seeded mutations)", async () => {
    const dir = copyDcp("gpt-tp2-perlayer");
    const file = join(dir, "__1_1.distcp");
    const original = readFileSync(file);
    const dcp = await openDcp(dcpDir("gpt-tp2-perlayer"));
    // Header bytes of this file's chunks: the first 400 bytes of each (local header, data.pkl) and its last 400
    // (central directory, end records) — tensor data is not checksummed by torch either.
    const spans = dcp.metadata.storageEntries
      .filter((e) => e.info.relativePath === "__1_1.distcp" && e.offsets !== undefined)
      .flatMap((e) => [
        [e.info.offset, Math.min(400, e.info.length)],
        [e.info.offset + e.info.length - Math.min(400, e.info.length), Math.min(400, e.info.length)],
      ]) as [number, number][];
    await dcp.close();
    const next = rng(23);
    const tally = { ok: 0, error: 0 };
    for (let i = 0; i < 200; i++) {
      const m = Buffer.from(original);
      const [start, len] = spans[Math.floor(next() * spans.length)] as [number, number];
      m[start + Math.floor(next() * len)] = Math.floor(next() * 256);
      writeFileSync(file, m);
      tally[await settle(dir)]++;
    }
    expect(tally.error).toBeGreaterThan(20);
    rmSync(dir, { recursive: true });
  });
});

describe(`.metadata variants of other torch / Megatron-Core versions${NO_REF}`, () => {
  // Each variant is made from a real file by torch itself (re-pickled), and torch 2.13 must still load it.
  const variants: [string, string][] = [
    ["protocol 2", "proto = 2"],
    ["torch 2.0-2.3 Metadata (no storage_meta, no version)", "del md.storage_meta\ndel md.version"],
    [
      "torch <= 2.2 TensorProperties from torch.distributed._shard",
      "from torch.distributed._shard.sharded_tensor.metadata import TensorProperties as Old\nfor v in md.state_dict_metadata.values():\n    if hasattr(v, 'properties'):\n        v.properties = Old(dtype=v.properties.dtype)",
    ],
    [
      "Megatron < 0.14 MCoreMetadata with mcore_data",
      "n = MCoreMetadata(md.state_dict_metadata, md.planner_data, md.storage_data)\nn.mcore_data = {'decoder.layers.0.mlp.linear_fc2.weight': {'nd_reformulated_orig_global_shape': (16, 24)}}\nmd = n",
    ],
    ["torch's dcp.save planner_data mapping", "md.planner_data = {k: (k,) for k in md.state_dict_metadata}"],
  ];
  const made = new Map<string, string>();
  beforeAll(() => {
    if (!HAS_REF) return;
    const jobs = variants.map(([what, edit]) => {
      const dir = copyDcp("gpt-tp2-perlayer");
      made.set(what, dir);
      return [dir, edit];
    });
    runRefPython(
      `${PY_DCP_PRELUDE}
for d, edit in json.loads(sys.argv[1]):
    with open(os.path.join(d, '.metadata'), 'rb') as f:
        md = pickle.load(f)
    proto = 4
    exec(edit)
    with open(os.path.join(d, '.metadata'), 'wb') as f:
        pickle.dump(md, f, protocol=proto)`,
      [JSON.stringify(jobs)],
    );
  });
  afterAll(() => {
    for (const dir of made.values()) rmSync(dir, { recursive: true, force: true });
  });
  it.skipIf(!HAS_REF)("every variant reads bit-exactly equal to torch's own reading of it", async () => {
    const reference = await ourPicture(dcpDir("gpt-tp2-perlayer"));
    for (const [what] of variants) {
      const dir = made.get(what) as string;
      const dcp = await openDcp(dir);
      expect(dcp.metadata.unknownGlobals, what).toEqual([]);
      if (what.startsWith("Megatron")) {
        expect(dcp.metadata.className).toBe("megatron.core.dist_checkpointing.strategies.torch.MCoreMetadata");
        expect(dcp.metadata.mcoreData).toBeInstanceOf(PyDict);
      }
      if (what.startsWith("torch 2.0")) expect(dcp.metadata.version).toBeUndefined();
      if (what.startsWith("torch's")) expect(dcp.metadata.plannerData).toBe("mapping");
      if (what.startsWith("torch <= 2.2")) expect(dcp.metadata.globals).toContain("torch.distributed._shard.sharded_tensor.metadata.MEM_FORMAT_ENCODING");
      if (what === "protocol 2") expect([...readFileSync(join(dir, ".metadata")).subarray(0, 2)]).toEqual([0x80, 2]);
      expect(await ourPicture(dcp), what).toEqual(reference);
      await dcp.close();
      expect(torchPicture(dir), what).toEqual(reference);
    }
  });
});
