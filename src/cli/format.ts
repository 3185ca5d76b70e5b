import { formatBytes } from "./reporter.js";

/** Human renderings shared by commands: aligned tables and parameter counts. */
export function table(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] as number))).join("  ")).join("\n");
}

export function formatParams(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

export { formatBytes };

/** "TP 2, PP 2, VPP 2" (PP and VPP only when > 1). */
export function layoutText(p: { tp: number; pp?: number; vpp?: number; ep?: number }): string {
  return [`TP ${p.tp}`, ...((p.pp ?? 1) > 1 ? [`PP ${p.pp}`] : []), ...((p.vpp ?? 1) > 1 ? [`VPP ${p.vpp}`] : []), ...((p.ep ?? 1) > 1 ? [`EP ${p.ep}`] : [])].join(", ");
}
