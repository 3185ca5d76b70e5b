/**
 * Bad torch_dist input at the checkpoint level (the DCP format layer's own corruption loops are in dcp-read.test.ts):
 * one typed error with a one-line message naming the file, nothing written; reads stay per layer.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { planMegatronDist, type DistOutTensor } from "../src/checkpoints/megatron-dist-write.js";
import { locateMegatronDist, openMegatronDist } from "../src/checkpoints/megatron-dist.js";
import { convertAny, reshardAny } from "../src/ops/dispatch.js";
import { executePlan } from "../src/plan/execute.js";
import { leaves, select, type Recipe } from "../src/plan/recipe.js";
import { megahub } from "./helpers/cli.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { refused } from "./helpers/bad-input.js";

const work = mkdtempSync(join(tmpdir(), "megahub-dist-bad-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const out = () => join(work, `out${n++}`);
const copyOf = (name: string) => {
  const dir = join(work, `src${n++}`);
  cpSync(fixture("dcp", name), dir, { recursive: true });
  return dir;
};
const ITER = "iter_0000010";


const cases: [string, (dir: string) => void, string, RegExp][] = [
  ["a missing common.pt", (d) => unlinkSync(join(d, ITER, "common.pt")), "LAYOUT", /no common\.pt/],
  ["a common.pt that is not a torch file", (d) => writeFileSync(join(d, ITER, "common.pt"), "not a zip at all"), "FORMAT", /common\.pt/],
  ["metadata.json that is not JSON", (d) => writeFileSync(join(d, ITER, "metadata.json"), "{sharded"), "FORMAT", /metadata\.json is not JSON/],
  ["another sharded backend", (d) => writeFileSync(join(d, ITER, "metadata.json"), '{"sharded_backend": "zarr", "sharded_backend_version": 1}'), "UNSUPPORTED", /sharded_backend "zarr"/],
  ["a missing .metadata", (d) => unlinkSync(join(d, ITER, ".metadata")), "LAYOUT", /no \.metadata/],
  ["a garbage .metadata", (d) => writeFileSync(join(d, ITER, ".metadata"), Buffer.from([0x80, 0x04, 0x95, 0xff, 0xff])), "FORMAT", /\.metadata/],
  ["a missing .distcp", (d) => unlinkSync(join(d, ITER, "__3_1.distcp")), "LAYOUT", /__3_1\.distcp named by \.metadata is missing/],
  [
    "a truncated .distcp",
    (d) => {
      const f = join(d, ITER, "__2_0.distcp");
      truncateSync(f, statSync(f).size - 64);
    },
    "FORMAT",
    /past the end of the \d+-byte file/,
  ],
];

describe("bad torch_dist checkpoints", () => {
  it.each(cases)("%s: one typed error, nothing written", async (_what, damage, code, pattern) => {
    const src = copyOf("gpt-tp2-pp2");
    damage(src);
    const dir = out();
    await refused(convertAny({ input: src, out: dir }), pattern, code);
    expect(existsSync(dir)).toBe(false);
    const legacy = out();
    await refused(reshardAny({ input: src, out: legacy, tp: 1 }), pattern, code);
    expect(existsSync(legacy)).toBe(false);
  });

  it("args.num_layers that disagrees with the stacked axis is named", async () => {
    // Three stacked layers written with the fixture's args, which say 4.
    const dir = join(work, `layers${n++}`);
    const ckpt = await openFixture();
    try {
      expect(ckpt.args?.field("num_layers")).toBe(4);
      const tensors: DistOutTensor[] = [...ckpt.tensors].filter(([k]) => !k.startsWith("decoder.layers.3.")).map(([name, recipe]) => ({ name, recipe, split: undefined, stage: 0 }));
      const files = await planMegatronDist(tensors, { tp: 1, pp: 1, iteration: 10, common: { args: ckpt.args as NonNullable<typeof ckpt.args>, iteration: 10 }, extraState: [] });
      mkdirSync(dir);
      await executePlan({ files, notes: [] }, dir);
    } finally {
      await ckpt.close();
    }
    await refused(convertAny({ input: dir, out: out() }), /args\.num_layers is 4 but the stacked layer axis has 3 layers/, "MODEL");
  });

  it("unknown keys are all listed, with the MoE hint for unmapped expert parts; a router without experts is named", async () => {
    const write = async (extra: (l: number, norm: Recipe) => DistOutTensor) => {
      const dir = join(work, `moe${n++}`);
      const ckpt = await openFixture();
      try {
        const tensors: DistOutTensor[] = [...ckpt.tensors].map(([name, recipe]) => ({ name, recipe, split: undefined, stage: 0 }));
        const norm = ckpt.tensors.get("decoder.final_layernorm.weight");
        if (!norm) throw new Error("no norm");
        for (let l = 0; l < 4; l++) tensors.push(extra(l, norm));
        const files = await planMegatronDist(tensors, { tp: 1, pp: 1, iteration: 10, common: { args: ckpt.args as NonNullable<typeof ckpt.args>, iteration: 10 }, extraState: [] });
        mkdirSync(dir);
        await executePlan({ files, notes: [] }, dir);
      } finally {
        await ckpt.close();
      }
      return dir;
    };
    const bias = await write((l, norm) => ({ name: `decoder.layers.${l}.mlp.experts.local_experts.0.linear_fc1.bias`, recipe: norm, split: undefined, stage: 0 }));
    await refused(convertAny({ input: bias, out: out() }), /1 tensor keys are not part of Megatron-Core GPT \(mixture-of-experts parts not mapped: .*\): decoder\.layers\.mlp\.experts\.local_experts\.0\.linear_fc1\.bias/, "MODEL");
    const router = await write((l, norm) => ({ name: `decoder.layers.${l}.mlp.router.weight`, recipe: select(norm, 0, [0, 1]), split: undefined, stage: 0 }));
    await refused(convertAny({ input: router, out: out() }), /layer 0 has a router but no expert 0/, "MODEL");
  });

  it("one layer of a stacked key reads only that layer's chunks", async () => {
    const ckpt = await openFixture();
    try {
      for (const l of [0, 3]) {
        const fc1 = ckpt.tensors.get(`decoder.layers.${l}.mlp.linear_fc1.weight`);
        expect(fc1?.shape).toEqual([48, 16]);
        const names = leaves(fc1 as NonNullable<typeof fc1>).map((x) => x.label);
        expect(names.length).toBe(4); // gate and up halves of the two TP ranks
        expect(names.every((x) => x.includes(`[${l},`))).toBe(true);
      }
      expect(ckpt.keys).toBe("stacked");
      expect([ckpt.optimizer?.layout, ckpt.skipped.rng, ckpt.skipped.extraState]).toEqual(["fully_reshardable", 4, 16]); // 4 layers × 4 linears; no output_layer (GPTModel pops it)
    } finally {
      await ckpt.close();
    }
  });
});

describe.skipIf(!hasFixture("dcp", "gpt-tp2-pp2"))("CLI", () => {
  it("a damaged torch_dist checkpoint gives one error line and exit 1", () => {
    const src = copyOf("gpt-tp2-pp2");
    unlinkSync(join(src, ITER, "__0_0.distcp"));
    const r = megahub(["convert", src, "--out", out()]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/__0_0\.distcp named by \.metadata is missing/);
  });

  it("--format is torch or torch_dist; OpenBA refuses torch_dist; inspect --json names the format", () => {
    const bad = megahub(["reshard", fixture("dcp", "gpt-tp2-pp2"), "--out", out(), "--tp", "1", "--format", "zarr"]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--format must be torch or torch_dist, got "zarr"/);
    const openba = megahub(["reshard", fixture("megatron", "fp32-tp1"), "--out", out(), "--tp", "1", "--format", "torch_dist"]);
    expect(openba.code).not.toBe(0);
    expect(openba.stderr).toMatch(/OpenBA .* legacy torch format only/);
    const inspect = megahub(["inspect", fixture("dcp", "gpt-tp2-perlayer"), "--json"]);
    expect(inspect.code).toBe(0);
    const j = inspect.json<{ format: string; optimizer: string; tp: number }>();
    expect([j.format, j.tp]).toEqual(["torch_dist", 2]);
    expect(j.optimizer).toMatch(/dp_reshardable/);
    const prune = megahub(["prune", fixture("dcp", "gpt-tp2-pp2"), "--out", out(), "--hidden", "8"]);
    expect(prune.stderr).toMatch(/a torch_dist checkpoint .* reads legacy mp_rank_\* files only/);
    const iter = megahub(["inspect", join(fixture("dcp", "gpt-tp2-pp2"), ITER), "--iteration", "10"]);
    expect(iter.stderr).toMatch(/--iteration applies to a checkpoint root/);
  });
});

async function openFixture() {
  const where = await locateMegatronDist(fixture("dcp", "gpt-tp2-pp2"));
  if (!where) throw new Error("fixture not located as torch_dist");
  return openMegatronDist(where);
}
