import type { LogitMetrics } from "./metrics.js";
import type { Placement } from "./placement.js";
import { maxAbsBound, type Tolerance } from "./tolerances.js";

/** What the report shows; a subset of VerifyResult so the report does not depend on how it was produced. */
export interface ReportInput {
  title: string;
  passed: boolean;
  failures: readonly string[];
  model: string;
  reference: string;
  provider: string;
  fallbackReason?: string;
  /** CUDA allowed TF32 for fp32 matmuls. */
  tf32?: boolean;
  /** Which provider ran each node (ORT profiling). */
  placement?: Placement;
  referencePlacement?: Placement;
  dtype: string;
  tolerance: Tolerance;
  metrics: LogitMetrics;
  notes?: readonly string[];
}

const W = 640;
const H = 220;
const PAD = { l: 56, r: 16, t: 16, b: 36 };
const COLORS = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#be185d", "#4d7c0f"];

/**
 * One self-contained HTML page (inline CSS and SVG, no scripts, no network): the verdict, the metric table with
 * the gates applied, and three charts — max |Δ| per decoder position (one line per batch row, log scale, with the
 * tolerance drawn in), the histogram of |Δ| over all logits, and top-1 agreement per row with a match strip per
 * position.
 */
export function renderReportHtml(r: ReportInput): string {
  const m = r.metrics;
  const t = r.tolerance;
  const atol = maxAbsBound(m, t);
  const row = (name: string, value: string, gate: string, ok: boolean) =>
    `<tr><td>${esc(name)}</td><td class="num">${esc(value)}</td><td class="num">${esc(gate)}</td><td>${ok ? "✓" : "✗"}</td></tr>`;
  const e = (x: number) => x.toExponential(3);
  const table = [
    row("max |Δ|", e(m.maxAbs), `≤ ${e(atol)}${t.maxAbs === undefined ? ` (${t.maxAbsPerStd ?? 0}·std)` : ""}`, m.maxAbs <= atol),
    row("mean |Δ|", e(m.meanAbs), "", true),
    row("p99 |Δ|", e(m.p99Abs), "", true),
    row("min cosine", m.minCosine.toFixed(7), `≥ ${t.minCosine}`, m.minCosine >= t.minCosine),
    row("NMSE", e(m.nmse), `≤ ${e(t.maxNmse)}`, m.nmse <= t.maxNmse),
    row("mean KL (nats)", e(m.meanKl), `≤ ${e(t.maxMeanKl)}`, m.meanKl <= t.maxMeanKl),
    row("top-1 agreement", pct(m.top1Agreement), `≥ ${pct(t.minTop1)}`, m.top1Agreement >= t.minTop1),
    row("non-finite logits", String(m.nonFinite), "= 0", m.nonFinite === 0),
  ].join("\n");
  const rows = m.rows
    .map((x) => `<tr><td>${x.row}</td><td class="num">${x.positions}</td><td class="num">${pct(x.top1Agreement)}</td>` +
      `<td class="num">${e(x.maxAbs)}</td><td class="num">${x.minCosine.toFixed(7)}</td></tr>`)
    .join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(r.title)}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:760px;color:#111}
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:2rem}
.verdict{padding:.6rem 1rem;border-radius:6px;font-weight:600}
.pass{background:#dcfce7;color:#166534}.fail{background:#fee2e2;color:#991b1b}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.2rem .6rem;border-bottom:1px solid #e5e7eb;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}svg{background:#fafafa;border:1px solid #e5e7eb}
.small{color:#555;font-size:12px}
</style></head><body>
<h1>${esc(r.title)}</h1>
<p class="verdict ${r.passed ? "pass" : "fail"}">${r.passed ? "PASS" : "FAIL"} — ${esc(
    r.passed ? "logits match the reference within the tolerances" : r.failures.join("; "),
  )}</p>
<table>
<tr><th>model</th><td>${esc(r.model)}</td></tr>
<tr><th>reference</th><td>${esc(r.reference)}</td></tr>
<tr><th>execution provider</th><td>${esc(r.provider)}${r.provider === "cuda" ? (r.tf32 ? ", TF32 allowed (--tf32)" : ", TF32 off") : ""}${r.fallbackReason ? ` (ran on CPU: ${esc(r.fallbackReason)})` : ""}</td></tr>
<tr><th>weights</th><td>${esc(r.dtype)}</td></tr>
<tr><th>compared</th><td>${m.positions} positions × ${m.vocab} logits</td></tr>
</table>
${(r.notes ?? []).map((n) => `<p class="small">${esc(n)}</p>`).join("\n")}
${placementTable(r)}
<h2>Metrics</h2>
<table><tr><th>metric</th><th>value</th><th>gate</th><th></th></tr>
${table}
</table>
<p class="small">${esc(t.why)}</p>
<h2>Max |Δ| per decoder position</h2>
${positionChart(m, atol)}
<h2>Histogram of |Δ| over all logits</h2>
${histogramChart(m, atol)}
<h2>Top-1 agreement</h2>
${top1Chart(m)}
<table><tr><th>row</th><th>positions</th><th>top-1</th><th>max |Δ|</th><th>min cosine</th></tr>
${rows}
</table>
</body></html>
`;
}

/** One row per provider: how many nodes it ran and of which op types (every node ORT executed is counted). */
function placementTable(r: ReportInput): string {
  const one = (label: string, p: Placement) =>
    p.byProvider
      .map((x, i) => {
        const ops = Object.entries(x.ops).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
        return `<tr><td>${i === 0 ? esc(label) : ""}</td><td>${esc(x.provider)}</td><td class="num">${x.nodes}</td>` +
          `<td class="small">${esc(ops.map(([o, n]) => `${o} ×${n}`).join(", "))}</td></tr>`;
      })
      .join("\n");
  if (!r.placement) return "";
  const rows = [one(`model (${r.placement.nodes} nodes)`, r.placement)];
  if (r.referencePlacement) rows.push(one(`reference model (${r.referencePlacement.nodes} nodes)`, r.referencePlacement));
  return `<h2>Where each node ran (ORT profiling)</h2>
<table><tr><th></th><th>provider</th><th>nodes</th><th>op types</th></tr>
${rows.join("\n")}
</table>`;
}

function positionChart(m: LogitMetrics, atol: number): string {
  const maxPos = Math.max(1, ...m.perPosition.map((p) => p.position));
  const values = m.perPosition.map((p) => p.maxAbs).filter((v) => v > 0 && Number.isFinite(v));
  const lo = Math.floor(Math.log10(Math.min(atol, ...values, 1)));
  const hi = Math.ceil(Math.log10(Math.max(atol, ...values, 1e-12))) + (values.length === 0 ? 1 : 0);
  const top = Math.max(hi, lo + 1);
  const x = (pos: number) => PAD.l + (pos / maxPos) * (W - PAD.l - PAD.r);
  const y = (v: number) => {
    const l = Math.log10(Math.max(v, 10 ** lo));
    return PAD.t + (1 - (l - lo) / (top - lo)) * (H - PAD.t - PAD.b);
  };
  const parts: string[] = [axes(), `<text x="${W / 2}" y="${H - 6}" text-anchor="middle" font-size="11">decoder position</text>`];
  for (let d = lo; d <= top; d++) {
    parts.push(`<line x1="${PAD.l}" x2="${W - PAD.r}" y1="${y(10 ** d)}" y2="${y(10 ** d)}" stroke="#e5e7eb"/>`);
    parts.push(`<text x="${PAD.l - 4}" y="${y(10 ** d) + 4}" text-anchor="end" font-size="10">1e${d}</text>`);
  }
  for (let p = 0; p <= maxPos; p += Math.max(1, Math.ceil(maxPos / 10))) {
    parts.push(`<text x="${x(p)}" y="${H - PAD.b + 14}" text-anchor="middle" font-size="10">${p}</text>`);
  }
  parts.push(
    `<line x1="${PAD.l}" x2="${W - PAD.r}" y1="${y(atol)}" y2="${y(atol)}" stroke="#dc2626" stroke-dasharray="5 4"/>`,
    `<text x="${W - PAD.r - 4}" y="${y(atol) - 4}" text-anchor="end" font-size="10" fill="#dc2626">tolerance ${atol.toExponential(1)}</text>`,
  );
  for (const r of m.rows) {
    const pts = m.perPosition.filter((p) => p.row === r.row);
    const color = COLORS[r.row % COLORS.length] ?? "#000";
    parts.push(
      `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts.map((p) => `${x(p.position).toFixed(1)},${y(p.maxAbs).toFixed(1)}`).join(" ")}"/>`,
      ...pts.map((p) => `<circle cx="${x(p.position).toFixed(1)}" cy="${y(p.maxAbs).toFixed(1)}" r="2.5" fill="${color}"><title>row ${p.row}, position ${p.position}: ${p.maxAbs.toExponential(3)}</title></circle>`),
    );
  }
  parts.push(legend(m.rows.map((r) => r.row)));
  return svg(parts);
}

function histogramChart(m: LogitMetrics, atol: number): string {
  const { log10Edges: edges, counts } = m.histogram;
  const maxCount = Math.max(1, ...counts);
  const bw = (W - PAD.l - PAD.r) / counts.length;
  const parts: string[] = [axes(), `<text x="${W / 2}" y="${H - 6}" text-anchor="middle" font-size="11">|Δ| (log10 bins; count on a log scale)</text>`];
  counts.forEach((c, i) => {
    const h = c > 0 ? (Math.log10(c + 1) / Math.log10(maxCount + 1)) * (H - PAD.t - PAD.b) : 0;
    const x = PAD.l + i * bw;
    parts.push(
      `<rect x="${x.toFixed(1)}" y="${(H - PAD.b - h).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${h.toFixed(1)}" fill="#2563eb"><title>1e${edges[i]} – 1e${edges[i + 1]}: ${c}</title></rect>`,
    );
    if (Number.isInteger(edges[i])) {
      // The first bin also holds everything smaller, exact zeros included.
      const label = i === 0 ? `≤1e${edges[i]}` : `1e${edges[i]}`;
      parts.push(`<text x="${x.toFixed(1)}" y="${H - PAD.b + 14}" text-anchor="middle" font-size="10">${label}</text>`);
    }
  });
  const first = edges[0] ?? 0;
  const last = edges[edges.length - 1] ?? 1;
  const xa = PAD.l + ((Math.log10(atol) - first) / (last - first)) * (W - PAD.l - PAD.r);
  if (xa >= PAD.l && xa <= W - PAD.r) {
    parts.push(
      `<line x1="${xa.toFixed(1)}" x2="${xa.toFixed(1)}" y1="${PAD.t}" y2="${H - PAD.b}" stroke="#dc2626" stroke-dasharray="5 4"/>`,
      `<text x="${(xa + 4).toFixed(1)}" y="${PAD.t + 10}" font-size="10" fill="#dc2626">tolerance</text>`,
    );
  }
  parts.push(`<text x="${PAD.l - 4}" y="${PAD.t + 8}" text-anchor="end" font-size="10">${maxCount}</text>`);
  return svg(parts);
}

function top1Chart(m: LogitMetrics): string {
  const rows = m.rows;
  const rowH = 26;
  const height = PAD.t + rows.length * rowH + 24;
  const maxPos = Math.max(1, ...m.perPosition.map((p) => p.position + 1));
  const barW = 200;
  const cell = Math.max(2, Math.min(14, (W - PAD.l - barW - 40) / maxPos));
  const parts: string[] = [];
  rows.forEach((r, i) => {
    const y = PAD.t + i * rowH;
    const ok = r.top1Agreement >= 1;
    parts.push(
      `<text x="${PAD.l - 6}" y="${y + 14}" text-anchor="end" font-size="11">row ${r.row}</text>`,
      `<rect x="${PAD.l}" y="${y + 3}" width="${barW}" height="14" fill="#e5e7eb"/>`,
      `<rect x="${PAD.l}" y="${y + 3}" width="${(barW * r.top1Agreement).toFixed(1)}" height="14" fill="${ok ? "#16a34a" : "#d97706"}"/>`,
      `<text x="${PAD.l + barW + 6}" y="${y + 14}" font-size="11">${pct(r.top1Agreement)}</text>`,
    );
    const x0 = PAD.l + barW + 56;
    for (const p of m.perPosition.filter((q) => q.row === r.row)) {
      parts.push(
        `<rect x="${(x0 + p.position * cell).toFixed(1)}" y="${y + 3}" width="${(cell - 1).toFixed(1)}" height="14" fill="${p.top1Match ? "#16a34a" : "#dc2626"}"><title>position ${p.position}: reference ${p.refTop1}, test ${p.testTop1}</title></rect>`,
      );
    }
  });
  parts.push(`<text x="${PAD.l}" y="${height - 6}" font-size="10">bar: share of positions whose argmax agrees; squares: one per position (green = same token)</text>`);
  return svg(parts, height);
}

function axes(): string {
  return `<line x1="${PAD.l}" y1="${PAD.t}" x2="${PAD.l}" y2="${H - PAD.b}" stroke="#9ca3af"/><line x1="${PAD.l}" y1="${H - PAD.b}" x2="${W - PAD.r}" y2="${H - PAD.b}" stroke="#9ca3af"/>`;
}

function legend(rows: readonly number[]): string {
  return rows
    .slice(0, COLORS.length)
    .map((r, i) => `<g><rect x="${PAD.l + 8 + i * 56}" y="${PAD.t}" width="10" height="10" fill="${COLORS[r % COLORS.length] ?? "#000"}"/><text x="${PAD.l + 22 + i * 56}" y="${PAD.t + 9}" font-size="10">row ${r}</text></g>`)
    .join("");
}

function svg(parts: readonly string[], height = H): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" role="img">${parts.join("")}</svg>`;
}

function pct(x: number): string {
  return `${(x * 100).toFixed(1)} %`;
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
