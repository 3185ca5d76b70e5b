import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { isMegahubError } from "../src/errors.js";
import { parseSentencePieceModel, serializeSentencePieceModel } from "../src/formats/sentencepiece/model.js";
import { indexTar } from "../src/formats/tar/index.js";
import { bytesSource } from "../src/io/byte-source.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";

const work = mkdtempSync(join(tmpdir(), "megahub-garbage-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Seeded mutations (byte flips, truncation): each outcome must be a value or a MegahubError, never another throw. */
async function mutations(original: Uint8Array, count: number, seed: number, parse: (b: Uint8Array) => unknown | Promise<unknown>) {
  let s = seed;
  const rand = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  let typed = 0;
  for (let i = 0; i < count; i++) {
    const m = original.slice(0, rand() < 0.25 ? Math.floor(rand() * original.length) : original.length);
    for (let k = 0; k < 1 + Math.floor(rand() * 4) && m.length > 0; k++) {
      const at = rand() < 0.7 ? Math.floor(rand() * Math.min(m.length, 2048)) : Math.floor(rand() * m.length);
      m[at] = Math.floor(rand() * 256);
    }
    try {
      await parse(m);
    } catch (e) {
      if (!isMegahubError(e)) throw new Error(`mutation ${i}: ${(e as Error).stack}`);
      typed++;
    }
  }
  return typed;
}

describe.skipIf(!hasFixture("tokenizer", "spiece.model"))("sentencepiece ModelProto", () => {
  const bytes = () => new Uint8Array(readFileSync(fixture("tokenizer", "spiece.model")));

  it("round-trips byte for byte through the protobuf reader and writer", () => {
    const original = bytes();
    const model = parseSentencePieceModel(original, "spiece.model");
    expect(model.pieces.length).toBe(1000);
    expect(Buffer.compare(serializeSentencePieceModel(model), original)).toBe(0);
  });

  it("1,000 mutations end in a model or a typed error", async () => {
    const typed = await mutations(bytes(), 1000, 5, (b) => parseSentencePieceModel(b, "m.model"));
    expect(typed).toBeGreaterThan(100);
  });
});

describe.skipIf(!hasFixture("megatron", "fp16-tp1"))("tar index", () => {
  it("1,000 mutations of a checkpoint tar end in members or a typed error", async () => {
    const tar = join(work, "c.tar");
    execFileSync("tar", ["-cf", tar, "-C", fixture("megatron"), "release-tp1"]);
    const original = new Uint8Array(readFileSync(tar));
    const members = await indexTar(bytesSource(original, "c.tar"));
    expect(members.some((m) => m.name.endsWith("model_optim_rng.pt"))).toBe(true);
    const typed = await mutations(original, 1000, 9, (b) => indexTar(bytesSource(b, "m.tar")));
    expect(typed).toBeGreaterThan(50);
  });
});
