/**
 * npm run bench [-- --full] [-- --only convert]
 *
 * Builds (once, cached in .bench-cache/) a synthetic checkpoint with OpenBA-v2's real widths and runs each case
 * beside `cp -r` of the same bytes and the torch approach, printing wall time, peak RSS and ratios.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { hasTorch, measure, mb, printTable, type Measurement } from "./measure.js";

const ROOT = resolve(import.meta.dirname, "..");
const CACHE = join(ROOT, ".bench-cache");
const argv = process.argv.slice(2);
const full = argv.includes("--full");
const only = argv.includes("--only") ? argv[argv.indexOf("--only") + 1] : undefined;
const CLI = join(ROOT, "bin", "megahub.js");

function checkpoint(enc: number, dec: number): string {
  const dir = join(CACHE, `ckpt-e${enc}-d${dec}-tp2`);
  if (!existsSync(join(dir, "latest_checkpointed_iteration.txt"))) {
    if (!hasTorch()) throw new Error("the bench checkpoint is built with torch: install python3-torch (Debian)");
    process.stdout.write(`building ${dir} …\n`);
    execFileSync("/usr/bin/python3", [join(ROOT, "scripts", "bench_checkpoint.py"), "--out", dir, "--enc", String(enc), "--dec", String(dec)], {
      stdio: "inherit",
    });
  }
  return dir;
}

function scratch(name: string): string {
  const p = join(CACHE, "out", name);
  rmSync(p, { recursive: true, force: true });
  mkdirSync(join(CACHE, "out"), { recursive: true });
  return p;
}

function benchConvert(enc: number, dec: number): Measurement[] {
  const ckpt = checkpoint(enc, dec);
  const rows = [measure("cp -r", "cp", ["-r", ckpt, scratch("cp")])];
  rows.push(measure("megahub convert", process.execPath, [CLI, "convert", ckpt, "--out", scratch("hf"), "--quiet"]));
  if (hasTorch()) {
    rows.push(measure("torch (load, cat, save)", "/usr/bin/python3", [join(ROOT, "scripts", "bench_torch_convert.py"), join(ckpt, "iter_0000001"), scratch("torch")]));
  }
  printTable(`convert: Megatron TP 2 → HF safetensors, ${enc}/${dec} layers (${ckpt})`, rows, "cp -r", "torch (load, cat, save)");
  return rows;
}

function benchReshard(enc: number, dec: number): Measurement[] {
  const ckpt = checkpoint(enc, dec);
  const rows = [measure("cp -r", "cp", ["-r", ckpt, scratch("cp")])];
  rows.push(measure("megahub reshard", process.execPath, [CLI, "reshard", ckpt, "--out", scratch("tp4"), "--tp", "4", "--quiet"]));
  if (hasTorch()) {
    rows.push(
      measure("torch (load, cat, chunk, save)", "/usr/bin/python3", [
        join(ROOT, "scripts", "bench_torch_split.py"),
        join(ckpt, "iter_0000001"),
        join(scratch("torch-tp4"), "iter_0000001"),
        "4",
      ]),
    );
  }
  printTable(`reshard: Megatron TP 2 → 4, ${enc}/${dec} layers`, rows, "cp -r", "torch (load, cat, chunk, save)");
  return rows;
}

execFileSync("npx", ["tsc", "-p", join(ROOT, "tsconfig.build.json")], { stdio: "inherit", cwd: ROOT });
const [enc, dec] = full ? [8, 24] : [1, 1];
if (!only || only === "convert") {
  const small = benchConvert(enc, dec);
  if (!full) {
    // Peak memory must not grow with depth: the same widths with twice the layers.
    const doubled = benchConvert(enc * 2, dec * 2);
    const rss = (rows: Measurement[]) => rows.find((r) => r.name === "megahub convert")?.peakRss ?? NaN;
    process.stdout.write(`\npeak RSS of megahub convert: ${mb(rss(small))} at ${enc}/${dec} layers, ${mb(rss(doubled))} at ${enc * 2}/${dec * 2}\n`);
  }
  const largest = 250240 * 2560 * 2;
  process.stdout.write(`largest tensor (embedding) ${mb(largest)}; target peak RSS ≤ 2 × largest + 256 MB = ${mb(2 * largest + 256e6)}\n`);
}
if (!only || only === "reshard") {
  benchReshard(enc, dec);
}
