/**
 * Logit comparison metrics, the ones the verification anchors use (onnxruntime.md §6): max / mean / p99 |Δ|
 * (optimum), per-position cosine (Megatron-Bridge), NMSE = MSE / Var(reference) (llama.cpp), mean KL(ref ‖ test)
 * over the softmax distributions (llama-perplexity, torchtitan) and top-1 agreement.
 */

export interface PositionStats {
  row: number;
  position: number;
  maxAbs: number;
  cosine: number;
  kl: number;
  top1Match: boolean;
  refTop1: number;
  testTop1: number;
}

export interface RowStats {
  row: number;
  positions: number;
  top1Agreement: number;
  maxAbs: number;
  minCosine: number;
}

export interface LogitMetrics {
  positions: number;
  vocab: number;
  maxAbs: number;
  meanAbs: number;
  p99Abs: number;
  minCosine: number;
  nmse: number;
  /** Standard deviation of the reference logits: the scale relative gates are measured in. */
  refStd: number;
  meanKl: number;
  top1Agreement: number;
  /** Non-finite values in the logits under test (any one fails verification). */
  nonFinite: number;
  rows: RowStats[];
  perPosition: PositionStats[];
  /** |Δ| histogram on log10 bins, for the report. */
  histogram: { log10Edges: number[]; counts: number[] };
}

/** Histogram range: |Δ| from 1e-9 to 1e+2, one bin per half decade; smaller differences land in the first bin. */
const HIST_MIN_LOG10 = -9;
const HIST_MAX_LOG10 = 2;
const HIST_BINS_PER_DECADE = 2;

/**
 * Compares logits under test with reference logits, both [B, T, V] row-major, position by position.
 * `include(row, position)` leaves positions out (padding). Sums are in float64.
 */
export function compareLogits(
  test: Float32Array,
  ref: Float32Array,
  batch: number,
  length: number,
  vocab: number,
  include: (row: number, position: number) => boolean = () => true,
): LogitMetrics {
  if (test.length !== ref.length || ref.length !== batch * length * vocab) {
    throw new RangeError(`logits sizes differ: test ${test.length}, reference ${ref.length}, expected ${batch}×${length}×${vocab}`);
  }
  const bins = (HIST_MAX_LOG10 - HIST_MIN_LOG10) * HIST_BINS_PER_DECADE;
  const counts = new Array<number>(bins).fill(0);
  const perPosition: PositionStats[] = [];
  const diffs = new Float32Array(batch * length * vocab);
  let sumAbs = 0;
  let sumSq = 0;
  let refSum = 0;
  let refSumSq = 0;
  let n = 0;
  let nonFinite = 0;
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < length; t++) {
      if (!include(b, t)) continue;
      const base = (b * length + t) * vocab;
      let maxAbs = 0;
      let dot = 0;
      let nt = 0;
      let nr = 0;
      let testArg = 0;
      let refArg = 0;
      for (let v = 0; v < vocab; v++) {
        const x = test[base + v] as number;
        const y = ref[base + v] as number;
        if (!Number.isFinite(x)) nonFinite++;
        const d = Math.abs(x - y);
        if (!(d <= maxAbs)) maxAbs = d; // NaN propagates into maxAbs
        sumAbs += d;
        sumSq += d * d;
        refSum += y;
        refSumSq += y * y;
        dot += x * y;
        nt += x * x;
        nr += y * y;
        if (x > (test[base + testArg] as number)) testArg = v;
        if (y > (ref[base + refArg] as number)) refArg = v;
        diffs[n + v] = d;
        const bin = Math.floor((Math.log10(Math.max(d, 1e-30)) - HIST_MIN_LOG10) * HIST_BINS_PER_DECADE);
        counts[Math.min(bins - 1, Math.max(0, Number.isFinite(bin) ? bin : bins - 1))]! += 1;
      }
      n += vocab;
      const cosine = nt === 0 || nr === 0 ? (nt === nr ? 1 : 0) : dot / Math.sqrt(nt * nr);
      perPosition.push({
        row: b,
        position: t,
        maxAbs,
        cosine,
        kl: klDivergence(ref, test, base, vocab),
        top1Match: testArg === refArg,
        refTop1: refArg,
        testTop1: testArg,
      });
    }
  }
  const rows: RowStats[] = [];
  for (let b = 0; b < batch; b++) {
    const ps = perPosition.filter((p) => p.row === b);
    if (ps.length === 0) continue;
    rows.push({
      row: b,
      positions: ps.length,
      top1Agreement: ps.filter((p) => p.top1Match).length / ps.length,
      maxAbs: maxOf(ps.map((p) => p.maxAbs)),
      minCosine: Math.min(...ps.map((p) => p.cosine)),
    });
  }
  const refVar = n > 0 ? refSumSq / n - (refSum / n) ** 2 : 0;
  return {
    positions: perPosition.length,
    vocab,
    maxAbs: maxOf(perPosition.map((p) => p.maxAbs)),
    meanAbs: n > 0 ? sumAbs / n : 0,
    p99Abs: percentile(diffs.subarray(0, n), 0.99),
    minCosine: perPosition.length > 0 ? Math.min(...perPosition.map((p) => p.cosine)) : 1,
    nmse: refVar > 0 ? sumSq / n / refVar : sumSq > 0 ? Infinity : 0,
    refStd: Math.sqrt(Math.max(0, refVar)),
    meanKl: perPosition.length > 0 ? perPosition.reduce((a, p) => a + p.kl, 0) / perPosition.length : 0,
    top1Agreement: perPosition.length > 0 ? perPosition.filter((p) => p.top1Match).length / perPosition.length : 1,
    nonFinite,
    rows,
    perPosition,
    histogram: {
      log10Edges: Array.from({ length: bins + 1 }, (_, i) => HIST_MIN_LOG10 + i / HIST_BINS_PER_DECADE),
      counts,
    },
  };
}

/** max that keeps NaN (Math.max would too, but spread over 1e6 values overflows the stack). */
function maxOf(xs: readonly number[]): number {
  let m = 0;
  for (const x of xs) if (!(x <= m)) m = x;
  return m;
}

/** KL(P_ref ‖ P_test) of the softmax distributions at one position, via stable log-sum-exp in float64. */
function klDivergence(ref: Float32Array, test: Float32Array, base: number, vocab: number): number {
  const lseRef = logSumExp(ref, base, vocab);
  const lseTest = logSumExp(test, base, vocab);
  let kl = 0;
  for (let v = 0; v < vocab; v++) {
    const lr = (ref[base + v] as number) - lseRef;
    const lt = (test[base + v] as number) - lseTest;
    kl += Math.exp(lr) * (lr - lt);
  }
  return Math.max(0, kl);
}

function logSumExp(a: Float32Array, base: number, n: number): number {
  let m = -Infinity;
  for (let i = 0; i < n; i++) m = Math.max(m, a[base + i] as number);
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp((a[base + i] as number) - m);
  return m + Math.log(s);
}

/** The q-quantile (nearest rank); sorts in place (NaN sorts last, so a NaN shows up at high quantiles). */
function percentile(values: Float32Array, q: number): number {
  if (values.length === 0) return 0;
  const sorted = values.sort();
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;
}
