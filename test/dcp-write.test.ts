import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isMegahubError } from "../src/errors.js";
import {
  commonStateValue,
  megatronCommonFile,
  megatronConfigFile,
  parseMegatronConfig,
  readMegatronCommon,
  readMegatronConfig,
} from "../src/formats/torch-dcp/megatron.js";
import { openDcp, type DcpCheckpoint } from "../src/formats/torch-dcp/read.js";
import { planDcp, writeDcp, type DcpOutTensor, type DcpWriteSpec } from "../src/formats/torch-dcp/write.js";
import { PyDict } from "../src/formats/torch/values.js";
import { fsTree } from "../src/io/tree.js";
import { executePlan } from "../src/plan/execute.js";
import { DCP_FIXTURES, dcpDir, ourPicture, PY_DCP_PRELUDE, torchPicture } from "./helpers/dcp.js";
import { HAS_REF, runRefPython } from "./helpers/refpy.js";

const NO_REF = HAS_REF ? "" : " — skipped: no reference venv (scripts/make_ref_venv.sh)";
const tmp = mkdtempSync(join(tmpdir(), "megahub-dcp-write-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const out = (name: string) => join(tmp, `${n++}-${name}`);

/** The source checkpoint re-described as a write spec: same keys, chunks, data files and byte items. */
function sameLayout(src: DcpCheckpoint): DcpWriteSpec {
  const files = [...src.files.keys()].sort();
  const fileOf = (fqn: string, offsets?: readonly number[]) => files.indexOf(src.metadata.storage(fqn, offsets)?.relativePath as string);
  const tensors: DcpOutTensor[] = [...src.tensors.values()].map((t) => ({
    fqn: t.fqn,
    recipe: t.recipe,
    chunks: t.chunks.map((c) => ({ ...c, file: fileOf(t.fqn, c.offsets), recipe: t.box(c.offsets, c.sizes) })),
  }));
  const bytes = [...src.bytes].map(([fqn, data]) => ({ fqn, data, file: fileOf(fqn) }));
  return { tensors, bytes, files, plannerData: "none" };
}

/** Every tensor as one chunk in one file; every third tensor re-cut into a grid of its axis 0 (a TP change). */
function rechunked(src: DcpCheckpoint): DcpWriteSpec {
  const tensors: DcpOutTensor[] = [...src.tensors.values()].map((t, i) => {
    const rows = t.shape[0] ?? 0;
    if (i % 3 !== 0 || t.shape.length === 0 || rows < 4) return { fqn: t.fqn, recipe: t.recipe };
    const q = Math.floor(rows / 4);
    const cuts = [0, q, 2 * q, 3 * q, rows];
    return {
      fqn: t.fqn,
      recipe: t.recipe,
      chunks: cuts.slice(0, -1).map((a, k) => ({
        offsets: t.shape.map((_, d) => (d === 0 ? a : 0)),
        sizes: t.shape.map((s, d) => (d === 0 ? (cuts[k + 1] as number) - a : s)),
        file: k % 2,
      })),
    };
  });
  return { tensors, bytes: [...src.bytes].map(([fqn, data]) => ({ fqn, data })), files: ["__0_0.distcp", "__1_0.distcp"] };
}

describe("writing DCP", () => {
  it.each(DCP_FIXTURES)("%s: our reader reads our copy (same layout and re-chunked) equal to the source", async (name) => {
    const src = await openDcp(dcpDir(name));
    const expected = await ourPicture(src);
    for (const spec of [sameLayout(src), rechunked(src)]) {
      const dir = out(name);
      await writeDcp(dir, spec);
      expect(await ourPicture(dir)).toEqual(expected);
    }
    await src.close();
  });

  it("the same layout reproduces each data file's size and every chunk's stored length", async () => {
    const src = await openDcp(dcpDir("gpt-tp2-perlayer"));
    const dir = out("sizes");
    await writeDcp(dir, sameLayout(src));
    const copy = await openDcp(dir);
    expect(copy.files.size).toBe(src.files.size);
    for (const e of src.metadata.storageEntries) {
      const ours = copy.metadata.storage(e.fqn, e.offsets);
      expect(ours?.relativePath).toBe(e.info.relativePath);
      // Our chunk zips lack torch 2.x's .format_version/.storage_alignment/serialization_id records: never longer.
      expect(ours?.length).toBeLessThanOrEqual(e.info.length);
    }
    await copy.close();
    await src.close();
  });

  it("refuses overlapping chunks and bad file indexes before anything is written", async () => {
    const src = await openDcp(dcpDir("gpt-tp2-perlayer"));
    const t = src.tensors.get("embedding.word_embeddings.weight");
    if (!t) throw new Error("fixture");
    const bad: DcpWriteSpec[] = [
      { tensors: [{ fqn: t.fqn, recipe: t.recipe, chunks: [{ offsets: [0, 0], sizes: [40, 16] }, { offsets: [32, 0], sizes: [32, 16] }] }] },
      { tensors: [{ fqn: t.fqn, recipe: t.recipe, chunks: [{ offsets: [0, 0], sizes: [32, 16] }] }] },
      { tensors: [{ fqn: t.fqn, recipe: t.recipe, chunks: [{ offsets: [0, 0], sizes: [64, 16], file: 3 }] }] },
      { tensors: [{ fqn: t.fqn, recipe: t.recipe }], files: ["../x.distcp"] },
      { tensors: [{ fqn: t.fqn, recipe: t.recipe }, { fqn: t.fqn, recipe: t.recipe }] },
    ];
    for (const spec of bad) {
      const dir = out("bad");
      const e = await writeDcp(dir, spec).then(() => undefined, (x: unknown) => x);
      expect(isMegahubError(e), String(e)).toBe(true);
      expect(existsSync(dir)).toBe(false);
    }
    await src.close();
  });

  it("plans sizes from shapes alone: the plan's file sizes are what is written", async () => {
    const src = await openDcp(dcpDir("gpt-tp2-pp2"));
    const files = planDcp(rechunked(src), "iter_0000001");
    const dir = out("plan");
    const result = await executePlan({ files, notes: [] }, dir);
    expect(Object.keys(result.files).sort()).toEqual(["iter_0000001/.metadata", "iter_0000001/__0_0.distcp", "iter_0000001/__1_0.distcp"]);
    const copy = await openDcp(join(dir, "iter_0000001"));
    expect(copy.tensors.size).toBe(src.tensors.size);
    await copy.close();
    await src.close();
  });
});

describe(`torch's DCP reader reads megahub's DCP output${NO_REF}`, () => {
  it.skipIf(!HAS_REF).each(DCP_FIXTURES)("%s: dcp.load and dcp_to_torch_save of our copies equal torch's reading of the source", async (name) => {
    const theirs = torchPicture(dcpDir(name));
    const src = await openDcp(dcpDir(name));
    for (const spec of [sameLayout(src), { ...rechunked(src), plannerData: "flat" as const }]) {
      const dir = out(name);
      await writeDcp(dir, spec);
      expect(torchPicture(dir)).toEqual(theirs);
    }
    await src.close();
  });
});

describe("Megatron's metadata.json and common.pt", () => {
  it("reads both metadata.json forms", async () => {
    expect(await readMegatronConfig(fsTree(dcpDir("gpt-tp2-pp2")))).toEqual({
      shardedBackend: "torch_dist",
      shardedBackendVersion: 1,
      commonBackend: "torch",
      commonBackendVersion: 1,
      form: "old",
    });
    expect(await readMegatronConfig(fsTree(dcpDir("gpt-tp2-perlayer")))).toEqual({ shardedBackend: "torch_dist", shardedBackendVersion: 1, form: "new" });
    for (const bad of ["", "[]", "{}", '{"sharded_backend": 3}', '{"sharded_backend": "torch_dist", "common_backend": "zarr"}']) {
      let e: unknown;
      try {
        parseMegatronConfig(bad, "metadata.json");
      } catch (x) {
        e = x;
      }
      expect(isMegahubError(e), bad).toBe(true);
    }
  });

  it("reads common.pt args, iteration, checkpoint_version and content_metadata", async () => {
    const c = await readMegatronCommon(fsTree(dcpDir("gpt-tp2-pp2")));
    expect(c.iteration).toBe(10);
    expect(c.checkpointVersion).toBe(3);
    expect(c.args?.field("num_layers")).toBe(4);
    expect(c.args?.field("tensor_model_parallel_size")).toBe(2);
    expect(c.contentMetadata?.get("distrib_optim_sharding_type")).toBe("fully_reshardable");
  });

  it.skipIf(!HAS_REF)(`writes metadata.json and common.pt that Python and torch.load read back${NO_REF}`, async () => {
    const src = await readMegatronCommon(fsTree(dcpDir("gpt-tp2-perlayer")));
    const dir = out("megatron");
    const root = commonStateValue({
      args: src.args as NonNullable<typeof src.args>,
      iteration: 20,
      contentMetadata: src.contentMetadata as PyDict,
      extra: [["num_floating_point_operations_so_far", 5]],
    });
    await executePlan({ files: [megatronConfigFile("iter_0000020/metadata.json", "old"), megatronCommonFile("iter_0000020/common.pt", root)], notes: [] }, dir);
    const got = JSON.parse(
      runRefPython(
        `${PY_DCP_PRELUDE}
d = sys.argv[1]
cfg = json.load(open(os.path.join(d, 'metadata.json')))
c = torch.load(os.path.join(d, 'common.pt'), weights_only=False)
print(json.dumps({'cfg': cfg, 'keys': list(c), 'iteration': c['iteration'], 'cv': c['checkpoint_version'], 'layers': c['args'].num_layers, 'dtype': str(c['args'].params_dtype), 'sharding': c['content_metadata']['distrib_optim_sharding_type']}))`,
        [join(dir, "iter_0000020")],
      ),
    ) as Record<string, unknown>;
    expect(got).toEqual({
      cfg: { sharded_backend: "torch_dist", sharded_backend_version: 1, common_backend: "torch", common_backend_version: 1 },
      keys: ["args", "checkpoint_version", "iteration", "content_metadata", "num_floating_point_operations_so_far"],
      iteration: 20,
      cv: 3.0,
      layers: 3,
      dtype: "torch.float16",
      sharding: "dp_reshardable",
    });
    expect(readFileSync(join(dir, "iter_0000020/metadata.json"), "utf8")).toBe(
      '{"sharded_backend": "torch_dist", "sharded_backend_version": 1, "common_backend": "torch", "common_backend_version": 1}',
    );
  });
});
