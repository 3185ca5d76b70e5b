/**
 * Seeded mutation fuzzing across megahub's input formats, shared by `npm test` (a few thousand cases) and
 * `npm run fuzz` (100,000 cases, time-bounded). Each case must end in a value or a MegahubError, within a time
 * bound; anything else is a finding. Mutations are byte-level (flips, special values, truncation, splices) plus
 * hostile pickle constructions (shared-reference expansion, huge LONG4, deep nesting, many dict entries).
 */
import { readFileSync } from "node:fs";
import { isMegahubError } from "../../src/errors.js";
import { dimsFromHfConfig } from "../../src/ops/prune/plan.js";
import { argsToJson } from "../../src/formats/megatron/read.js";
import { readSafetensors } from "../../src/formats/safetensors/read.js";
import { parseSentencePieceModel } from "../../src/formats/sentencepiece/model.js";
import { indexTar } from "../../src/formats/tar/index.js";
import { loadTorch } from "../../src/formats/torch/load.js";
import { unpickle } from "../../src/formats/torch/pickle-read.js";
import { sanitizeValue } from "../../src/formats/torch/sanitize.js";
import { pickleValue } from "../../src/formats/torch/pickle-write.js";
import { readZip } from "../../src/formats/torch/zip.js";
import { PyCall, PyDict, PyGlobal, PyTuple, walkTensors } from "../../src/formats/torch/values.js";
import { bytesSource } from "../../src/io/byte-source.js";
import { parseJsonObject } from "../../src/io/json-file.js";
import { fixture } from "./fixtures.js";
import { rng } from "./rng.js";

export interface FuzzTarget {
  readonly name: string;
  readonly seed: Uint8Array;
  run(bytes: Uint8Array): Promise<unknown>;
}

export interface FuzzFinding {
  target: string;
  case: number;
  kind: "crash" | "slow";
  detail: string;
}

export interface FuzzReport {
  cases: number;
  byTarget: Record<string, { cases: number; typed: number; ok: number; maxMs: number }>;
  findings: FuzzFinding[];
  seconds: number;
  peakRssMb: number;
}

type Rand = () => number;


const u32 = (n: number) => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
};
const cat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

/** Hostile pickles built from opcodes: each is small and would be costly to a reader without bounds. */
function hostilePickle(r: Rand): Uint8Array {
  const P = Uint8Array.of(0x80, 2);
  const STOP = Uint8Array.of(0x2e);
  switch (Math.floor(r() * 5)) {
    case 0: {
      // shared-reference expansion: l = [l]*k, depth d, through the memo
      const k = 2 + Math.floor(r() * 200);
      const d = 2 + Math.floor(r() * 40);
      const parts = [P, Uint8Array.of(0x5d, 0x71, 0)];
      for (let i = 1; i <= d; i++) {
        parts.push(Uint8Array.of(0x30, 0x5d, 0x28));
        for (let j = 0; j < k; j++) parts.push(Uint8Array.of(0x6a), u32(i - 1));
        parts.push(Uint8Array.of(0x65, 0x72), u32(i));
      }
      return cat(...parts, STOP);
    }
    case 1: {
      const n = Math.floor(r() * (2 << 20));
      return cat(P, Uint8Array.of(0x8b), u32(n), new Uint8Array(n).fill(0x7f), STOP);
    }
    case 2: {
      const n = Math.floor(r() * 50_000);
      return cat(P, new Uint8Array(n).fill(0x5d), new Uint8Array(Math.max(0, n - 1)).fill(0x61), STOP);
    }
    case 3: {
      const n = Math.floor(r() * 100_000);
      const body = new Uint8Array(n * 6);
      for (let i = 0; i < n; i++) body.set([0x4a, i & 0xff, (i >> 8) & 0xff, (i >> 16) & 0xff, 0, 0x4e], i * 6);
      return cat(P, Uint8Array.of(0x7d, 0x28), body, Uint8Array.of(0x75), STOP);
    }
    default: {
      // DUP storms and MARK floods
      const n = Math.floor(r() * 100_000);
      return cat(P, Uint8Array.of(0x4e), new Uint8Array(n).fill(r() < 0.5 ? 0x32 : 0x28), STOP);
    }
  }
}

/** One mutation of `seed`. */
export function mutate(seed: Uint8Array, r: Rand, headBias = 4096): Uint8Array {
  let m = seed.slice();
  const edits = 1 + Math.floor(r() * 6);
  for (let k = 0; k < edits && m.length > 0; k++) {
    const at = r() < 0.7 ? Math.floor(r() * Math.min(m.length, headBias)) : Math.floor(r() * m.length);
    const op = r();
    if (op < 0.45) m[at] = Math.floor(r() * 256);
    else if (op < 0.6) m[at] = [0, 0xff, 0x7f, 0x80, 0x2e, 0x28][Math.floor(r() * 6)] as number;
    else if (op < 0.7) m = m.slice(0, at);
    else if (op < 0.85) {
      const len = Math.floor(r() * 64);
      const from = Math.floor(r() * m.length);
      m = cat(m.subarray(0, at), m.subarray(from, from + len), m.subarray(at));
    } else {
      const len = 1 + Math.floor(r() * 32);
      m = cat(m.subarray(0, at), m.subarray(Math.min(m.length, at + len)));
    }
  }
  return m;
}

async function drain(file: Awaited<ReturnType<typeof loadTorch>>): Promise<void> {
  let n = 0;
  for (const [, t] of walkTensors(file.root)) {
    if (n++ >= 4) break;
    const src = file.storageSource(t.storage);
    await src.read(0, Math.min(src.size, 1 << 16));
    if (src.size <= 1 << 16) continue;
    await src.read(0, src.size); // whole record: the CRC path
  }
}

/** The targets: every format megahub reads, each from a real fixture. */
export async function fuzzTargets(): Promise<FuzzTarget[]> {
  const pt = new Uint8Array(readFileSync(fixture("megatron", "fp32-tp1", "iter_0002000", "mp_rank_00", "model_optim_rng.pt")));
  const zip = await readZip(bytesSource(pt, "ckpt.pt"));
  const pklName = [...zip.entries.keys()].find((k) => k.endsWith("data.pkl")) as string;
  const pkl = await (await zip.open(pklName)).read(0, (zip.entries.get(pklName) as { size: number }).size);
  const st = new Uint8Array(readFileSync(fixture("reference", "fp32-tp1.safetensors")));
  const spm = new Uint8Array(readFileSync(fixture("tokenizer", "spiece.model")));
  const config = new Uint8Array(readFileSync(fixture("configs", "openba-v2-config.json")));
  const tar = tarOf([["ckpt/latest_checkpointed_iteration.txt", new TextEncoder().encode("release")], ["ckpt/release/mp_rank_00/model_optim_rng.pt", pkl]]);
  const pickleRun = (b: Uint8Array) => {
    const { value } = unpickle(b, "data.pkl", { persistentLoad: (pid) => pid });
    [...walkTensors(value)];
    const ns = new PyCall(new PyGlobal("argparse", "Namespace"), new PyTuple([]), "newobj");
    ns.state = new PyDict([["v", value]]);
    JSON.stringify(argsToJson(ns));
    const safe = sanitizeValue(value);
    pickleValue(safe.value);
    return Promise.resolve();
  };
  return [
    { name: "pickle", seed: pkl, run: pickleRun },
    { name: "torch-zip", seed: pt, run: async (b) => drain(await loadTorch(bytesSource(b, "m.pt"))) },
    {
      name: "safetensors",
      seed: st,
      run: async (b) => {
        const f = await readSafetensors(bytesSource(b, "m.safetensors"));
        for (const e of f.entries.slice(0, 4)) await f.tensorSource(e).read(0, e.end - e.begin);
      },
    },
    { name: "tar", seed: tar, run: async (b) => indexTar(bytesSource(b, "m.tar")) },
    { name: "sentencepiece", seed: spm, run: (b) => Promise.resolve(parseSentencePieceModel(b, "m.model")) },
    { name: "config-json", seed: config, run: (b) => Promise.resolve(dimsFromHfConfig(parseJsonObject(new TextDecoder().decode(b), "config.json"))) },
  ];
}

function tarOf(files: [string, Uint8Array][]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [name, body] of files) {
    const h = new Uint8Array(512);
    const enc = new TextEncoder();
    h.set(enc.encode(name).subarray(0, 100), 0);
    h.set(enc.encode("0000644\0"), 100);
    h.set(enc.encode(`${body.length.toString(8).padStart(11, "0")}\0`), 124);
    h.set(enc.encode("0"), 156);
    h.set(enc.encode("ustar\0"), 257);
    h.fill(0x20, 148, 156);
    const sum = h.reduce((a, b) => a + b, 0);
    h.set(enc.encode(`${sum.toString(8).padStart(6, "0")}\0 `), 148);
    parts.push(h, body, new Uint8Array((512 - (body.length % 512)) % 512));
  }
  parts.push(new Uint8Array(1024));
  return cat(...parts);
}

/**
 * Runs `cases` mutations spread over the targets (or until `seconds` pass). A case slower than `slowMs` is a
 * finding as well as a crash: bounded work is part of the contract.
 */
export async function fuzz(options: { cases: number; seed: number; seconds?: number; slowMs?: number; targets?: FuzzTarget[] }): Promise<FuzzReport> {
  const targets = options.targets ?? (await fuzzTargets());
  const r = rng(options.seed);
  const slowMs = options.slowMs ?? 2000;
  const t0 = performance.now();
  const report: FuzzReport = { cases: 0, byTarget: {}, findings: [], seconds: 0, peakRssMb: 0 };
  for (let i = 0; i < options.cases; i++) {
    if (options.seconds !== undefined && performance.now() - t0 > options.seconds * 1000) break;
    const target = targets[i % targets.length] as FuzzTarget;
    const stats = (report.byTarget[target.name] ??= { cases: 0, typed: 0, ok: 0, maxMs: 0 });
    const input = target.name === "pickle" && r() < 0.05 ? hostilePickle(r) : mutate(target.seed, r);
    const c0 = performance.now();
    try {
      await target.run(input);
      stats.ok++;
    } catch (e) {
      if (isMegahubError(e)) stats.typed++;
      else report.findings.push({ target: target.name, case: i, kind: "crash", detail: String((e as Error).stack ?? e).split("\n").slice(0, 3).join(" | ") });
    }
    const ms = performance.now() - c0;
    if (ms > slowMs) report.findings.push({ target: target.name, case: i, kind: "slow", detail: `${ms.toFixed(0)} ms` });
    stats.maxMs = Math.max(stats.maxMs, ms);
    stats.cases++;
    report.cases++;
    if (i % 256 === 0) report.peakRssMb = Math.max(report.peakRssMb, process.memoryUsage().rss / 2 ** 20);
  }
  report.seconds = (performance.now() - t0) / 1000;
  return report;
}
