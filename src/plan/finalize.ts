import { createHash } from "node:crypto";
import { rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { MegahubError } from "../errors.js";
import { safetensorsHeader } from "../formats/safetensors/write.js";
import { assertWritableTarget, writeFileAtomic } from "../io/atomic.js";
import type { ExecuteResult, FileRecord } from "./execute.js";
import { createTensorHasher } from "./hasher.js";
import { assignParts, isPartWork, JOURNAL_DIR, journalPath, readParts, stagingDir, type PartJournal } from "./parts.js";
import { fileBytes, type Plan } from "./plan.js";

export interface FinalizeOptions {
  /**
   * Hash every staged file again and compare with its part's journal (on by default): parts may have run on other
   * machines over a shared filesystem, and this is the check that what arrived is what was written. Local workers
   * that just finished skip it.
   */
  rehash?: boolean;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Checks every part of a split run and completes the staging area: every file present at its planned size and,
 * with `rehash`, hashing to what its part journaled; then the small text files. A damaged file is removed and
 * dropped from its part's journal, so running that part again rewrites just it. Returns the whole run's result;
 * the caller writes the manifest into {@link stagingDir} and calls {@link commitParts}.
 */
export async function finalizeParts(plan: Plan, out: string, options: FinalizeOptions = {}): Promise<ExecuteResult> {
  await assertWritableTarget(out);
  const journals = await readParts(plan, out);
  const count = journals.length;
  const staging = stagingDir(out);
  const owner = assignParts(plan, count);
  const journalOf = (path: string) => journals[(owner.get(path) as number) - 1] as PartJournal;
  const work = plan.files.filter(isPartWork);
  const total = work.reduce((a, f) => a + fileBytes(f, (t) => safetensorsHeader(t).byteLength), 0);
  let done = 0;
  const checked = new Map<string, FileRecord>();
  const damaged: { path: string; part: number; why: string }[] = [];
  const hasher = createTensorHasher();
  try {
    await Promise.all(
      work.map(async (f) => {
        const planned = fileBytes(f, (t) => safetensorsHeader(t).byteLength);
        const record = journalOf(f.path).files[f.path] as FileRecord;
        const part = owner.get(f.path) as number;
        const bytes = await stat(join(staging, f.path)).then((s) => s.size, () => -1);
        if (bytes !== planned) {
          damaged.push({ path: f.path, part, why: bytes < 0 ? "is missing" : `has ${bytes} bytes, planned ${planned}` });
          return;
        }
        let sha256 = record.sha256;
        if (options.rehash !== false || sha256 === undefined) {
          const actual = await hasher.hashFile(join(staging, f.path));
          if (sha256 !== undefined && actual !== sha256) damaged.push({ path: f.path, part, why: `hashes to ${actual.slice(0, 12)}…, its part wrote ${sha256.slice(0, 12)}…` });
          sha256 = actual;
        }
        checked.set(f.path, { bytes, sha256 });
        done += bytes;
        options.onProgress?.(done, total);
      }),
    );
  } finally {
    await hasher.close();
  }
  if (damaged.length > 0) {
    await forget(staging, journals, damaged);
    const parts = [...new Set(damaged.map((d) => d.part))].sort((a, b) => a - b);
    throw new MegahubError(
      "OUTPUT",
      `cannot finalize: ${damaged.map((d) => `${d.path} (part ${d.part}/${count}) ${d.why}`).join("; ")}; run part${parts.length > 1 ? "s" : ""} ${parts.map((p) => `${p}/${count}`).join(", ")} again (it rewrites only these files); nothing was written under ${out}`,
      { file: out },
    );
  }
  const result: ExecuteResult = { files: {}, tensors: {}, overflows: 0, bytesWritten: 0 };
  for (const f of plan.files) {
    let record = checked.get(f.path);
    if (f.kind === "text") {
      await writeFileAtomic(join(staging, f.path), f.content);
      const bytes = typeof f.content === "string" ? Buffer.byteLength(f.content) : f.content.byteLength;
      record = { bytes, sha256: createHash("sha256").update(f.content).digest("hex") };
    }
    if (record) {
      result.files[f.path] = record;
      result.bytesWritten += record.bytes;
    }
  }
  for (const j of journals) {
    Object.assign(result.tensors, j.tensors);
    result.overflows += j.overflows;
  }
  return result;
}

/** Drops damaged files from disk and from their journals (which are then incomplete), so their parts redo them. */
async function forget(staging: string, journals: PartJournal[], damaged: { path: string; part: number }[]): Promise<void> {
  for (const d of damaged) {
    const j = journals[d.part - 1] as PartJournal;
    delete j.files[d.path];
    j.complete = false;
    await rm(join(staging, d.path), { force: true });
  }
  for (const part of new Set(damaged.map((d) => d.part))) {
    const j = journals[part - 1] as PartJournal;
    await writeFileAtomic(journalPath(staging, { index: j.part, count: j.count }), JSON.stringify(j));
  }
}

/** Removes the journals and renames the finished staging area to `out`: the output appears whole or not at all. */
export async function commitParts(out: string): Promise<void> {
  const staging = stagingDir(out);
  await rm(join(staging, JOURNAL_DIR), { recursive: true, force: true });
  await assertWritableTarget(out);
  await rm(out, { recursive: true, force: true }); // only an empty dir can be here
  await rename(staging, out);
}
