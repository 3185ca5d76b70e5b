/**
 * Mixture-of-experts checkpoints in torch_dist (fixtures/dcp/{mixtral-tp2-ep2, qwen2moe-ep4, qwen3moe-pp2-ep2},
 * written by torch 2.13's DCP writer over gloo ranks in Megatron-Core's layout by scripts/make_dcp_fixtures.py, the
 * same models as fixtures/moe): convert to HF bit-exactly; inspect; reshard to legacy rank files that match
 * Megatron's own legacy layout (fixtures/moe); megahub's torch_dist output has the fixture's chunk layout (offsets,
 * sizes, writing rank, `_extra_state` objects) and torch's own dcp.load / dcp_to_torch_save read it equal to the
 * fixture; legacy EP 4 → torch_dist → legacy EP 2 → HF round trips.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { convertAny, reshardAny, toMegatronAny } from "../src/ops/dispatch.js";
import { inspectPath } from "../src/ops/inspect.js";
import { chunkLayout, dcpDir, torchPictures, type DcpPicture } from "./helpers/dcp.js";
import { expectHf, type ExpectedHf } from "./helpers/expect-hf.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { SAME_LAYOUT } from "./helpers/moe.js";
import { HAS_REF } from "./helpers/refpy.js";
import { HAS_TORCH, runPython } from "./helpers/torch.js";

const NO_REF = HAS_REF ? "" : " — skipped: no reference venv (scripts/make_ref_venv.sh)";
const NO_TORCH = HAS_TORCH ? "" : " — skipped: no Debian torch";
const work = mkdtempSync(join(tmpdir(), "megahub-moe-dist-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const out = () => join(work, `out${n++}`);

const expectedOf = (dir: string, name: string) => JSON.parse(readFileSync(fixture(dir, name, "expected-hf.json"), "utf8")) as ExpectedHf;


/** The dist fixtures, their layout, and the legacy fixture (fixtures/moe) of the same model in Megatron's layout. */
const FIXTURES = [
  { name: "mixtral-tp2-ep2", model: "mixtral", tp: 2, pp: 1, ep: 2, spec: "te", layout: "grouped", keys: "stacked", experts: 4, topk: 2, vocab: 120, legacy: "mixtral-te-grouped-ep2", legacyLayout: { tp: 1, pp: 1, ep: 2 } },
  { name: "qwen2moe-ep4", model: "qwen2moe", tp: 1, pp: 1, ep: 4, spec: "local", layout: "sequential", keys: "per-layer", experts: 4, topk: 2, vocab: 120, legacy: "qwen2moe-tp2-ep2", legacyLayout: { tp: 2, pp: 1, ep: 2 } },
  { name: "qwen3moe-pp2-ep2", model: "qwen3moe", tp: 1, pp: 2, ep: 2, spec: "local", layout: "sequential", keys: "per-layer", experts: 8, topk: 2, vocab: 110, legacy: "qwen3moe-ep1", legacyLayout: { tp: 1, pp: 1, ep: 1 } },
] as const;
const present = FIXTURES.filter((f) => hasFixture("dcp", f.name, "expected-hf.json"));
const ARCH = { mixtral: "MixtralForCausalLM", qwen2moe: "Qwen2MoeForCausalLM", qwen3moe: "Qwen3MoeForCausalLM" } as const;

describe.skipIf(present.length === 0)("torch_dist MoE → HF", () => {
  it.each(present)("$name converts bit-exactly to the same tensors as the legacy fixtures of the model", async (f) => {
    const expected = expectedOf("dcp", f.name);
    // the same model as fixtures/moe: one set of global weights (moe_spec.py), two formats
    expect(expected.tensors).toEqual(expectedOf("moe", `${f.model}-ep1`).tensors);
    const dir = out();
    const res = await convertAny({ input: fixture("dcp", f.name), out: dir });
    expect(res.architecture).toBe("gpt");
    await expectHf(dir, expected);
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    for (const [k, v] of Object.entries(expected.config)) expect(config[k], k).toEqual(v);
    expect(config.architectures).toEqual([ARCH[f.model]]);
  });

  it.each(present)("inspect $name: torch_dist, EP, experts, top-k, key form, expert layout from args", async (f) => {
    const r = await inspectPath(fixture("dcp", f.name));
    expect([r.format, r.iteration, r.tp, r.pp, r.ep, r.architecture, r.spec]).toEqual(["torch_dist", 10, f.tp, f.pp, f.ep, "gpt", f.spec]);
    expect(r.moe).toMatchObject({ experts: f.experts, topk: f.topk, ep: f.ep, expertsPerRank: f.experts / f.ep, expertLayout: f.layout });
    expect(r.moe?.activeParameters).toBeLessThan(r.moe?.totalParameters ?? 0);
    expect(r.moe?.totalParameters).toBe(r.parameters?.total);
    const notes = r.notes.join("\n");
    expect(notes).toMatch(f.keys === "stacked" ? /layers stacked/ : /per-layer keys/);
    expect(notes).toMatch(new RegExp(`experts: decoder\\.layers\\.${f.keys === "stacked" ? "" : "<i>\\."}mlp\\.experts\\.experts\\.<param> \\[${f.keys === "stacked" ? "L, " : ""}E, …\\]`));
  });
});

describe.skipIf(present.length === 0)("torch_dist MoE → legacy", () => {
  it.skipIf(!HAS_TORCH).each(present)(`$name → legacy rank files as Megatron lays them out (fixtures/moe/$legacy)${NO_TORCH}`, async (f) => {
    const dir = out();
    const res = await reshardAny({ input: fixture("dcp", f.name), out: dir, ...f.legacyLayout, vpp: 1 });
    expect(res.architecture === "gpt" && res.parallel.ep).toBe(f.legacyLayout.ep);
    const report = runPython(SAME_LAYOUT, [dir, fixture("moe", f.legacy), String(f.vocab), f.spec]);
    expect(report.trim()).toMatch(/^ok \d+$/);
  });

  it.skipIf(present.length < 2)("at several TP × PP × EP each converts back to the expected HF tensors", async () => {
    const layouts = [
      ["mixtral-tp2-ep2", { tp: 1, pp: 2, ep: 4 }],
      ["mixtral-tp2-ep2", { tp: 2, pp: 1, ep: 1 }],
      ["qwen2moe-ep4", { tp: 2, pp: 3, ep: 2 }],
      ["qwen3moe-pp2-ep2", { tp: 2, pp: 2, ep: 8 }],
    ] as const;
    for (const [name, layout] of layouts) {
      const legacy = out();
      await reshardAny({ input: fixture("dcp", name), out: legacy, ...layout });
      const hf = out();
      await convertAny({ input: legacy, out: hf });
      await expectHf(hf, expectedOf("dcp", name));
    }
  });
});

const localNorm = (r: string) => r.replace("decoder.layers.0.pre_mlp_layernorm.weight", "decoder.layers.0.mlp.linear_fc1.layer_norm_weight");

/** torch's view (dcp_to_torch_save and dcp.load, which torchPictures checks agree) of tensors and `_extra_state` keys. */
const torchViews = (dirs: string[]): { tensors: DcpPicture["tensors"]; extra: string[] }[] =>
  torchPictures(dirs).map((p) => ({ tensors: p.tensors, extra: Object.keys(p.bytes).filter((k) => k.includes("_extra_state")).sort() }));

describe.skipIf(present.length === 0)("megahub's torch_dist MoE output is Megatron-Core's layout", () => {
  it.each(present)("$name re-written at its own layout: every chunk at the fixture's offsets, sizes and writing rank", async (f) => {
    const dir = out();
    await reshardAny({ input: fixture("dcp", f.name), out: dir, tp: f.tp, pp: f.pp, ep: f.ep, format: "torch_dist" });
    const ours = await chunkLayout(join(dir, "iter_0000010"));
    const theirs = await chunkLayout(dcpDir(f.name));
    expect(ours.rows).toEqual(theirs.rows);
    expect(ours.extra).toEqual(theirs.extra);
    expect(ours.rows.some((r) => r.includes(".mlp.experts.experts.linear_fc1.weight"))).toBe(true);
  });

  it.skipIf(!HAS_REF || !hasFixture("moe", "mixtral-te-grouped-ep2"))(
    `legacy fixtures (Megatron's layout) → torch_dist: the fixture's layout, and torch's DCP reader gives the fixture's tensors${NO_REF}`,
    async () => {
      const pairs = [
        // the dist fixture pads the vocabulary to a multiple of 64 × TP 2 = 128 rows, as the legacy TP 1 one does
        ["mixtral-te-grouped-ep2", "mixtral-tp2-ep2", { tp: 2, pp: 1, ep: 2, divisibleBy: 64 }],
        ["qwen2moe-ep1", "qwen2moe-ep4", { tp: 1, pp: 1, ep: 4 }],
        ["qwen3moe-te-grouped-ep2", "qwen3moe-pp2-ep2", { tp: 1, pp: 2, ep: 2 }],
      ] as const;
      const written: string[] = [];
      for (const [legacy, dist, layout] of pairs) {
        const dir = out();
        await reshardAny({ input: fixture("moe", legacy), out: dir, ...layout, format: "torch_dist" });
        const iter = join(dir, "iter_0000050");
        written.push(iter);
        const ours = await chunkLayout(iter);
        const theirs = await chunkLayout(dcpDir(dist));
        if (legacy === "qwen3moe-te-grouped-ep2") {
          // the TE spec keeps MoE layers' pre_mlp_layernorm; the local-spec fixture renames it
          expect(ours.rows.map(localNorm).sort()).toEqual(theirs.rows);
          expect(ours.extra.some((k) => k.startsWith("decoder.layers.0.pre_mlp_layernorm._extra_state"))).toBe(true);
        } else {
          expect(ours.rows).toEqual(theirs.rows);
          expect(ours.extra).toEqual(theirs.extra);
        }
      }
      const views = torchViews([...written, ...pairs.map(([, dist]) => dcpDir(dist))]);
      pairs.forEach(([legacy], i) => {
        const [a, b] = [views[i], views[i + pairs.length]];
        expect(Object.fromEntries(Object.entries(a?.tensors ?? {}).map(([k, v]) => [localNorm(k), v]))).toEqual(b?.tensors);
        if (legacy !== "qwen3moe-te-grouped-ep2") expect(a?.extra).toEqual(b?.extra);
      });
    },
  );
});

describe.skipIf(!hasFixture("moe", "mixtral-ep4"))("round trips through torch_dist", () => {
  it("legacy EP 4 → torch_dist TP 2 × EP 2 → legacy EP 2 → HF is bit-exact", async () => {
    const dist = out();
    const res = await reshardAny({ input: fixture("moe", "mixtral-ep4"), out: dist, tp: 2, ep: 2, format: "torch_dist" });
    expect(res.architecture === "gpt" && res.parallel.ep).toBe(2);
    const r = await inspectPath(dist);
    expect([r.format, r.tp, r.ep, r.moe?.experts]).toEqual(["torch_dist", 2, 2, 4]);
    const legacy = out();
    await reshardAny({ input: dist, out: legacy, tp: 1, ep: 2 });
    const hf = out();
    await convertAny({ input: legacy, out: hf });
    await expectHf(hf, expectedOf("moe", "mixtral-ep4"));
  });

  it.each(["qwen2moe-ep1", "qwen3moe-ep1"])("%s: HF → to-megatron --format torch_dist --ep 2 → torch_dist EP 1 → HF is bit-exact", async (name) => {
    const hf = out();
    await convertAny({ input: fixture("moe", name), out: hf });
    const dist = out();
    await toMegatronAny({ input: hf, out: dist, tp: 1, pp: 1, vpp: 1, ep: 2, format: "torch_dist" });
    const again = out();
    await reshardAny({ input: dist, out: again, tp: 1, ep: 1, format: "torch_dist" });
    const back = out();
    await convertAny({ input: again, out: back });
    await expectHf(back, expectedOf("moe", name));
  });
});
