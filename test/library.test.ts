/** The library surface: every operation in one params-object style, importable from the package entry. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import * as megahub from "../src/index.js";
import { fixture } from "./helpers/fixtures.js";

const work = mkdtempSync(join(tmpdir(), "megahub-lib-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe("library exports", () => {
  it("has every operation", () => {
    for (const name of ["convertMegatronToHf", "reshardMegatron", "hfToMegatron", "pruneCheckpoint", "pruneVocab", "countVocab", "pack", "unpack", "verifyModel", "pushFolder", "pullRepo", "renderModelCard", "sanitizeValue", "isSafeGlobal"] as const) {
      expect(typeof megahub[name], name).toBe("function");
    }
  });

  it("countVocab, pack and unpack take one params object with onProgress", async () => {
    const progress: number[] = [];
    const counts = await megahub.countVocab({ files: [fixture("corpus", "train.txt")], tokenizer: fixture("tokenizer", "spiece.model"), threads: 1, onProgress: (d) => progress.push(d) });
    expect(counts.tokens).toBeGreaterThan(1000);
    expect(progress.length).toBeGreaterThan(0);
    const dir = join(work, "folder");
    mkdirSync(dir);
    writeFileSync(join(dir, "config.json"), '{"a": 1}');
    const tar = join(work, "f.tar");
    await megahub.pack({ dir, out: tar });
    await megahub.unpack({ file: tar, out: join(work, "back") });
    expect(readFileSync(join(work, "back", "config.json"), "utf8")).toBe('{"a": 1}');
  });
});
