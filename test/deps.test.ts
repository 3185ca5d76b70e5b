/**
 * Imports run one way: io → tensors → plan → formats → checkpoints → models → tokenizers → ops → verify → hub → cli
 * (errors.ts, version.ts and index.ts sit outside the layers). A file may import its own layer and the ones before it.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "./helpers/fixtures.js";

const LAYERS = ["io", "tensors", "plan", "formats", "checkpoints", "models", "tokenizers", "ops", "verify", "hub", "cli"];

/** Edges that predate the rule and are still to be moved; the list may only shrink. */
const KNOWN = new Set([
  "src/plan/execute.ts -> src/formats/safetensors/write",
  "src/io/tree.ts -> src/formats/tar/index",
  "src/formats/tar/pack.ts -> src/hub/local-files",
  "src/formats/tar/unpack.ts -> src/hub/repo-path",
]);

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith(".ts") && !p.endsWith(".spec.ts") ? [p] : [];
  });
}

const layerOf = (rel: string) => LAYERS.indexOf(rel.split("/")[1] ?? "");

describe("dependency direction", () => {
  it("no source file imports a later layer", () => {
    const edges: string[] = [];
    for (const file of sources(join(ROOT, "src"))) {
      const rel = relative(ROOT, file);
      const from = layerOf(rel);
      for (const m of readFileSync(file, "utf8").matchAll(/(?:from|import\()\s*["'](\.[^"']+)\.js["']/g)) {
        const target = relative(ROOT, normalize(join(dirname(file), m[1] as string)));
        const to = layerOf(target);
        if (from >= 0 && to > from) edges.push(`${rel} -> ${target}`);
      }
    }
    expect(edges.filter((e) => !KNOWN.has(e))).toEqual([]);
    expect([...KNOWN].filter((e) => !edges.includes(e)), "a KNOWN edge is gone: remove it from the list").toEqual([]);
  });
});
