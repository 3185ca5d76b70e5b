import { describe, expect, it } from "vitest";
import { bytesSource } from "../../io/byte-source.js";
import { isMegahubError } from "../../errors.js";
import { encodeHeader } from "./header.js";
import { readSafetensors } from "./read.js";

function file(entries: { name: string; dtype: "F16" | "F32" | "I64" | "BF16"; shape: number[] }[], meta?: Record<string, string>) {
  const { bytes, dataBytes } = encodeHeader(entries, meta);
  const out = new Uint8Array(bytes.byteLength + dataBytes);
  out.set(bytes);
  for (let i = bytes.byteLength; i < out.length; i++) out[i] = i & 0xff;
  return out;
}

const header = (json: string, data = 0) => {
  const h = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + h.length + data);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  return out;
};

describe("safetensors header", () => {
  it("round-trips entries, metadata and 8-byte alignment", async () => {
    const bytes = file(
      [
        { name: "a", dtype: "F32", shape: [3, 5] },
        { name: "b", dtype: "F16", shape: [7] },
        { name: "empty", dtype: "I64", shape: [0, 4] },
        { name: "scalar", dtype: "BF16", shape: [] },
      ],
      { format: "pt" },
    );
    const st = await readSafetensors(bytesSource(bytes));
    expect(st.dataStart % 8).toBe(0);
    expect(st.metadata).toEqual({ format: "pt" });
    expect(st.entries.map((e) => [e.name, e.dtype, e.shape, e.end - e.begin])).toEqual([
      ["a", "F32", [3, 5], 60],
      ["b", "F16", [7], 14],
      ["empty", "I64", [0, 4], 0],
      ["scalar", "BF16", [], 2],
    ]);
    const b = st.get("b");
    expect(b && [...(await st.tensorSource(b).read(0, 2))]).toEqual([(st.dataStart + 60) & 0xff, (st.dataStart + 61) & 0xff]);
  });

  const BAD: [string, Uint8Array, RegExp][] = [
    ["too short", new Uint8Array(4), /too short/],
    ["length past end", (() => { const b = new Uint8Array(16); new DataView(b.buffer).setBigUint64(0, 1000n, true); return b; })(), /exceeds/],
    ["not an object", header("[1,2]"), /start with '\{'|JSON object/],
    ["bad json", header("{nope"), /not valid JSON/],
    ["unknown dtype", header('{"a":{"dtype":"F17","shape":[1],"data_offsets":[0,2]}}', 2), /unknown dtype/],
    ["size mismatch", header('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', 4), /needs 8 bytes/],
    ["hole", header('{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', 2), /hole/],
    ["overlap", header('{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', 2), /overlaps/],
    ["trailing bytes", header('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 3), /cover 1 bytes/],
    ["negative dim", header('{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}}'), /non-negative/],
    ["metadata not strings", header('{"__metadata__":{"a":1}}'), /must be a string/],
    ["huge shape", header('{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}', 8), /addressed|too large/],
  ];
  it.each(BAD)("rejects %s with a typed error", async (_name, bytes, message) => {
    const err = await readSafetensors(bytesSource(bytes, "bad.safetensors")).catch((e: unknown) => e);
    expect(isMegahubError(err)).toBe(true);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).toMatch(/^bad\.safetensors/);
  });

  it("survives 2,000 seeded mutations with a typed error or a valid parse", async () => {
    const good = file([
      { name: "w", dtype: "F16", shape: [4, 4] },
      { name: "b", dtype: "F32", shape: [4] },
    ]);
    let seed = 1234;
    const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    for (let i = 0; i < 2000; i++) {
      const m = good.slice(0, rand() < 0.2 ? Math.floor(rand() * good.length) : good.length);
      const flips = 1 + Math.floor(rand() * 4);
      for (let k = 0; k < flips && m.length > 0; k++) m[Math.floor(rand() * m.length)] = Math.floor(rand() * 256);
      try {
        const st = await readSafetensors(bytesSource(m));
        for (const e of st.entries) await st.tensorSource(e).read(0, e.end - e.begin);
      } catch (e) {
        if (!isMegahubError(e)) throw e;
      }
    }
  });
});
