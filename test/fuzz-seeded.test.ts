/**
 * The seeded mutation loop of `npm test`: a few thousand cases over every input format (pickle with hostile
 * constructions, torch zip including CRC checks, safetensors, tar, sentencepiece, config JSON). Every case ends
 * in a value or a typed error, promptly. `npm run fuzz` runs the same harness for 100,000 cases.
 */
import { describe, expect, it } from "vitest";
import { fuzz, fuzzTargets } from "./helpers/fuzz.js";
import { hasFixture } from "./helpers/fixtures.js";

describe.skipIf(!hasFixture("megatron", "fp32-tp1"))("seeded mutations of every input format", () => {
  it.each([11, 12])("seed %d: 1,200 cases, no crash, none slow", async (seed) => {
    const targets = await fuzzTargets();
    const report = await fuzz({ cases: 1200, seed, slowMs: 5000, targets });
    expect(report.findings).toEqual([]);
    for (const [name, s] of Object.entries(report.byTarget)) {
      expect(s.cases, name).toBe(200);
      expect(s.typed, `${name}: mutations must be caught, not all accepted`).toBeGreaterThan(0);
    }
  }, 300_000);
});
