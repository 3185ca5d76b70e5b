import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { castBytes, f16ToF32, f32ToBf16, f32ToF16 } from "../src/tensors/cast.js";
import type { Dtype } from "../src/tensors/dtypes.js";
import { fixture, openSafetensors } from "./helpers/fixtures.js";

// Reference conversions made by torch (scripts/make_cast_fixture.py): every f16 and bf16 bit pattern, and f32/f64
// values chosen to hit ties, subnormals and overflow.
const CASES: [source: string, from: Dtype, target: string, to: Dtype][] = [
  ["f32", "F32", "f32_to_f16", "F16"],
  ["f32", "F32", "f32_to_bf16", "BF16"],
  ["f16_all", "F16", "f16_to_bf16", "BF16"],
  ["f16_all", "F16", "f16_to_f32", "F32"],
  ["bf16_all", "BF16", "bf16_to_f16", "F16"],
  ["bf16_all", "BF16", "bf16_to_f32", "F32"],
  ["f64", "F64", "f64_to_f32", "F32"],
  ["f64", "F64", "f64_to_f16", "F16"],
  ["f64", "F64", "f64_to_bf16", "BF16"],
];

describe("float casts are bit-exact with torch", () => {
  let f: Awaited<ReturnType<typeof openSafetensors>>;
  beforeAll(async () => {
    f = await openSafetensors(fixture("casts", "casts.safetensors"));
  });
  afterAll(() => f.close());

  it.each(CASES)("%s (%s) → %s (%s)", async (source, from, target, to) => {
    const input = await f.bytes(source);
    const expected = await f.bytes(target);
    const stats = { overflows: 0 };
    const got = castBytes(input, from, to, stats);
    expect(got.byteLength).toBe(expected.byteLength);
    const width = expected.byteLength / (f.st.get(target)?.shape[0] ?? 1);
    let mismatches = 0;
    let first = -1;
    for (let i = 0; i < got.byteLength; i += width) {
      if (Buffer.compare(got.subarray(i, i + width), expected.subarray(i, i + width)) !== 0) {
        mismatches++;
        if (first < 0) first = i / width;
      }
    }
    expect(mismatches, `first mismatch at element ${first}`).toBe(0);
  });

  it("counts finite values that overflow to infinity", () => {
    const stats = { overflows: 0 };
    const input = new Uint8Array(new Float32Array([65504, 65519, 65520, 1e6, Infinity, -7e4]).buffer);
    castBytes(input, "F32", "F16", stats);
    expect(stats.overflows).toBe(3); // 65520, 1e6, -7e4 (inf was already inf)
  });
});

describe("scalar kernels", () => {
  it("round-trips every finite f16 through f32", () => {
    for (let h = 0; h < 0x10000; h++) {
      const x = f16ToF32(h);
      if (Number.isNaN(x)) continue;
      expect(f32ToF16(x)).toBe(h);
    }
  });
  it("rounds ties to even", () => {
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie → even (1.0)
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (1 + 2^-9)
    expect(f32ToBf16(1 + 2 ** -8)).toBe(0x3f80);
    expect(f32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82);
  });
});
