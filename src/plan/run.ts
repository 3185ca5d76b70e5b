import { statfs } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { MegahubError } from "../errors.js";
import { safetensorsHeader } from "../formats/safetensors/write.js";
import { assertWritableTarget, StagedDir } from "../io/atomic.js";
import { executePlan, type ExecuteResult } from "./execute.js";
import { commitParts, finalizeParts } from "./finalize.js";
import { readManifest, writeManifest, type LineageStep, type Manifest } from "./manifest.js";
import { runPart, stagingDir, type Part } from "./parts.js";
import { summarizePlan, type Plan } from "./plan.js";
import { runWorkers, type Relaunch } from "./workers.js";
import { VERSION } from "../version.js";

/** How a plan runs: whole, one part of a split, the finalize step of a split, or split over local workers. */
export interface RunControl {
  /** Write only this part's files into the shared staging area (see parts.ts). */
  part?: Part;
  /** Check every part and put the output in place. */
  finalize?: boolean;
  /** Run parts 1…N as local processes, then finalize. Needs `relaunch`. */
  workers?: number;
  relaunch?: Relaunch;
  /** sha256 of every output file (default on: the manifest, finalize and push use it). */
  hash?: boolean;
  /** sha256 of every tensor too (default off: it hashes every byte a second time). */
  tensorHashes?: boolean;
}

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
  control?: RunControl;
}

export interface RunResult extends ExecuteResult {
  /** Set for a `--part` run: the output is not in place until `--finalize`. */
  part?: Part & { staging: string; skipped: string[] };
}

/**
 * Runs a plan into a staged directory, writes megahub.json (the source's lineage plus this step, the sha256 of every
 * file and the recipe of every tensor), and renames the directory into place only when all of it succeeded. With a
 * split (`control.part`, `control.finalize`, `control.workers`) the same happens across processes.
 */
export async function runPlan(plan: Plan, out: string, options: RunOptions): Promise<RunResult> {
  const control = options.control ?? {};
  const modes = [control.part, control.finalize, control.workers].filter((m) => m !== undefined && m !== false).length;
  if (modes > 1) throw new RangeError("--part, --finalize and --workers exclude one another");
  const exec = {
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    hash: control.hash ?? true,
    tensorHashes: control.tensorHashes === true,
  };
  if (control.part) {
    await assertWritableTarget(out);
    const execution = await runPart(plan, out, control.part, exec);
    return { ...execution, part: { ...control.part, staging: stagingDir(out), skipped: execution.skipped } };
  }
  if (control.workers !== undefined || control.finalize) {
    if (control.workers !== undefined) {
      if (!control.relaunch) throw new RangeError("--workers needs a command line to start the parts with");
      if (!Number.isInteger(control.workers) || control.workers < 1) throw new RangeError(`--workers must be a positive integer, got ${control.workers}`);
      await assertWritableTarget(out);
      await runWorkers(plan, out, control.workers, control.relaunch, options.onProgress);
    }
    const execution = await finalizeParts(plan, out, {
      rehash: control.workers === undefined,
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    await writeManifest(stagingDir(out), await manifestFor(execution, options));
    await commitParts(out);
    return execution;
  }
  const staged = await StagedDir.create(out);
  try {
    await checkFreeSpace(plan, staged.path);
  } catch (e) {
    await staged.abort();
    throw e;
  }
  try {
    const execution = await executePlan(plan, staged.path, exec);
    await writeManifest(staged.path, await manifestFor(execution, options));
    await staged.commit();
    return execution;
  } catch (e) {
    await staged.abort();
    throw e;
  }
}

async function manifestFor(execution: ExecuteResult, options: RunOptions): Promise<Manifest> {
  const previous = options.sourceDir ? await readManifest(options.sourceDir).catch(() => undefined) : undefined;
  const notes = [...(options.step.notes ?? []), ...(execution.overflows > 0 ? [`${execution.overflows} values overflowed to ±inf when casting`] : [])];
  return {
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
