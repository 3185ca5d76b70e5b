/**
 * npm run bench [-- --full] [-- --only convert]
 *
 * Builds (once, cached in .bench-cache/) synthetic checkpoints with OpenBA-v2's real widths and runs each case of
 * CASES beside `dd bs=16M` and `cp -r` of the same input bytes and the torch approach, printing wall time, peak RSS
 * and ratios per case, then one summary row per case. `--only convert` runs the cases whose name starts so.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
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

/** Every regular file under `dir` (the input bytes a case reads). */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

/** `dd bs=16M` of every input file into a scratch folder: the user-space copy floor for the same input bytes. */
function ddRow(input: string): Measurement {
  const out = scratch("dd");
  const script = filesUnder(input).map((f, i) => `dd if='${f}' of='${out}/${i}' bs=16M status=none`).join(" && ");
  return measure("dd bs=16M", "sh", ["-c", `mkdir -p '${out}' && ${script}`], clear(out));
}

/**
 * A bench case: one megahub command on a checkpoint, timed beside `dd` and `cp -r` of the same input and, where a
 * script exists, the torch approach. Add a case by adding an entry to CASES; each prints its table and one row of
 * the summary.
 */
interface BenchCase {
  /** Summary row label. */
  name: string;
  /** Table title. */
  title: string;
  input: () => string;
  /** megahub arguments after the input; `--out <dir> --quiet` are added. */
  args: string[];
  /** The torch approach: script and its arguments after the input's iteration dir and an output path. */
  torch?: { script: string; args?: string[]; outSuffix?: string };
  /** Extra megahub rows: more flags each (a split needs several output files, so not every case has one). */
  variants?: string[][];
  /** Bytes of the checkpoint's largest tensor: the peak-RSS target is 2 × this + 256 MB. */
  largest: number;
}

/** The Llama-shaped Megatron-Core checkpoint (hidden 2048, GQA 32/8, FFN 5632, vocab 128256, TP 2 × PP 2, bf16). */
function llamaCheckpoint(layers: number): string {
  const dir = join(CACHE, `llama-l${layers}-tp2-pp2`);
  if (!existsSync(join(dir, "latest_checkpointed_iteration.txt"))) {
    if (!hasTorch()) throw new Error("the bench checkpoint is built with torch: install python3-torch (Debian)");
    process.stdout.write(`building ${dir} …\n`);
    execFileSync("/usr/bin/python3", [join(ROOT, "scripts", "bench_llama_checkpoint.py"), "--out", dir, "--layers", String(layers)], { stdio: "inherit" });
  }
  return dir;
}

/** The many-expert MoE checkpoint (Qwen2-MoE style: experts of FFN 1408 + a gated shared expert, TP 1 × EP 4, bf16). */
function moeCheckpoint(layers: number, experts: number): string {
  const dir = join(CACHE, `moe-l${layers}-e${experts}-ep4`);
  if (!existsSync(join(dir, "latest_checkpointed_iteration.txt"))) {
    if (!hasTorch()) throw new Error("the bench checkpoint is built with torch: install python3-torch (Debian)");
    process.stdout.write(`building ${dir} …\n`);
    execFileSync("/usr/bin/python3", [join(ROOT, "scripts", "bench_moe_checkpoint.py"), "--out", dir, "--layers", String(layers), "--experts", String(experts)], { stdio: "inherit" });
  }
  return dir;
}

const CASES: BenchCase[] = [];
for (const layers of full ? [16] : [4, 8]) {
  const input = () => llamaCheckpoint(layers);
  const largest = 128256 * 2048 * 2;
  CASES.push(
    { name: `llama convert ${layers}L`, title: `convert: Megatron-Core Llama TP 2 × PP 2 → HF LlamaForCausalLM, ${layers} layers`, input, args: ["convert"], torch: { script: "bench_torch_llama_convert.py" }, largest },
    { name: `llama reshard ${layers}L`, title: `reshard: Megatron-Core Llama TP 2 × PP 2 → TP 1 × PP 4, ${layers} layers`, input, args: ["reshard", "--tp", "1", "--pp", "4"], variants: [["--workers", "2"]], largest },
  );
}
// Peak RSS must not grow with the expert count: the same model with 16 and with 64 experts.
for (const [layers, experts] of full ? [[8, 64]] : [[2, 16], [2, 64]]) {
  const input = () => moeCheckpoint(layers as number, experts as number);
  const largest = 32000 * 2048 * 2;
  const what = `Megatron-Core MoE, ${experts} experts`;
  CASES.push({ name: `moe convert ${layers}L ${experts}E`, title: `convert: ${what}, TP 1 × EP 4 → HF Qwen2MoeForCausalLM, ${layers} layers`, input, args: ["convert"], torch: { script: "bench_torch_moe_convert.py" }, largest });
  if (experts === 64) CASES.push({ name: `moe reshard ${layers}L ${experts}E`, title: `reshard: ${what}, EP 4 → EP 1, ${layers} layers`, input, args: ["reshard", "--tp", "1", "--ep", "1"], largest });
}
for (const [enc, dec] of full ? [[8, 24]] : [[1, 1], [2, 2]]) {
  const input = () => checkpoint(enc as number, dec as number);
  const largest = 250240 * 2560 * 2;
  CASES.push(
    { name: `convert ${enc}+${dec}`, title: `convert: Megatron TP 2 → HF safetensors, ${enc}/${dec} layers`, input, args: ["convert"], torch: { script: "bench_torch_convert.py" }, largest },
    { name: `reshard ${enc}+${dec}`, title: `reshard: Megatron TP 2 → 4, ${enc}/${dec} layers`, input, args: ["reshard", "--tp", "4", "--true-vocab-size", "250204"], torch: { script: "bench_torch_split.py", args: ["4"], outSuffix: "iter_0000001" }, variants: [["--workers", "2"]], largest },
    { name: `prune ${enc}+${dec}`, title: `prune: Megatron TP 2 → HF, hidden 2560→1280, 20→10 heads, FFN 6912→3456, ${enc}/${dec} layers`, input, args: ["prune", "--hidden", "1280", "--heads", "10", "--ffn", "3456"], largest },
  );
}

interface CaseResult {
  bench: BenchCase;
  rows: Measurement[];
}

function runCase(c: BenchCase): CaseResult {
  const ckpt = c.input();
  const [command, ...rest] = c.args as [string, ...string[]];
  const megahub = (label: string, extra: string[]) =>
    measure(label, process.execPath, [CLI, command, ckpt, ...rest, "--out", scratch("megahub"), "--quiet", ...extra], clear(scratch("megahub")));
  const rows = [ddRow(ckpt), measure("cp -r", "cp", ["-r", ckpt, scratch("cp")], clear(scratch("cp")))];
  rows.push(megahub("megahub", []));
  for (const flags of [["--no-hash"], ...(c.variants ?? [])]) rows.push(megahub(`megahub ${flags.join(" ")}`, flags));
  if (c.torch && hasTorch()) {
    const out = c.torch.outSuffix ? join(scratch("torch"), c.torch.outSuffix) : scratch("torch");
    rows.push(measure("torch", "/usr/bin/python3", [join(ROOT, "scripts", c.torch.script), join(ckpt, "iter_0000001"), out, ...(c.torch.args ?? [])], clear(scratch("torch"))));
  }
  printTable(c.title, rows, "dd bs=16M", c.torch && hasTorch() ? "torch" : undefined);
  return { bench: c, rows };
}

/** CLI start-up: `megahub --help` (loads the command table, no command module). */
function startup(): number {
  return measure("megahub --help", process.execPath, [CLI, "--help"]).seconds;
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
process.stdout.write(`load average at start: ${loadavg().map((l) => l.toFixed(2)).join(" ")} (${availableParallelism()} cores)\n`);
const results: CaseResult[] = [];
const start = startup();
for (const c of CASES) if (!only || c.name.startsWith(only)) results.push(runCase(c));
if (results.length > 0) printSummary(results, start);
if (!only || only === "forward") {
  await benchForward(full ? 8 : 1, full ? 24 : 1);
}
if (!only || only === "count") {
  benchCount();
}
process.stdout.write(`load average at end: ${loadavg().map((l) => l.toFixed(2)).join(" ")}\n`);

/** One row per case: the ratios the targets are stated in. */
function printSummary(all: CaseResult[], startSeconds: number): void {
  const get = (r: CaseResult, name: string) => r.rows.find((m) => m.name === name);
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? "—" : `${(a / b).toFixed(2)}×`);
  process.stdout.write(`\nsummary (start-up ${startSeconds.toFixed(2)} s, subtracted in "− start-up"; peak RSS target ≤ 2 × the largest tensor + 256 MB)\n`);
  const rows = all.map((r) => {
    const dd = get(r, "dd bs=16M")?.seconds;
    const m = get(r, "megahub");
    const bare = get(r, "megahub --no-hash")?.seconds;
    const torch = get(r, "torch")?.seconds;
    return [
      r.bench.name,
      ratio(m && m.seconds - startSeconds, dd),
      ratio(bare && bare - startSeconds, dd),
      ratio(get(r, "megahub --workers 2")?.seconds, dd),
      ratio(torch, m?.seconds),
      ratio(m?.cpu, get(r, "dd bs=16M")?.cpu),
      ratio(get(r, "torch")?.cpu, m?.cpu),
      mb(m?.peakRss ?? NaN),
      mb(2 * r.bench.largest + 256e6),
    ];
  });
  const header = ["case", "wall: megahub − start-up ÷ dd", "--no-hash ÷ dd", "--workers 2 ÷ dd", "torch ÷ megahub", "cpu: megahub ÷ dd", "torch ÷ megahub", "megahub peak RSS", "RSS target"];
  const widths = header.map((_, i) => Math.max(...[header, ...rows].map((row) => (row[i] ?? "").length)));
  const line = (row: string[]) => `| ${row.map((c, i) => c.padEnd(widths[i] as number)).join(" | ")} |`;
  process.stdout.write(`${line(header)}\n|${widths.map((w) => "-".repeat(w + 2)).join("|")}|\n${rows.map(line).join("\n")}\n`);
}
