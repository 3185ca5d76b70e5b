/**
 * npm run bench [-- --full] [-- --only convert]
 *
 * Builds (once, cached in .bench-cache/) a synthetic checkpoint with OpenBA-v2's real widths and runs each case
 * beside `cp -r` of the same bytes and the torch approach, printing wall time, peak RSS and ratios.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { encodeHeader } from "../src/formats/safetensors/header.js";
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

/** An output path under the cache, removed before each timed run (megahub refuses to overwrite an output). */
function scratch(name: string): string {
  mkdirSync(join(CACHE, "out"), { recursive: true });
  return join(CACHE, "out", name);
}

const clear = (...paths: string[]) => () => paths.forEach((p) => rmSync(p, { recursive: true, force: true }));

function benchConvert(enc: number, dec: number): Measurement[] {
  const ckpt = checkpoint(enc, dec);
  const rows = [measure("cp -r", "cp", ["-r", ckpt, scratch("cp")], clear(scratch("cp")))];
  rows.push(measure("megahub convert", process.execPath, [CLI, "convert", ckpt, "--out", scratch("hf"), "--quiet"], clear(scratch("hf"))));
  if (hasTorch()) {
    rows.push(measure("torch (load, cat, save)", "/usr/bin/python3", [join(ROOT, "scripts", "bench_torch_convert.py"), join(ckpt, "iter_0000001"), scratch("torch")], clear(scratch("torch"))));
  }
  printTable(`convert: Megatron TP 2 → HF safetensors, ${enc}/${dec} layers (${ckpt})`, rows, "cp -r", "torch (load, cat, save)");
  return rows;
}

function benchReshard(enc: number, dec: number): Measurement[] {
  const ckpt = checkpoint(enc, dec);
  const rows = [measure("cp -r", "cp", ["-r", ckpt, scratch("cp")], clear(scratch("cp")))];
  rows.push(measure("megahub reshard", process.execPath, [CLI, "reshard", ckpt, "--out", scratch("tp4"), "--tp", "4", "--true-vocab-size", "250204", "--quiet"], clear(scratch("tp4"))));
  if (hasTorch()) {
    rows.push(
      measure("torch (load, cat, chunk, save)", "/usr/bin/python3", [
        join(ROOT, "scripts", "bench_torch_split.py"),
        join(ckpt, "iter_0000001"),
        join(scratch("torch-tp4"), "iter_0000001"),
        "4",
      ], clear(scratch("torch-tp4"))),
    );
  }
  printTable(`reshard: Megatron TP 2 → 4, ${enc}/${dec} layers`, rows, "cp -r", "torch (load, cat, chunk, save)");
  return rows;
}

function benchPrune(enc: number, dec: number): Measurement[] {
  const ckpt = checkpoint(enc, dec);
  const rows = [measure("cp -r", "cp", ["-r", ckpt, scratch("cp")], clear(scratch("cp")))];
  rows.push(
    measure("megahub prune (width to half)", process.execPath, [
      CLI, "prune", ckpt, "--out", scratch("pruned"), "--hidden", "1280", "--heads", "10", "--ffn", "3456", "--quiet",
    ], clear(scratch("pruned"))),
  );
  printTable(`prune: Megatron TP 2 → HF, hidden 2560→1280, 20→10 heads, FFN 6912→3456, ${enc}/${dec} layers`, rows, "cp -r");
  return rows;
}

/** One forward pass in ONNX Runtime (CPU) beside the PyTorch reference forward on CPU, same weights, same ids. */
async function benchForward(enc: number, dec: number): Promise<void> {
  const hf = join(CACHE, `hf-e${enc}-d${dec}`);
  if (!existsSync(join(hf, "config.json"))) {
    rmSync(hf, { recursive: true, force: true });
    execFileSync(process.execPath, [CLI, "convert", checkpoint(enc, dec), "--out", hf, "--quiet"], { stdio: "inherit" });
  }
  const inputs = join(CACHE, "forward-inputs.safetensors");
  writeInputs(inputs, 2, 12, 8, 250_240);
  const { timeForward } = await import("../dist/verify/bench.js");
  const ort = await timeForward(hf, inputs, { device: "cpu", warmup: 1, iterations: 3 });
  const rows: string[][] = [["ONNX Runtime (CPU)", ort.medianMs.toFixed(0), (ort.sessionMs / 1000).toFixed(1)]];
  let torchMs = NaN;
  if (hasTorch()) {
    const out = execFileSync("/usr/bin/python3", [join(ROOT, "scripts", "bench_torch_forward.py"), hf, inputs, "--heads", "20", "--kv-channels", "128"], {
      encoding: "utf8",
    });
    const t = JSON.parse(out.trim().split("\n").at(-1) as string) as { median_ms: number; load_ms: number; threads: number };
    torchMs = t.median_ms;
    rows.push([`PyTorch reference (CPU, ${t.threads} threads)`, t.median_ms.toFixed(0), (t.load_ms / 1000).toFixed(1)]);
  }
  process.stdout.write(`\nforward: batch 2 × 12 → 8 tokens, OpenBA-v2 widths, ${enc}/${dec} layers (fp16 weights, fp32 compute)\n`);
  for (const r of [["case", "median ms", "load s"], ...rows]) process.stdout.write(`| ${r.map((c, i) => c.padEnd(i === 0 ? 34 : 10)).join(" | ")} |\n`);
  if (!Number.isNaN(torchMs)) process.stdout.write(`torch ÷ ORT = ${(torchMs / ort.medianMs).toFixed(1)}×\n`);
}

/** A safetensors file of random token ids in the reference layout (input_ids, attention_mask, decoder_input_ids). */
function writeInputs(path: string, batch: number, src: number, tgt: number, vocab: number): void {
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % vocab);
  const ids = (n: number, first?: number) => BigInt64Array.from({ length: n }, (_, i) => BigInt(i % (n / batch) === 0 && first !== undefined ? first : rand()));
  const tensors = [
    { name: "input_ids", shape: [batch, src], data: ids(batch * src) },
    { name: "attention_mask", shape: [batch, src], data: BigInt64Array.from({ length: batch * src }, () => 1n) },
    { name: "decoder_input_ids", shape: [batch, tgt], data: ids(batch * tgt, 0) },
  ];
  const { bytes } = encodeHeader(tensors.map((t) => ({ name: t.name, dtype: "I64" as const, shape: t.shape })));
  writeFileSync(path, Buffer.concat([bytes, ...tensors.map((t) => Buffer.from(t.data.buffer))]));
}

/** Token counting on a 44 MB real bilingual corpus (the fixture corpus × 200) beside Debian's spm_encode. */
function benchCount(): void {
  const corpus = join(CACHE, "corpus-x200.txt");
  if (!existsSync(corpus)) writeFileSync(corpus, readFileSync(join(ROOT, "fixtures", "corpus", "train.txt"), "utf8").repeat(200));
  const model = join(ROOT, "fixtures", "tokenizer", "spiece.model");
  const rows: Measurement[] = [];
  if (existsSync("/usr/bin/spm_encode")) {
    rows.push(measure("spm_encode (ids to /dev/null)", "sh", ["-c", `/usr/bin/spm_encode --model=${model} --output_format=id --input=${corpus} > /dev/null`]));
  }
  for (const threads of ["1", "2"]) {
    const freq = `${scratch(`freq${threads}`)}.tsv`;
    rows.push(
      measure(
        `megahub vocab count (${threads} thread${threads === "1" ? "" : "s"})`,
        process.execPath,
        [CLI, "vocab", "count", corpus, "--tokenizer", model, "--out", freq, "--threads", threads, "--quiet"],
        clear(freq),
      ),
    );
  }
  printTable(`vocab count: ${(statSync(corpus).size / 1e6).toFixed(0)} MB of real English + Chinese text`, rows, rows[0]?.name ?? "");
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
if (!only || only === "prune") {
  benchPrune(enc, dec);
}
if (!only || only === "forward") {
  await benchForward(enc, dec);
}
if (!only || only === "count") {
  benchCount();
}
