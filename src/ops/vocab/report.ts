import type { ParamCounts } from "../../models/openba/dims.js";
import type { VocabParams, VocabSizes } from "./remap.js";
import type { CoveragePoint, KeepRule } from "./select.js";

/** Everything the vocabulary-pruning report shows; the same object is the `--json` result's `report`. */
export interface VocabReport {
  source: string;
  out: string;
  rule: KeepRule;
  corpus: { files?: string[]; freq?: string; tokens: number };
  pieces: { before: number; kept: number; forced: number; usedByCorpus: number };
  /** Share of the corpus tokens whose id was kept. */
  coverage: number;
  /** Coverage against kept pieces, the selection order (forced first, then by count). */
  curve: CoveragePoint[];
  vocab: { before: VocabSizes; after: VocabSizes };
  params: VocabParams;
  notes: string[];
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c);
const pct = (x: number) => `${(100 * x).toFixed(x >= 0.999 && x < 1 ? 3 : 2)}%`;
const num = (n: number) => n.toLocaleString("en-US");
const billions = (n: number) => `${(n / 1e9).toFixed(2)}B`;

/** "Nice" tick values (1, 2, 5 × 10^k) covering 0 … max. */
function ticks(max: number, count = 5): number[] {
  if (max <= 0) return [0];
  const raw = max / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 5, 10].find((m) => m * mag >= raw) ?? 10) * mag;
  const out: number[] = [];
  for (let v = 0; v <= max + step * 1e-9; v += step) out.push(Math.round(v / step) * step);
  return out;
}

/**
 * The chart OpenBA's README shows as emb.png, for this corpus: corpus token coverage (y) against kept vocabulary
 * size (x, sentencepiece pieces), the chosen size marked. Plain SVG, no script, so the report opens anywhere.
 */
export function coverageSvg(curve: readonly CoveragePoint[], totalPieces: number, chosen: CoveragePoint): string {
  const W = 720;
  const H = 380;
  const m = { l: 64, r: 24, t: 24, b: 52 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const x = (pieces: number) => m.l + (pw * pieces) / Math.max(1, totalPieces);
  const y = (coverage: number) => m.t + ph * (1 - coverage);
  const path = curve.map((p, i) => `${i === 0 ? "M" : "L"}${x(p.pieces).toFixed(1)},${y(p.coverage).toFixed(1)}`).join(" ");
  const grid: string[] = [];
  for (const t of ticks(totalPieces)) {
    grid.push(`<line x1="${x(t).toFixed(1)}" y1="${m.t}" x2="${x(t).toFixed(1)}" y2="${m.t + ph}" class="grid"/>`);
    grid.push(`<text x="${x(t).toFixed(1)}" y="${m.t + ph + 18}" text-anchor="middle">${num(t)}</text>`);
  }
  for (const t of [0, 0.2, 0.4, 0.6, 0.8, 1]) {
    grid.push(`<line x1="${m.l}" y1="${y(t).toFixed(1)}" x2="${m.l + pw}" y2="${y(t).toFixed(1)}" class="grid"/>`);
    grid.push(`<text x="${m.l - 8}" y="${(y(t) + 4).toFixed(1)}" text-anchor="end">${Math.round(t * 100)}%</text>`);
  }
  const cx = x(chosen.pieces).toFixed(1);
  const cy = y(chosen.coverage).toFixed(1);
  const anchor = chosen.pieces > totalPieces * 0.6 ? "end" : "start";
  const dx = anchor === "end" ? -8 : 8;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="corpus token coverage against kept vocabulary size">`,
    `<style>text{font:12px sans-serif;fill:#333}.grid{stroke:#e3e3e3}.axis{stroke:#333}.curve{fill:none;stroke:#1f6feb;stroke-width:2}.chosen{stroke:#d1242f;stroke-dasharray:4 3}</style>`,
    ...grid,
    `<line x1="${m.l}" y1="${m.t + ph}" x2="${m.l + pw}" y2="${m.t + ph}" class="axis"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${m.t + ph}" class="axis"/>`,
    `<path d="${path}" class="curve"/>`,
    `<line x1="${cx}" y1="${m.t}" x2="${cx}" y2="${m.t + ph}" class="chosen" data-chosen="${chosen.pieces}"/>`,
    `<circle cx="${cx}" cy="${cy}" r="4.5" fill="#d1242f"/>`,
    `<text x="${(Number(cx) + dx).toFixed(1)}" y="${(Number(cy) + 18).toFixed(1)}" text-anchor="${anchor}" fill="#d1242f">kept ${num(chosen.pieces)} pieces: ${pct(chosen.coverage)} of tokens</text>`,
    `<text x="${m.l + pw / 2}" y="${H - 10}" text-anchor="middle">kept vocabulary size (sentencepiece pieces; OpenBA's 103 added tokens come on top)</text>`,
    `<text transform="translate(16 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">corpus tokens covered</text>`,
    `</svg>`,
  ].join("\n");
}

function paramRows(before: ParamCounts, after: ParamCounts): string {
  const parts: [keyof ParamCounts, string][] = [
    ["embedding", "embedding"],
    ["encoder", "encoder"],
    ["decoder", "decoder"],
    ["head", "lm_head (tied: bias only)"],
    ["total", "total"],
  ];
  return parts
    .map(([k, label]) => {
      const b = before[k];
      const a = after[k];
      const change = b === 0 ? "" : `${(100 * (a / b - 1)).toFixed(1)}%`;
      return `<tr><td>${esc(label)}</td><td>${num(b)}</td><td>${num(a)}</td><td>${change}</td></tr>`;
    })
    .join("\n");
}

/** A self-contained HTML page: what was kept, the coverage chart, and parameter counts before and after. */
export function renderVocabReportHtml(r: VocabReport): string {
  const chosen = { pieces: r.pieces.kept, coverage: r.coverage };
  const rule = r.rule.kind === "keep" ? `--keep ${r.rule.pieces}` : `--coverage ${r.rule.share}`;
  const corpus = r.corpus.freq !== undefined ? `frequency file ${esc(r.corpus.freq)}` : `corpus ${esc((r.corpus.files ?? []).join(", "))}`;
  const { before: vb, after: va } = r.vocab;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>megahub prune-vocab — ${esc(r.out)}</title>
<style>body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:820px;color:#222}table{border-collapse:collapse}td,th{padding:3px 12px;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}code{background:#f4f4f4;padding:0 3px}</style>
</head><body>
<h1>Vocabulary pruning</h1>
<p><code>${esc(r.source)}</code> → <code>${esc(r.out)}</code>, ${esc(rule)}, ${corpus} (${num(r.corpus.tokens)} tokens).</p>
<p>Kept <b>${num(r.pieces.kept)}</b> of ${num(r.pieces.before)} sentencepiece pieces (${num(r.pieces.forced)} always kept: byte, control and other
non-NORMAL pieces, <code>--keep-tokens</code>, chat-template text; the corpus uses ${num(r.pieces.usedByCorpus)}), covering
<b>${pct(r.coverage)}</b> of the corpus tokens. Text that used a dropped piece is still tokenized (by the kept pieces or byte fallback).</p>
${coverageSvg(r.curve, r.pieces.before, chosen)}
<h2>Vocabulary</h2>
<table><tr><th></th><th>before</th><th>after</th></tr>
<tr><td>sentencepiece pieces</td><td>${num(vb.spSize)}</td><td>${num(va.spSize)}</td></tr>
<tr><td>tokens (pieces + added)</td><td>${num(vb.trueVocab)}</td><td>${num(va.trueVocab)}</td></tr>
<tr><td>embedding rows (padded)</td><td>${num(vb.rows)}</td><td>${num(va.rows)}</td></tr></table>
<h2>Parameters</h2>
<p>${billions(r.params.before.total)} → <b>${billions(r.params.after.total)}</b> (head tied to the embedding, as Megatron stores it;
as HF stores it, with lm_head.weight a separate copy: ${billions(r.params.hfTotal.before)} → ${billions(r.params.hfTotal.after)}).</p>
<table><tr><th>part</th><th>before</th><th>after</th><th>change</th></tr>
${paramRows(r.params.before, r.params.after)}
</table>
${r.notes.length > 0 ? `<h2>Notes</h2><ul>${r.notes.map((n) => `<li>${esc(n)}</li>`).join("")}</ul>` : ""}
</body></html>
`;
}
