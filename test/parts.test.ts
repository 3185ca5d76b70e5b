import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fixture, ROOT } from "./helpers/fixtures.js";
import { megahub } from "./helpers/cli.js";
import { digestTree } from "./hub-helpers.js";

const work = mkdtempSync(join(tmpdir(), "megahub-parts-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
let n = 0;
const out = () => join(work, `out-${n++}`);

/** Runs the built CLI without waiting, so several parts run at once as on an array job. */
function megahubAsync(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(ROOT, "bin", "megahub.js"), ...args], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
    child.on("close", (code) => resolve({ code, stderr }));
  });
}

/** megahub.json without its timestamps: every other byte of a split run must equal the single-process run's. */
function manifestSansTime(dir: string): unknown {
  const m = JSON.parse(readFileSync(join(dir, "megahub.json"), "utf8")) as { lineage: { at?: string }[] };
  for (const step of m.lineage) delete step.at;
  return m;
}

function expectSameOutput(split: string, single: string): Promise<void> {
  return (async () => {
    const [a, b] = await Promise.all([digestTree(split), digestTree(single)]);
    delete a["megahub.json"];
    delete b["megahub.json"];
    expect(a).toEqual(b);
    expect(manifestSansTime(split)).toEqual(manifestSansTime(single));
  })();
}

/** Commands that write plans, each with options that give several output files to split. */
const CASES: { name: string; args: (o: string) => string[] }[] = [
  { name: "convert to sharded HF", args: (o) => ["convert", fixture("megatron", "fp16-tp3"), "--out", o, "--max-shard-size", "150KB", "--tensor-hashes"] },
  { name: "reshard TP 2 → 4", args: (o) => ["reshard", fixture("megatron", "bf16-tp2"), "--out", o, "--tp", "4", "--true-vocab-size", "1000"] },
  { name: "prune to Megatron TP 2", args: (o) => ["prune", fixture("megatron", "fp16-tp2"), "--out", o, "--hidden", "48", "--heads", "6", "--to", "megatron", "--tp", "2"] },
];

describe("one plan split over N processes", () => {
  for (const c of CASES) {
    it(`${c.name}: 3 parts run at once, then --finalize, give the single-process bytes`, async () => {
      const single = out();
      const one = megahub([...c.args(single), "--quiet"]);
      expect(one.code, one.stderr).toBe(0);
      const split = out();
      const parts = await Promise.all([1, 2, 3].map((i) => megahubAsync([...c.args(split), "--part", `${i}/3`, "--quiet"])));
      for (const p of parts) expect(p.code, p.stderr).toBe(0);
      expect(existsSync(split), "nothing appears before --finalize").toBe(false);
      const fin = megahub([...c.args(split), "--finalize", "--quiet"]);
      expect(fin.code, fin.stderr).toBe(0);
      await expectSameOutput(split, single);
      expect(readdirSync(work).filter((f) => f.includes(".parts")), "the staging area became the output").toEqual([]);
    });
  }

  it("--workers 2 gives the single-process bytes", async () => {
    const single = out();
    expect(megahub([...(CASES[0]?.args(single) ?? []), "--quiet"]).code).toBe(0);
    const split = out();
    const r = megahub([...(CASES[0]?.args(split) ?? []), "--workers", "2", "--quiet"]);
    expect(r.code, r.stderr).toBe(0);
    await expectSameOutput(split, single);
  });

  it("names a missing part and writes nothing; a re-run part resumes and finalize then succeeds", async () => {
    const args = CASES[0]?.args ?? (() => []);
    const split = out();
    for (const i of [1, 3]) expect(megahub([...args(split), "--part", `${i}/3`, "--quiet"]).code).toBe(0);
    const fin = megahub([...args(split), "--finalize"]);
    expect(fin.code).toBe(1);
    expect(fin.stderr).toMatch(/part 2\/3 has not run.*nothing was written/);
    expect(existsSync(split)).toBe(false);
    expect(megahub([...args(split), "--part", "2/3", "--quiet"]).code).toBe(0);
    const again = megahub([...args(split), "--part", "1/3", "--json"]);
    expect(again.code, again.stderr).toBe(0);
    expect(megahub([...args(split), "--finalize", "--quiet"]).code).toBe(0);
    const single = out();
    expect(megahub([...args(single), "--quiet"]).code).toBe(0);
    await expectSameOutput(split, single);
  });

  it("names a damaged file and its part, writes nothing, and the re-run part repairs just it", async () => {
    const args = CASES[1]?.args ?? (() => []);
    const split = out();
    for (const i of [1, 2]) expect(megahub([...args(split), "--part", `${i}/2`, "--quiet"]).code).toBe(0);
    const staged = join(work, `.${split.split("/").at(-1)}.parts`);
    const victim = join(staged, "iter_0002000", "mp_rank_02", "model_optim_rng.pt");
    const bytes = readFileSync(victim);
    bytes[bytes.length >> 1] = (bytes[bytes.length >> 1] as number) ^ 0xff;
    writeFileSync(victim, bytes);
    const fin = megahub([...args(split), "--finalize"]);
    expect(fin.code).toBe(1);
    expect(fin.stderr).toMatch(/iter_0002000\/mp_rank_02\/model_optim_rng\.pt \(part \d\/2\) hashes to .*run part \d\/2 again.*nothing was written/);
    expect(existsSync(split)).toBe(false);
    const part = /\(part (\d)\/2\)/.exec(fin.stderr)?.[1] as string;
    expect(megahub([...args(split), "--part", `${part}/2`, "--quiet"]).code).toBe(0);
    expect(megahub([...args(split), "--finalize", "--quiet"]).code).toBe(0);
    const single = out();
    expect(megahub([...args(single), "--quiet"]).code).toBe(0);
    await expectSameOutput(split, single);
  });

  it("refuses a part of a different plan in the same staging area, and bad split options", () => {
    const split = out();
    expect(megahub(["reshard", fixture("megatron", "bf16-tp2"), "--out", split, "--tp", "4", "--true-vocab-size", "1000", "--part", "1/2", "--quiet"]).code).toBe(0);
    const other = megahub(["reshard", fixture("megatron", "bf16-tp2"), "--out", split, "--tp", "2", "--true-vocab-size", "1000", "--part", "1/2"]);
    expect(other.code).toBe(2);
    expect(other.stderr).toMatch(/part 1\/2 was started for a different plan/);
    for (const [flags, message] of [
      [["--part", "3/2"], /--part must be i\/N/],
      [["--part", "0/2"], /--part must be i\/N/],
      [["--part", "x"], /--part must be i\/N/],
      [["--workers", "0"], /--workers must be a positive integer/],
      [["--part", "1/2", "--finalize"], /exclude one another/],
      [["--part", "1/2", "--dry-run"], /--dry-run prints the whole plan/],
    ] as const) {
      const r = megahub(["reshard", fixture("megatron", "bf16-tp2"), "--out", out(), "--tp", "4", "--true-vocab-size", "1000", ...flags]);
      expect(r.code, flags.join(" ")).toBe(2);
      expect(r.stderr).toMatch(message);
    }
  });
});
