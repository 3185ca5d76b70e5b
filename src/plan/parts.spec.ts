import { describe, expect, it } from "vitest";
import { bytesSource } from "../io/byte-source.js";
import { assignParts, parsePart, planFingerprint } from "./parts.js";
import type { Plan, PlannedFile } from "./plan.js";
import { readTensor, select } from "./recipe.js";

const source = bytesSource(new Uint8Array(4096), "w.bin");
const tensorFile = (path: string, rows: number, indices?: number[]): PlannedFile => {
  const base = readTensor(source, 0, "F16", [rows, 8], "w");
  return { kind: "safetensors", path, tensors: [{ name: "w", recipe: indices ? select(base, 0, indices) : base }] };
};
const plan = (files: PlannedFile[]): Plan => ({ files, notes: [] });

describe("splitting a plan into parts", () => {
  it("assigns every non-text file to exactly one part, largest first to the lightest part, the same way every time", () => {
    const files = [tensorFile("a", 100), tensorFile("b", 60), tensorFile("c", 50), tensorFile("d", 40), tensorFile("e", 10)];
    const p = plan([...files, { kind: "text", path: "config.json", content: "{}" }]);
    const owner = assignParts(p, 2);
    expect([...owner.keys()].sort()).toEqual(["a", "b", "c", "d", "e"]);
    expect(Object.fromEntries(owner)).toEqual({ a: 1, b: 2, c: 2, d: 1, e: 2 });
    expect(assignParts(plan([...files].reverse()), 2)).toEqual(owner);
    // More parts than files: the extra parts get nothing, and that is fine.
    expect(new Set(assignParts(p, 8).values()).size).toBe(5);
  });

  it("fingerprints everything that fixes the bytes, down to selected indices", () => {
    const a = planFingerprint(plan([tensorFile("a", 16, [0, 1, 2, 3])]));
    expect(planFingerprint(plan([tensorFile("a", 16, [0, 1, 2, 3])]))).toBe(a);
    for (const other of [plan([tensorFile("a", 16, [0, 1, 2, 4])]), plan([tensorFile("b", 16, [0, 1, 2, 3])]), plan([tensorFile("a", 16)])]) {
      expect(planFingerprint(other)).not.toBe(a);
    }
  });

  it("reads i/N and refuses anything else", () => {
    expect(parsePart("3/8")).toEqual({ index: 3, count: 8 });
    for (const bad of ["0/8", "9/8", "3", "a/b", "3/0", "-1/2", "1/2/3", ""]) expect(() => parsePart(bad), bad).toThrow(/--part must be i\/N/);
  });
});
