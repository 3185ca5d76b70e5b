import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { isMegahubError } from "../src/errors.js";
import { openMegatron, tensorRecipe } from "../src/formats/megatron/read.js";
import { loadTorch } from "../src/formats/torch/load.js";
import { PyCall, walkTensors } from "../src/formats/torch/values.js";
import { bytesSource, FileSource } from "../src/io/byte-source.js";
import { blocks } from "../src/plan/execute.js";
import { fixture, hasFixture, openSafetensors } from "./helpers/fixtures.js";

async function tensorBytes(file: Awaited<ReturnType<typeof loadTorch>>): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const [name, t] of walkTensors(file.root)) {
    const parts: Uint8Array[] = [];
    for await (const b of blocks(tensorRecipe(file, t, name), 1 << 20, { overflows: 0 })) parts.push(b);
    out.set(name, Buffer.concat(parts));
  }
  return out;
}

const rankFile = (name: string) => {
  const root = fixture("megatron", name);
  const iter = readdirSync(root).find((d) => d.startsWith("iter_")) as string;
  return fixture("megatron", name, iter, "mp_rank_00", "model_optim_rng.pt");
};

describe.skipIf(!hasFixture("hostile"))("hostile pickles load as inert data", () => {
  const files = hasFixture("hostile") ? readdirSync(fixture("hostile")).filter((f) => f.endsWith(".pt")) : [];
  it.each(files)("%s", async (f) => {
    const marker = "/tmp/megahub-pwned";
    rmSync(marker, { force: true });
    const src = await FileSource.open(fixture("hostile", f));
    const file = await loadTorch(src);
    await src.close();
    expect(file.report.dangerous.length, `globals: ${file.globals.join(", ")}`).toBeGreaterThan(0);
    expect(file.report.dangerous.every((g) => /^(posix|os|nt|builtins|__builtin__|subprocess)\./.test(g))).toBe(true);
    const inert: PyCall[] = [];
    const seen = new Set<unknown>();
    const visit = (v: unknown) => {
      if (typeof v !== "object" || v === null || seen.has(v)) return;
      seen.add(v);
      if (v instanceof PyCall) inert.push(v);
      Object.values(v).forEach(visit);
    };
    visit(file.root);
    expect(inert.some((c) => file.report.dangerous.includes(c.global?.qualified ?? ""))).toBe(true);
    expect(existsSync(marker)).toBe(false);
  });
});

describe.skipIf(!hasFixture("legacy", "expected.safetensors"))("pre-1.6 torch formats", () => {
  it.each(["legacy-stream.pt", "legacy-tar.pt"])("%s matches torch's tensors", async (f) => {
    const src = await FileSource.open(fixture("legacy", f));
    const file = await loadTorch(src);
    expect(file.format).toBe(f.includes("tar") ? "legacy-tar" : "legacy-stream");
    const got = await tensorBytes(file);
    await src.close();
    const expected = await openSafetensors(fixture("legacy", "expected.safetensors"));
    expect([...got.keys()].sort()).toEqual(expected.st.entries.map((e) => e.name).sort());
    for (const e of expected.st.entries) {
      expect(Buffer.compare(got.get(e.name) as Buffer, await expected.bytes(e.name)), e.name).toBe(0);
    }
    await expected.close();
  });
});

describe.skipIf(!hasFixture("megatron", "fp16-tp1"))("Megatron checkpoints", () => {
  it("reads args with an inert ModelType enum and a torch dtype, and flags nothing dangerous", async () => {
    const ckpt = await openMegatron(fixture("megatron", "fp16-tp1"));
    try {
      expect(ckpt.args?.field("tensor_model_parallel_size")).toBe(1);
      // ModelType is on the allow-list (Megatron's own weights_only list has it).
      expect(ckpt.unknownGlobals).toEqual([]);
      expect(ckpt.dangerousGlobals).toEqual([]);
      expect(ckpt.checkpointVersion).toBe(3);
    } finally {
      await ckpt.close();
    }
  });

  it("views sharing one storage read the right bytes", async () => {
    if (!hasFixture("megatron", "shared-views-tp1")) throw new Error("fixture shared-views-tp1 is missing");
    const converted = await openMegatron(fixture("megatron", "shared-views-tp1"));
    const keys = new Set([...(converted.shards[0]?.tensors.values() ?? [])].map((t) => t.storage.key));
    expect(keys.size).toBeLessThan(converted.shards[0]?.tensors.size ?? 0);
    await converted.close();
  });
});

/** Seeded byte mutations and truncations: every outcome is a parse or a MegahubError, never a crash or a hang. */
function mutationLoop(name: string, original: Uint8Array, count: number, seed: number) {
  it(`${name}: ${count} mutations end in data or a typed error`, async () => {
    let s = seed;
    const rand = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    let typed = 0;
    for (let i = 0; i < count; i++) {
      const cut = rand() < 0.25 ? Math.floor(rand() * original.length) : original.length;
      const m = original.slice(0, cut);
      const flips = 1 + Math.floor(rand() * 6);
      for (let k = 0; k < flips && m.length > 0; k++) {
        // Aim most flips at the metadata (pickle, headers, directory) where structure lives.
        const at = rand() < 0.7 ? Math.floor(rand() * Math.min(m.length, 4096)) : Math.floor(rand() * m.length);
        m[at] = rand() < 0.5 ? Math.floor(rand() * 256) : (m[at] as number) ^ (1 << Math.floor(rand() * 8));
      }
      if (rand() < 0.1 && m.length > 64) m.copyWithin(Math.floor(rand() * m.length), m.length - 64); // spliced tail
      try {
        const f = await loadTorch(bytesSource(m, name));
        await tensorBytes(f);
      } catch (e) {
        if (!isMegahubError(e)) throw new Error(`mutation ${i}: ${(e as Error).stack}`);
        typed++;
      }
    }
    expect(typed).toBeGreaterThan(count / 10);
  });
}

describe("garbage input", () => {
  if (hasFixture("megatron", "fp16-tp1")) mutationLoop("zip checkpoint", readFileSync(rankFile("fp16-tp1")), 1200, 7);
  if (hasFixture("legacy", "legacy-stream.pt")) mutationLoop("legacy stream", readFileSync(fixture("legacy", "legacy-stream.pt")), 1000, 11);
  if (hasFixture("legacy", "legacy-tar.pt")) mutationLoop("legacy tar", readFileSync(fixture("legacy", "legacy-tar.pt")), 1000, 13);
  it("rejects a file that is no checkpoint", async () => {
    const err = await loadTorch(bytesSource(new TextEncoder().encode("hello, world\n"), "notes.txt")).catch((e: unknown) => e);
    expect(isMegahubError(err)).toBe(true);
  });
});
