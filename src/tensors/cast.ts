import type { Dtype } from "./dtypes.js";

/**
 * Exact float conversions between F64, F32, F16 and BF16, on little-endian bytes. Widening is exact; narrowing rounds
 * to nearest, ties to even (IEEE 754 default, what torch's .to() does); NaN stays NaN; finite values that round
 * past the target's range become ±inf and are counted as overflows.
 */
export interface CastStats {
  overflows: number;
}

const CASTABLE: ReadonlySet<Dtype> = new Set(["F64", "F32", "F16", "BF16"]);

export function canCast(from: Dtype, to: Dtype): boolean {
  return from === to || (CASTABLE.has(from) && CASTABLE.has(to));
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export function bf16ToF32(b: number): number {
  u32[0] = b << 16;
  return f32[0] as number;
}

/** f32 bits → f16 bits, round to nearest even. */
export function f32ToF16(x: number, stats?: CastStats): number {
  f32[0] = x;
  const bits = u32[0] as number;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) {
    if (stats) stats.overflows++;
    return sign | 0x7c00;
  }
  if (e <= 0) {
    if (e < -10) return sign; // rounds to ±0
    const m = mant | 0x800000;
    const shift = 14 - e;
    let half = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  if ((h & 0x7c00) === 0x7c00 && stats) stats.overflows++;
  return sign | h;
}

/** f32 → bf16 bits, round to nearest even; NaN keeps a quiet payload. */
export function f32ToBf16(x: number, stats?: CastStats): number {
  f32[0] = x;
  const bits = u32[0] as number;
  if ((bits & 0x7f800000) === 0x7f800000 && bits & 0x7fffff) return ((bits >>> 16) | 0x40) & 0xffff;
  const rounded = bits + 0x7fff + ((bits >>> 16) & 1);
  const out = (rounded >>> 16) & 0xffff;
  if ((out & 0x7f80) === 0x7f80 && (bits & 0x7f800000) !== 0x7f800000 && stats) stats.overflows++;
  return out;
}

function reader(from: Dtype, dv: DataView): (i: number) => number {
  switch (from) {
    case "F64":
      return (i) => dv.getFloat64(i * 8, true);
    case "F32":
      return (i) => dv.getFloat32(i * 4, true);
    case "F16":
      return (i) => f16ToF32(dv.getUint16(i * 2, true));
    case "BF16":
      return (i) => bf16ToF32(dv.getUint16(i * 2, true));
    default:
      throw new RangeError(`cannot cast from ${from}`);
  }
}

/** Converts a whole block of elements. F16 → F32 uses a 64 K lookup table (built on first use). */
export function castBytes(bytes: Uint8Array, from: Dtype, to: Dtype, stats: CastStats): Uint8Array {
  if (from === to) return bytes;
  const src = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const width = { F64: 8, F32: 4, F16: 2, BF16: 2 }[from as "F64"];
  const n = bytes.byteLength / width;
  const get = reader(from, src);
  switch (to) {
    case "F32": {
      const out = new Float32Array(n);
      if (from === "F16") {
        const lut = f16Table();
        for (let i = 0; i < n; i++) out[i] = lut[src.getUint16(i * 2, true)] as number;
      } else {
        for (let i = 0; i < n; i++) out[i] = get(i);
      }
      return new Uint8Array(out.buffer);
    }
    case "F64": {
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) out[i] = get(i);
      return new Uint8Array(out.buffer);
    }
    case "F16":
    case "BF16": {
      const out = new Uint16Array(n);
      // F16 ↔ BF16 goes through f32 exactly (every f16/bf16 value is an f32 value), then rounds once.
      const narrow = to === "F16" ? f32ToF16 : f32ToBf16;
      // An F64 source goes through f32 first (Math.fround, then the f32 value's reader): torch narrows doubles
      // the same way (c10::Half and c10::BFloat16 construct from float), and bit-exactness with torch is the goal.
      for (let i = 0; i < n; i++) out[i] = narrow(Math.fround(get(i)), stats);
      return new Uint8Array(out.buffer);
    }
    default:
      throw new RangeError(`cannot cast to ${to}`);
  }
}

let table: Float32Array | undefined;
function f16Table(): Float32Array {
  if (!table) {
    table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) table[i] = f16ToF32(i);
  }
  return table;
}
