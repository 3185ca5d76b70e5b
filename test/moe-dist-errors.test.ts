/**
 * Bad torch_dist mixture-of-experts input: one MegahubError with a one-line message naming the file and tensor,
 * nothing written — an expert's chunk missing from the metadata (coverage), an EP rank's data file missing, an
 * expert axis or router that disagrees with args.num_experts, an EP that does not divide the experts — and seeded
 * .metadata mutations of the MoE fixture through the whole model path, each a result or a MegahubError.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { planMegatronDist, type DistOutTensor } from "../src/checkpoints/megatron-dist-write.js";
import { locateMegatronDist, openMegatronDist } from "../src/checkpoints/megatron-dist.js";
import { isMegahubError } from "../src/errors.js";
import { convertAny, reshardAny } from "../src/ops/dispatch.js";
import { executePlan } from "../src/plan/execute.js";
import { select } from "../src/plan/recipe.js";
import { PY_DCP_PRELUDE } from "./helpers/dcp.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { HAS_REF, runRefPython } from "./helpers/refpy.js";
import { rng } from "./helpers/rng.js";
import { refused } from "./helpers/bad-input.js";

const NO_REF = HAS_REF ? "" : " — skipped: no reference venv (scripts/make_ref_venv.sh)";
const work = mkdtempSync(join(tmpdir(), "megahub-moe-dist-bad-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const out = () => join(work, `out${n++}`);
const ITER = "iter_0000010";
const copyOf = (name: string) => {
  const dir = join(work, `src${n++}`);
  cpSync(fixture("dcp", name), dir, { recursive: true });
  return dir;
};


/** convert and reshard (legacy and torch_dist) both refuse, writing nothing. */
async function allRefuse(src: string, code: string, pattern: RegExp): Promise<void> {
  for (const job of [(o: string) => convertAny({ input: src, out: o }), (o: string) => reshardAny({ input: src, out: o, tp: 1, ep: 1 }), (o: string) => reshardAny({ input: src, out: o, tp: 1, ep: 2, format: "torch_dist" })]) {
    const dir = out();
    await refused(job(dir), pattern, code);
    expect(existsSync(dir)).toBe(false);
  }
}

const MIXTRAL = "mixtral-tp2-ep2";
const ok = hasFixture("dcp", MIXTRAL, ITER, ".metadata") && hasFixture("dcp", "qwen2moe-ep4", ITER, ".metadata");

describe.skipIf(!ok)("bad torch_dist MoE checkpoints", () => {
  // torch's own pickle edits, one reference start for all
  const edits: [string, string, string, string, RegExp][] = [
    [
      "an expert's chunk missing from .metadata (layer 1, expert 3, TP rank 1 of fc2)",
      ".metadata",
      "from torch.distributed.checkpoint.metadata import MetadataIndex\nk = 'decoder.layers.mlp.experts.experts.linear_fc2.weight'\nc = md.state_dict_metadata[k].chunks\nc[:] = [x for x in c if list(x.offsets) != [1, 3, 0, 8]]\ndel md.storage_data[MetadataIndex(k, [1, 3, 0, 8])]",
      "FORMAT",
      /decoder\.layers\.mlp\.experts\.experts\.linear_fc2\.weight.*chunks cover 3840 of the 4096 elements of \[2, 4, 32, 16\]: no chunk holds the element at \[1, 3, 0, 8\]/,
    ],
    ["args.num_experts that is not the expert axis", "common.pt", "a.num_experts = 8", "MODEL", /the expert axis \(dim 1\) holds 4 experts, args\.num_experts is 8/],
  ];
  const edited = new Map<string, string>();
  beforeAll(() => {
    if (!HAS_REF || !ok) return;
    const jobs = edits.map(([what, file, edit]) => {
      const dir = copyOf(MIXTRAL);
      edited.set(what, dir);
      return [join(dir, ITER), file, edit];
    });
    runRefPython(
      `${PY_DCP_PRELUDE}
for d, file, edit in json.loads(sys.argv[1]):
    p = os.path.join(d, file)
    if file == '.metadata':
        with open(p, 'rb') as f:
            md = pickle.load(f)
        exec(edit)
        with open(p, 'wb') as f:
            pickle.dump(md, f)
    else:
        c = torch.load(p, weights_only=False)
        a = c['args']
        exec(edit)
        torch.save(c, p)`,
      [JSON.stringify(jobs)],
    );
  });
  it.skipIf(!HAS_REF).each(edits)(`%s${NO_REF}`, async (what, _file, _edit, code, pattern) => {
    await allRefuse(edited.get(what) as string, code, pattern);
  });

  it("an EP rank's data file missing (EP rank 1, TP rank 1 writes experts 2 and 3)", async () => {
    const src = copyOf(MIXTRAL);
    unlinkSync(join(src, ITER, "__3_0.distcp"));
    await allRefuse(src, "LAYOUT", /__3_0\.distcp named by \.metadata is missing/);
  });

  it("routers with fewer rows than args.num_experts are named before the shape checks", async () => {
    const where = await locateMegatronDist(fixture("dcp", "qwen2moe-ep4"));
    if (!where) throw new Error("fixture not located");
    const ckpt = await openMegatronDist(where);
    const dir = join(work, `router${n++}`);
    try {
      const tensors: DistOutTensor[] = [...ckpt.tensors].map(([name, recipe]) => ({ name, recipe: name.endsWith(".mlp.router.weight") ? select(recipe, 0, [0, 1, 2]) : recipe, split: undefined, stage: 0 }));
      const files = await planMegatronDist(tensors, { tp: 1, pp: 1, iteration: 10, common: { args: ckpt.args as NonNullable<typeof ckpt.args>, iteration: 10 }, extraState: [] });
      mkdirSync(dir);
      await executePlan({ files, notes: [] }, dir);
    } finally {
      await ckpt.close();
    }
    await refused(convertAny({ input: dir, out: out() }), /decoder\.layers\.1\.mlp\.router\.weight.*the router has 3 rows, args\.num_experts is 4/, "MODEL");
  });

  it("the dist writer refuses an EP that does not divide the experts, and an expert given twice", async () => {
    await refused(reshardAny({ input: fixture("dcp", MIXTRAL), out: out(), tp: 1, ep: 3, format: "torch_dist" }), /EP 3 does not divide the 4 experts/, "USAGE");
    const where = await locateMegatronDist(fixture("dcp", MIXTRAL));
    if (!where) throw new Error("fixture not located");
    const ckpt = await openMegatronDist(where);
    try {
      const fc2 = ckpt.tensors.get("decoder.layers.0.mlp.experts.local_experts.0.linear_fc2.weight");
      if (!fc2) throw new Error("no expert 0");
      const twice: DistOutTensor[] = [0, 0].map((e) => ({ name: "decoder.layers.0.mlp.experts.experts.linear_fc2.weight", recipe: fc2, split: undefined, stage: 0, expert: e }));
      const o = { tp: 1, pp: 1, ep: 2, experts: 4, iteration: 10, common: { args: ckpt.args as NonNullable<typeof ckpt.args>, iteration: 10 }, extraState: [] };
      await refused(planMegatronDist(twice, o), /given twice for expert 0/, "USAGE");
      await refused(planMegatronDist(twice.slice(0, 1), o), /layer 0 lacks experts 1, 2, 3 of 4/, "USAGE");
      await refused(planMegatronDist([{ ...(twice[0] as DistOutTensor), expert: 4 }], o), /expert 4 is not one of the 4 experts/, "USAGE");
    } finally {
      await ckpt.close();
    }
  });
});


describe.skipIf(!ok)("seeded .metadata mutations of an MoE checkpoint through the whole model path", () => {
  it("80 single-byte and truncation mutations: each plans a conversion or is one MegahubError", async () => {
    const src = copyOf(MIXTRAL);
    const file = join(src, ITER, ".metadata");
    const original = readFileSync(file);
    const next = rng(41);
    const tally = { ok: 0, error: 0 };
    for (let i = 0; i < 80; i++) {
      const m = Buffer.from(original);
      const at = Math.floor(next() * m.length);
      writeFileSync(file, i % 8 === 7 ? m.subarray(0, at) : (m.writeUInt8(Math.floor(next() * 256), at), m));
      try {
        await convertAny({ input: src, out: out(), dryRun: true });
        tally.ok++;
      } catch (e) {
        if (!isMegahubError(e)) throw new Error(`mutation ${i} at byte ${at}: not a MegahubError: ${String(e)}`, { cause: e });
        expect((e as Error).message).not.toContain("\n");
        tally.error++;
      }
    }
    expect(tally.error).toBeGreaterThan(10);
  });
});
