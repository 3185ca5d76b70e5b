import { createHash } from "node:crypto";
import { join } from "node:path";
import { expect } from "vitest";
import { openSafetensors } from "./fixtures.js";

/** A fixture's expected-hf.json: torch's HF tensors (and the config fields transformers reads). */
export interface ExpectedHf {
  model?: string;
  config: Record<string, unknown>;
  tensors: { name: string; dtype: string; shape: number[]; sha256: string }[];
}

/** Every tensor of the HF dir equals torch's expectation (names, dtypes, shapes, sha256 of the bytes). */
export async function expectHf(dir: string, expected: Pick<ExpectedHf, "tensors">): Promise<void> {
  const got = await openSafetensors(join(dir, "model.safetensors"));
  try {
    expect(got.st.entries.map((e) => e.name).sort()).toEqual(expected.tensors.map((t) => t.name).sort());
    for (const t of expected.tensors) {
      const e = got.st.get(t.name);
      expect([e?.dtype, e?.shape], t.name).toEqual([t.dtype, t.shape]);
      expect(createHash("sha256").update(await got.bytes(t.name)).digest("hex"), `${t.name} differs from torch's`).toBe(t.sha256);
    }
  } finally {
    await got.close();
  }
}
