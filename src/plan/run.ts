import { statfs } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { MegahubError } from "../errors.js";
import { safetensorsHeader } from "../formats/safetensors/write.js";
import { StagedDir } from "../io/atomic.js";
import { executePlan, type ExecuteResult } from "./execute.js";
import { readManifest, writeManifest, type LineageStep, type Manifest } from "./manifest.js";
import { summarizePlan, type Plan } from "./plan.js";
import { VERSION } from "../version.js";

export interface RunOptions {
  onProgress?: (done: number, total: number) => void;
  /** The step this run adds to the lineage. */
  step: Omit<LineageStep, "at">;
  /** Where an earlier megahub manifest may be found (the source), so lineage accumulates across steps. */
  sourceDir?: string;
  model: Record<string, number | string>;
  /** The architecture the manifest records (the model card and verify read it). */
  architecture?: string;
  parameters?: Record<string, number>;
}

/**
 * Runs a plan into a staged directory, writes megahub.json (the source's lineage plus this step, the sha256 and
 * recipe of every tensor), and renames the directory into place only when all of it succeeded.
 */
export async function runPlan(plan: Plan, out: string, options: RunOptions): Promise<ExecuteResult> {
  const previous = options.sourceDir ? await readManifest(options.sourceDir).catch(() => undefined) : undefined;
  const staged = await StagedDir.create(out);
  try {
    await checkFreeSpace(plan, staged.path);
  } catch (e) {
    await staged.abort();
    throw e;
  }
  try {
    const execution = await executePlan(plan, staged.path, options.onProgress ? { onProgress: options.onProgress } : {});
    const notes = [...(options.step.notes ?? []), ...(execution.overflows > 0 ? [`${execution.overflows} values overflowed to ±inf when casting`] : [])];
    const manifest: Manifest = {
      megahub: VERSION,
      architecture: options.architecture ?? "openba",
      model: options.model,
      ...(options.parameters ? { parameters: options.parameters } : {}),
      lineage: [...(previous?.lineage ?? []), { ...options.step, at: new Date().toISOString(), notes }],
      files: execution.files,
      tensors: execution.tensors,
      // The source's checks stay in the history, labelled by the model they checked (its lineage length).
      verification: (previous?.verification ?? []).map((v) => ({ ...v, step: v.step ?? previous?.lineage.length ?? 0 })),
    };
    await writeManifest(staged.path, manifest);
    await staged.commit();
    return execution;
  } catch (e) {
    await staged.abort();
    throw e;
  }
}

/**
 * Refuses to start a plan that cannot fit: a full disk found after 40 GB of writing costs an hour. The plan knows
 * every file's exact size before a byte is read; 1 MiB per file covers the manifest and file-system overhead.
 */
export async function checkFreeSpace(plan: Plan, dir: string): Promise<void> {
  const need = summarizePlan(plan, (f) => safetensorsHeader(f).byteLength).bytesToWrite + plan.files.length * (1 << 20);
  const fs = await statfs(dir).catch(() => undefined);
  if (fs === undefined) return; // a file system that cannot say: the write itself will tell
  const free = Number(fs.bavail) * Number(fs.bsize);
  if (free < need) {
    const gb = (n: number) => `${(n / 1e9).toFixed(2)} GB`;
    throw new MegahubError("OUTPUT", `needs ${gb(need)} but only ${gb(free)} is free there; free some space or choose another --out`, { file: resolve(dirname(dir)) });
  }
}
