/**
 * Megatron-Core mixture-of-experts checkpoints (fixtures/moe, written by scripts/fixtures/moe.py mirroring
 * Megatron-Core's save) → HF Mixtral / Qwen2-MoE / Qwen3-MoE bit for bit at every EP / TP / PP / expert layout; round
 * trips through Megatron at other EP sizes; written rank files against the Megatron-layout fixture of the same layout.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { convertAny, reshardAny, toMegatronAny } from "../src/ops/dispatch.js";
import { expectHf, type ExpectedHf } from "./helpers/expect-hf.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { SAME_LAYOUT } from "./helpers/moe.js";
import { HAS_TORCH, runPython } from "./helpers/torch.js";

interface MoeCase {
  model: string;
  tp: number;
  pp: number;
  ep: number;
  spec: "local" | "te";
  experts: "sequential" | "grouped";
  true_vocab: number;
}

const CASES: Record<string, MoeCase> = hasFixture("moe", "cases.json") ? (JSON.parse(readFileSync(fixture("moe", "cases.json"), "utf8")) as { cases: Record<string, MoeCase> }).cases : {};
const expectedOf = (name: string) => JSON.parse(readFileSync(fixture("moe", name, "expected-hf.json"), "utf8")) as ExpectedHf;
const ep1Of = (model: string) => Object.keys(CASES).find((k) => CASES[k]?.model === model && CASES[k]?.ep === 1 && CASES[k]?.tp === 1 && CASES[k]?.pp === 1) as string;

const work = mkdtempSync(join(tmpdir(), "megahub-moe-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const out = () => join(work, `out${n++}`);


describe.skipIf(Object.keys(CASES).length === 0)("Megatron-Core MoE → HF", () => {
  it.each(Object.keys(CASES))("%s converts bit-exactly with the config transformers reads", async (name) => {
    const dir = out();
    const res = await convertAny({ input: fixture("moe", name), out: dir });
    const expected = expectedOf(name);
    await expectHf(dir, expected);
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    for (const [k, v] of Object.entries(expected.config)) expect(config[k], k).toEqual(v);
    expect(res.architecture).toBe("gpt");
  });

  const models = [...new Set(Object.values(CASES).map((c) => c.model))];
  it.each(models)("%s: HF → Megatron EP 2 → HF is bit-exact (local spec and TE grouped GEMM)", async (model) => {
    const hf = out();
    await convertAny({ input: fixture("moe", ep1Of(model)), out: hf });
    for (const layout of [{ tp: 1, pp: 1, vpp: 1, ep: 2 }, { tp: 1, pp: 1, vpp: 1, ep: 2, spec: "te" as const, experts: "grouped" as const }]) {
      const mg = out();
      const res = await toMegatronAny({ input: hf, out: mg, ...layout });
      expect(res.architecture === "gpt" && res.parallel.ep).toBe(2);
      const back = out();
      await convertAny({ input: mg, out: back });
      await expectHf(back, expectedOf(ep1Of(model)));
    }
  });

  it.each(models)("%s: reshard EP 1 → EP 2 → EP 1 is bit-exact", async (model) => {
    const a = out();
    await reshardAny({ input: fixture("moe", ep1Of(model)), out: a, tp: 1, ep: 2 });
    const b = out();
    await reshardAny({ input: a, out: b, tp: 1, ep: 1 });
    const hf = out();
    await convertAny({ input: b, out: hf });
    await expectHf(hf, expectedOf(ep1Of(model)));
  });

  const ep4 = Object.keys(CASES).find((k) => CASES[k]?.ep === 4);
  it.skipIf(!ep4)("reshard EP 4 → EP 1 → TP 2 × EP 2 → PP 2 × EP 2 is bit-exact", async () => {
    let src = fixture("moe", ep4 as string);
    for (const layout of [{ tp: 1, ep: 1 }, { tp: 2, ep: 2 }, { tp: 1, pp: 2, ep: 2 }]) {
      const next = out();
      await reshardAny({ input: src, out: next, ...layout });
      src = next;
    }
    const hf = out();
    await convertAny({ input: src, out: hf });
    await expectHf(hf, expectedOf(ep4 as string));
  });
});

describe.skipIf(!HAS_TORCH || Object.keys(CASES).length === 0)("written Megatron MoE files match Megatron's own layout", () => {
  const targets = Object.keys(CASES).filter((k) => !(CASES[k]?.ep === 1 && CASES[k]?.tp === 1 && CASES[k]?.pp === 1));
  it.each(targets)("into the layout of %s", async (target) => {
    const c = CASES[target] as MoeCase;
    const dir = out();
    const layout = { tp: c.tp, pp: c.pp, vpp: 1, ep: c.ep };
    if (c.spec === "local") {
      await reshardAny({ input: fixture("moe", ep1Of(c.model)), out: dir, ...layout });
    } else {
      // a TE-named layout comes from HF with --spec te (reshard keeps the source's names)
      const hf = out();
      await convertAny({ input: fixture("moe", ep1Of(c.model)), out: hf });
      await toMegatronAny({ input: hf, out: dir, ...layout, spec: "te", experts: c.experts, iteration: 50 });
    }
    const report = runPython(SAME_LAYOUT, [dir, fixture("moe", target), String(c.true_vocab), c.spec]);
    expect(report.trim()).toMatch(/^ok \d+$/);
  });
});
