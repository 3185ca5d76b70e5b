/** `npx megahub demo` is the front door: every step runs on the shipped fixtures and says what it did. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { megahub } from "./helpers/cli.js";

const work = mkdtempSync(join(tmpdir(), "megahub-demo-test-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("megahub demo", () => {
  it("runs OpenBA's and the Llama's journeys end to end, every check passing", () => {
    const r = megahub(["demo", "--out", join(work, "demo"), "--json"], { timeout: 600_000 });
    expect(r.code, r.stderr).toBe(0);
    const j = r.json<{ ok: boolean; steps: { step: string; passed?: boolean; identical?: boolean }[] }>();
    expect(j.ok).toBe(true);
    expect(j.steps.map((s) => s.step)).toEqual(["convert", "verify", "generate", "reshard", "prune", "prune-vocab", "push+pull", "convert-gpt", "verify-gpt", "reshard-gpt"]);
    expect(j.steps.filter((s) => s.passed === false || s.identical === false)).toEqual([]);
  });
});
