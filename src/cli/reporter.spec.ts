import { describe, expect, it } from "vitest";
import { createReporter, formatBytes, formatDuration, renderBar } from "./reporter.js";

describe("progress rendering", () => {
  it.each([
    [0, "0 B"],
    [999, "999 B"],
    [1500, "1.5 KB"],
    [2_500_000_000, "2.5 GB"],
  ])("formatBytes(%d) = %s", (n, text) => expect(formatBytes(n)).toBe(text));

  it.each([
    [3.26, "3.3s"],
    [125, "2m5s"],
    [7300, "2h1m"],
  ])("formatDuration(%d) = %s", (s, text) => expect(formatDuration(s)).toBe(text));

  it("shows bytes, rate and ETA midway, and the total time at the end", () => {
    expect(renderBar("convert", 500e6, 2000e6, 5)).toMatch(/^convert \[#{7}-{21}\]  25% 500\.0 MB\/2\.0 GB 100\.0 MB\/s ETA 15\.0s$/);
    expect(renderBar("convert", 2000e6, 2000e6, 20)).toMatch(/100% 2\.0 GB\/2\.0 GB 100\.0 MB\/s in 20\.0s$/);
    expect(renderBar("count", 10, 10, 0)).toBe(`count [${"#".repeat(28)}] 100% 10 B/10 B in 0.0s`);
  });

  it("--json prints one document and no progress; warnings are kept for it", () => {
    const chunks: string[] = [];
    const sink = { write: (s: string) => chunks.push(s) > 0 } as unknown as NodeJS.WritableStream;
    const r = createReporter({ json: true, quiet: false, out: sink, err: sink });
    r.info("hello");
    r.progress("x", 1, 2);
    r.warn("careful");
    r.result({ ok: true });
    expect(chunks.join("")).toBe(`${JSON.stringify({ ok: true }, null, 2)}\n`);
    expect(r.warnings).toEqual(["careful"]);
  });
});
