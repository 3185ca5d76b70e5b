import { StagedDir } from "../io/atomic.js";
import { executePlan, type ExecuteResult } from "./execute.js";
import { readManifest, writeManifest, type LineageStep, type Manifest } from "./manifest.js";
import type { Plan } from "./plan.js";
import { VERSION } from "../version.js";

export interface RunOptions {
  onProgress?: (done: number, total: number) => void;
  /** The step this run adds to the lineage. */
  step: Omit<LineageStep, "at">;
  /** Where an earlier megahub manifest may be found (the source), so lineage accumulates across steps. */
  sourceDir?: string;
  model: Record<string, number | string>;
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
    const execution = await executePlan(plan, staged.path, options.onProgress ? { onProgress: options.onProgress } : {});
    const notes = [...(options.step.notes ?? []), ...(execution.overflows > 0 ? [`${execution.overflows} values overflowed to ±inf when casting`] : [])];
    const manifest: Manifest = {
      megahub: VERSION,
      architecture: "openba",
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
