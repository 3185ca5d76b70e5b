/**
 * The CLI in pipes, under signals, on bad paths and bad arguments: quiet EPIPE, staging removed on SIGINT/SIGTERM
 * and after dead runs, one-line OS errors, exit codes as the README says, JSON errors under --json, progress that
 * fits the terminal and shows up in logs.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createReporter, renderBar } from "../src/cli/reporter.js";
import { isMegahubError } from "../src/errors.js";
import { checkFreeSpace } from "../src/plan/run.js";
import { fixture, hasFixture, ROOT } from "./helpers/fixtures.js";
import { megahub } from "./helpers/cli.js";
import { spawnHubServe } from "./hub-helpers.js";

const work = mkdtempSync(join(tmpdir(), "megahub-cli-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));
const CKPT = fixture("megatron", "fp32-tp1");
const BIN = join(ROOT, "bin", "megahub.js");

describe("exit codes and errors", () => {
  it.each([
    ["unknown positional", ["inspect", CKPT, "extra"], 2, /unexpected argument "extra"/],
    ["unknown option", ["inspect", CKPT, "--nope"], 2, /Unknown option/],
    ["unknown command", ["nope"], 2, /unknown command "nope"/],
    ["an Object.prototype name is an unknown command", ["constructor"], 2, /unknown command "constructor"/],
    ["toString too", ["toString"], 2, /unknown command "toString"/],
    ["--max-shard-size without a unit", ["convert", CKPT, "--out", join(work, "x"), "--max-shard-size", "200"], 2, /give a unit/],
    ["missing input is bad input, not usage", ["inspect", join(work, "missing")], 1, /no such file or directory/],
  ])("%s", (_name, args, code, message) => {
    const r = megahub(args);
    expect(r.code, r.stderr).toBe(code);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const j = megahub([...args, "--json"]);
    expect(j.code).toBe(code);
    expect(j.json<{ ok: boolean; error: { message: string } }>()).toMatchObject({ ok: false, error: { message: expect.stringMatching(message) } });
  });

  it("--out under /proc fails at once with one line", () => {
    const t0 = performance.now();
    const r = megahub(["convert", CKPT, "--out", "/proc/megahub-test/out"], { timeout: 30_000 });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/\/proc\/megahub-test: no such file or folder \(ENOENT during mkdir\)/);
    expect(performance.now() - t0).toBeLessThan(20_000);
  });

  it("an --out that is a file is one line", () => {
    const file = join(work, "a-file");
    writeFileSync(file, "x");
    const r = megahub(["convert", CKPT, "--out", join(file, "out")]);
    expect(r.code).toBe(1);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("refuses a plan that does not fit the free space", async () => {
    const plan = { files: [{ kind: "custom" as const, path: "huge.bin", bytes: 1e18, tensors: [], write: async () => undefined }], notes: [] };
    const err = await checkFreeSpace(plan, work).catch((e: unknown) => e);
    expect(isMegahubError(err) && /needs .* GB but only .* GB is free/.test(err.message)).toBe(true);
    await expect(checkFreeSpace({ files: [], notes: [] }, work)).resolves.toBeUndefined();
  });
});

describe("pipes and signals", () => {
  it("a closed pipe (| true) is a quiet exit 0", () => {
    const r = spawnSync("bash", ["-c", `"${process.execPath}" "${BIN}" inspect "${CKPT}" --tensors | true; echo "status=\${PIPESTATUS[0]}"`], { encoding: "utf8" });
    expect(r.stdout).toContain("status=0");
    expect(r.stderr).not.toMatch(/EPIPE|\n\s+at /);
  });

  it.skipIf(!hasFixture("megatron", "bf16-tp4"))("SIGINT/SIGTERM remove the staging folder and exit 130/143", async () => {
    let landed = 0;
    for (let i = 0; i < 12 && landed < 2; i++) {
      const parent = join(work, `sig${i}`);
      mkdirSync(parent);
      const signal = i % 2 === 0 ? "SIGINT" : "SIGTERM";
      const child = spawn(process.execPath, [BIN, "convert", fixture("megatron", "bf16-tp4"), "--out", join(parent, "out")], { stdio: "ignore" });
      const code = await new Promise<number | null>((done) => {
        const poll = setInterval(() => {
          if (readdirSync(parent).some((n) => n.includes(".tmp-"))) {
            clearInterval(poll);
            child.kill(signal);
          }
        }, 1);
        child.on("exit", (c) => {
          clearInterval(poll);
          done(c);
        });
      });
      if (code === 0) continue; // finished before the signal arrived
      landed++;
      expect(code).toBe(signal === "SIGINT" ? 130 : 143);
      expect(readdirSync(parent)).toEqual([]);
    }
    expect(landed).toBeGreaterThan(0);
  });

  it("a later run removes the staging leftovers of dead runs and says so", () => {
    const parent = join(work, "stale");
    mkdirSync(parent);
    let pid = 4_000_000;
    while (existsSync(`/proc/${pid}`)) pid++;
    const stale = join(parent, `.old.tmp-${pid}-abcdef`);
    mkdirSync(stale);
    writeFileSync(join(stale, "model.safetensors"), "x");
    const r = megahub(["convert", CKPT, "--out", join(parent, "out")]);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(stale)).toBe(false);
    expect(r.stderr).toMatch(/removed 1 staging leftover.*\.old\.tmp-/);
  });
});

describe("progress", () => {
  it.each([40, 60, 80, 200])("a bar fits %d columns", (cols) => {
    for (const label of ["reshard", "prune-vocab", "uploading"]) {
      const line = renderBar(label, 3_500_000_000, 14_100_000_000, 37.5, cols - 1);
      expect(line.length).toBeLessThanOrEqual(cols - 1);
      expect(line).toMatch(/25%/);
    }
  });

  it("off a terminal, prints a line every interval and at the end", () => {
    const err = new PassThrough();
    let text = "";
    err.on("data", (d: Buffer) => (text += d.toString()));
    let t = 0;
    const r = createReporter({ json: false, quiet: false, err, out: new PassThrough(), now: () => t, logIntervalSeconds: 10 });
    for (t = 0; t <= 35_000; t += 500) r.progress("convert", t, 40_000);
    r.progress("convert", 40_000, 40_000);
    const lines = text.trim().split("\n");
    expect(lines).toHaveLength(4); // at 10 s, 20 s, 30 s, and done
    expect(lines.at(-1)).toMatch(/100%/);
  });
});

describe.skipIf(!hasFixture("megatron", "fp32-tp1"))("verify", () => {
  it("keeps a PASS when the result cannot be recorded", () => {
    const dir = join(work, "hf-ro");
    expect(megahub(["convert", CKPT, "--out", dir]).code).toBe(0);
    rmSync(join(dir, "megahub.json"));
    mkdirSync(join(dir, "megahub.json")); // cannot be read or replaced as a file, even by root
    const r = megahub(["verify", dir, "--reference", fixture("reference", "fp32-tp1.safetensors")]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("PASS");
    expect(r.stderr).toMatch(/could not record the result .*the verdict stands/);
  });
});

describe.skipIf(!hasFixture("megatron", "fp32-tp1"))("every writing command takes --dry-run", () => {
  const dry = join(work, "dry");
  const hubData = join(work, "dry-hub");
  const token = "hf_dryRunToken1";
  let hubUrl = "";
  let server: ReturnType<typeof spawn> | undefined;
  const HF = join(dry, "hf");
  const TAR = join(dry, "hf.tar");

  beforeAll(async () => {
    mkdirSync(dry, { recursive: true });
    expect(megahub(["convert", CKPT, "--out", HF, "--quiet"]).code).toBe(0);
    expect(megahub(["pack", HF, "--out", TAR, "--quiet"]).code).toBe(0);
    ({ url: hubUrl, server } = await spawnHubServe(["--data", hubData, "--token", token]));
    const { pushFolder } = await import("../src/hub/push-folder.js");
    await pushFolder({ dir: HF, repo: "local/dry", hubUrl, accessToken: token });
  }, 120_000);
  afterAll(() => void server?.kill("SIGTERM"));

  /** Every file under the test's folders and the hub's storage, with size and mtime: a dry run must change none. */
  const snapshot = () => {
    const out: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else out.push(`${p} ${statSync(p).size} ${statSync(p).mtimeMs}`);
      }
    };
    walk(work);
    walk(CKPT);
    return out.sort();
  };

  it.each([
    ["convert", () => ["convert", CKPT, "--out", join(dry, "out")]],
    ["reshard", () => ["reshard", CKPT, "--out", join(dry, "out"), "--tp", "2", "--tokenizer", fixture("tokenizer", "spiece.model")]],
    ["prune", () => ["prune", CKPT, "--out", join(dry, "out"), "--ffn", "100", "--strategy", "magnitude"]],
    ["prune-vocab", () => ["prune-vocab", CKPT, "--out", join(dry, "out"), "--tokenizer", fixture("tokenizer", "spiece.model"), "--corpus", fixture("corpus", "train.txt"), "--keep", "700"]],
    ["to-megatron", () => ["to-megatron", HF, "--out", join(dry, "out"), "--tp", "1"]],
    ["push", () => ["push", HF, "--repo", "local/dry-new", "--hub-url", hubUrl, "--token", token]],
    ["pull", () => ["pull", "local/dry", "--out", join(dry, "out"), "--hub-url", hubUrl]],
    ["pack", () => ["pack", HF, "--out", join(dry, "out.tar")]],
    ["unpack", () => ["unpack", TAR, "--out", join(dry, "out")]],
    ["export-onnx", () => ["export-onnx", HF, "--out", join(dry, "out")]],
    ["vocab count", () => ["vocab", "count", fixture("corpus", "train.txt"), "--tokenizer", fixture("tokenizer", "spiece.model"), "--out", join(dry, "freq.tsv")]],
    ["gpu install", () => ["gpu", "install"]],
  ])("%s --dry-run prints the plan, also as JSON, and writes nothing", (name, args) => {
    const before = snapshot();
    const human = megahub([...args(), "--dry-run"]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stderr + human.stdout).toMatch(/dry run|plan|would/i);
    const j = megahub([...args(), "--dry-run", "--json"]);
    expect(j.code, j.stderr).toBe(0);
    const res = j.json<{ ok: boolean; dryRun?: boolean; out?: string; outDir?: string }>();
    expect(res.ok).toBe(true);
    expect(res.dryRun, name).toBe(true);
    expect(snapshot()).toEqual(before);
  });

  it.each([
    ["pack", () => ["pack", HF, "--out", TAR], /already exists/],
    ["unpack", () => ["unpack", TAR, "--out", HF], /already exists/],
    ["export-onnx", () => ["export-onnx", HF, "--out", HF], /already exists/],
    ["pull", () => ["pull", "local/dry", "--out", HF, "--hub-url", hubUrl], /already exists/],
    ["vocab count", () => ["vocab", "count", join(dry, "missing.txt"), "--tokenizer", fixture("tokenizer", "spiece.model"), "--out", join(dry, "freq.tsv")], /cannot read the corpus file/, 2],
    ["gpu install", () => ["gpu", "install", "--from", join(dry, "missing")], /no such file or folder/, 2],
  ])("%s --dry-run refuses what the real run refuses", (_name, args, message, code = 1) => {
    const r = megahub([...args(), "--dry-run"]);
    expect(r.code).toBe(code);
    expect(megahub(args()).code, "the real run").toBe(code);
    expect(r.stderr).toMatch(message);
  });

  it("pack and unpack plans list the files the real runs write", () => {
    const plan = megahub(["unpack", TAR, "--out", join(dry, "u"), "--dry-run", "--json"]).json<{ files: number; bytes: number; members: Array<{ path: string }> }>();
    const real = megahub(["unpack", TAR, "--out", join(dry, "u"), "--json"]).json<{ files: number; bytes: number }>();
    expect({ files: plan.files, bytes: plan.bytes }).toEqual({ files: real.files, bytes: real.bytes });
    const packPlan = megahub(["pack", HF, "--out", join(dry, "p.tar"), "--dry-run", "--json"]).json<{ files: number; bytes: number }>();
    expect({ files: packPlan.files, bytes: packPlan.bytes }).toEqual({ files: real.files, bytes: real.bytes });
    rmSync(join(dry, "u"), { recursive: true, force: true });
  });
});
