/**
 * Small inputs that used to cost far too much: every reader bounds its work and memory and answers with a typed
 * error (or the right answer) in well under a second.
 */
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isMegahubError } from "../src/errors.js";
import { argsToJson, plain } from "../src/formats/megatron/read.js";
import { unpickle } from "../src/formats/torch/pickle-read.js";
import { readZip } from "../src/formats/torch/zip.js";
import { PyCall, PyDict, PyGlobal, PyList, PyTuple, walkTensors } from "../src/formats/torch/values.js";
import { FileSource } from "../src/io/byte-source.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { megahub } from "./helpers/cli.js";
import { HAS_TORCH, PY_PRELUDE, runPython } from "./helpers/torch.js";

const work = mkdtempSync(join(tmpdir(), "megahub-bounds-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const PROTO2 = Buffer.from([0x80, 2]);
const STOP = Buffer.from([0x2e]);

function timed<T>(f: () => T): { value: T | undefined; error: unknown; ms: number } {
  const t0 = performance.now();
  try {
    return { value: f(), error: undefined, ms: performance.now() - t0 };
  } catch (e) {
    return { value: undefined, error: e, ms: performance.now() - t0 };
  }
}

describe("pickle reader bounds", () => {
  it("a 300k-entry dict is read in linear time", () => {
    const parts: Buffer[] = [PROTO2, Buffer.from([0x7d, 0x28])]; // EMPTY_DICT MARK
    for (let i = 0; i < 300_000; i++) parts.push(Buffer.from([0x4a]), u32(i), Buffer.from([0x4e])); // BININT i, NONE
    parts.push(Buffer.from([0x75]), STOP); // SETITEMS
    const r = timed(() => unpickle(Buffer.concat(parts), "big.pkl"));
    expect(r.error).toBeUndefined();
    expect((r.value?.value as PyDict).entries.length).toBe(300_000);
    expect(r.ms).toBeLessThan(3000);
  });

  it("a 1 MB LONG4 decodes in linear time, and a larger one is a typed error", () => {
    const long4 = (n: number) => Buffer.concat([PROTO2, Buffer.from([0x8b]), u32(n), Buffer.alloc(n, 0x5a), STOP]);
    const ok = timed(() => unpickle(long4(1 << 20), "long.pkl"));
    expect(ok.error).toBeUndefined();
    expect(typeof ok.value?.value).toBe("bigint");
    expect(ok.ms).toBeLessThan(3000);
    const big = timed(() => unpickle(long4((1 << 20) + 1), "long.pkl"));
    expect(isMegahubError(big.error), String(big.error)).toBe(true);
    // Rendering it for inspect does not print a million digits either.
    expect(String(plain(ok.value?.value))).toMatch(/^<integer of \d+ bits>$/);
  });

  it("a shared-reference 'billion laughs' list renders within a budget", () => {
    // l = [0]; then 16 times l = [l] * 64, written with memo references: ~2 KB of pickle, 64**16 leaves if expanded.
    const parts: Buffer[] = [PROTO2, Buffer.from([0x5d, 0x4b, 0, 0x61, 0x71, 0])]; // [0], memo 0
    for (let i = 1; i <= 16; i++) {
      parts.push(Buffer.from([0x30, 0x5d, 0x28])); // POP the previous (it stays in the memo), EMPTY_LIST, MARK
      for (let k = 0; k < 64; k++) parts.push(Buffer.from([0x68, i - 1])); // BINGET previous
      parts.push(Buffer.from([0x65, 0x71, i])); // APPENDS, memo i
    }
    parts.push(STOP);
    const r = timed(() => {
      const v = unpickle(Buffer.concat(parts), "laughs.pkl").value;
      const ns = new PyCall(new PyGlobal("argparse", "Namespace"), new PyTuple([]), "newobj");
      ns.state = new PyDict([["laughs", v]]);
      return JSON.stringify(argsToJson(ns)).length;
    });
    expect(r.error).toBeUndefined();
    expect(r.value).toBeLessThan(2_000_000);
    expect(r.ms).toBeLessThan(3000);
  });

  it("deep nesting is a typed error, not a stack overflow", () => {
    let v = new PyList();
    for (let i = 0; i < 100_000; i++) v = new PyList([v]);
    const r = timed(() => [...walkTensors(new PyDict([["model", v]]))]);
    expect(isMegahubError(r.error), String(r.error)).toBe(true);
  });
});

/** A ustar header (512 bytes) with a valid checksum. */
function tarHeader(name: string, size: number, type: string): Buffer {
  const h = Buffer.alloc(512);
  h.write(name.slice(0, 100), 0);
  h.write("0000644\0", 100);
  h.write("0000000\0", 108);
  h.write("0000000\0", 116);
  h.write(`${size.toString(8).padStart(11, "0")}\0`, 124);
  h.write("00000000000\0", 136);
  h.write(type, 156);
  h.write("ustar\0", 257);
  h.write("00", 263);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return h;
}
const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);

describe("archive and file-type bounds", () => {
  it("a tar member path of 60,000 '/' is refused quickly", () => {
    const name = Buffer.from(`${"a/".repeat(60_000)}model_optim_rng.pt`);
    const tar = Buffer.concat([tarHeader("././@LongLink", name.length, "L"), pad(name), tarHeader("x", 0, "0"), Buffer.alloc(1024)]);
    const path = join(work, "deep.tar");
    writeFileSync(path, tar);
    const t0 = performance.now();
    const r = megahub(["inspect", path, "--json"], { timeout: 60_000 });
    expect(r.code).toBe(1);
    expect(r.json<{ error: { code: string; message: string } }>().error.message).toMatch(/longer than a path can be/);
    expect(performance.now() - t0).toBeLessThan(20_000);
  });

  it.skipIf(!hasFixture("megatron", "fp32-tp1"))("a FIFO as tracker file is refused, not waited on", () => {
    const dir = join(work, "fifo");
    cpSync(fixture("megatron", "fp32-tp1"), dir, { recursive: true });
    rmSync(join(dir, "latest_checkpointed_iteration.txt"));
    execFileSync("mkfifo", [join(dir, "latest_checkpointed_iteration.txt")]);
    const r = megahub(["inspect", dir, "--json"], { timeout: 30_000 });
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/not a regular file \(a FIFO\)/);
  });

  it.skipIf(!hasFixture("megatron", "fp32-tp1"))("a stored record whose CRC-32 no longer matches fails the conversion", async () => {
    const dir = join(work, "crc");
    cpSync(fixture("megatron", "fp32-tp1"), dir, { recursive: true });
    const pt = join(dir, "iter_0002000", "mp_rank_00", "model_optim_rng.pt");
    const src = await FileSource.open(pt);
    const zip = await readZip(src);
    const record = [...zip.entries.values()].find((e) => /\/data\/\d+$/.test(e.name) && e.size > 64) as { name: string };
    const body = await zip.open(record.name);
    const at = (body as unknown as { size: number }).size >> 1;
    // The record's first byte lies after its local header; find it by reading through the archive's own offsets.
    const bytes = readFileSync(pt);
    const sample = Buffer.from(await body.read(0, 64));
    await src.close();
    const start = bytes.indexOf(sample);
    expect(start).toBeGreaterThan(0);
    bytes[start + at] = (bytes[start + at] as number) ^ 0x01;
    writeFileSync(pt, bytes);
    const r = megahub(["convert", dir, "--out", join(work, "crc-out"), "--json"]);
    expect(r.code, r.stdout).toBe(1);
    expect(r.stdout).toMatch(/CRC-32/);
  });
});

describe.skipIf(!HAS_TORCH || !hasFixture("megatron", "fp16-tp1"))("a billion-laughs args list in a real checkpoint", () => {
  it("inspect, convert and reshard finish promptly", () => {
    const dir = join(work, "laughs");
    runPython(
      `${PY_PRELUDE}
import os, shutil
shutil.copytree(sys.argv[1], sys.argv[2])
for root, _, files in os.walk(sys.argv[2]):
    for f in files:
        if f.endswith(".pt"):
            p = os.path.join(root, f); ck = torch.load(p, map_location="cpu")
            l = [0]
            for i in range(14): l = [l] * 64
            ck["args"].laughs = l
            torch.save(ck, p)
`,
      [fixture("megatron", "fp16-tp1"), dir],
    );
    mkdirSync(join(work, "laughs-out"), { recursive: true });
    for (const args of [["inspect", dir, "--json"], ["convert", dir, "--out", join(work, "laughs-out", "hf")], ["reshard", dir, "--out", join(work, "laughs-out", "tp1"), "--tp", "1"]]) {
      const t0 = performance.now();
      const r = megahub(args, { timeout: 60_000 });
      expect(r.code, `${args[0]}: ${r.stderr}`).toBe(0);
      expect(performance.now() - t0, args[0]).toBeLessThan(30_000);
    }
  });
});
