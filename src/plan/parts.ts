import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { MegahubError } from "../errors.js";
import { safetensorsHeader } from "../formats/safetensors/write.js";
import { writeFileAtomic } from "../io/atomic.js";
import { executePlan, type ExecuteOptions, type ExecuteResult, type FileRecord } from "./execute.js";
import { fileBytes, tensorsOf, type Plan, type PlannedFile } from "./plan.js";
import type { Recipe } from "./recipe.js";

/**
 * One plan over N workers. The plan is computed from headers, so every worker computes the same one; each writes
 * only the output files assigned to its part (balanced by bytes, deterministically) into a staging area shared by
 * all parts (`.<out>.parts` beside `--out`, on a filesystem every worker sees), journaling each file as it
 * completes. `finalize` checks every part, writes the small files (index, config, tokenizer) and the manifest, and
 * renames the staging area into place. Re-running a part skips the files its journal lists (resume).
 */
export interface Part {
  /** 1-based, as SLURM array indices usually are. */
  readonly index: number;
  readonly count: number;
}

export interface PartJournal {
  /** Which plan this part belongs to: parts of different plans never mix. */
  plan: string;
  part: number;
  count: number;
  /** True once every file of the part is written. */
  complete: boolean;
  files: Record<string, FileRecord>;
  tensors: ExecuteResult["tensors"];
  overflows: number;
}

/** Inside the staging area: one journal per part; removed before the area becomes the output. */
export const JOURNAL_DIR = ".megahub-parts";
const headerBytes = (f: Parameters<typeof safetensorsHeader>[0]) => safetensorsHeader(f).byteLength;

/** "3/8" → part 3 of 8. */
export function parsePart(text: string): Part {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  const index = Number(m?.[1]);
  const count = Number(m?.[2]);
  if (!m || count < 1 || index < 1 || index > count) {
    throw new MegahubError("USAGE", `--part must be i/N with 1 ≤ i ≤ N (e.g. 3/8), got "${text}"`);
  }
  return { index, count };
}

/** The staging area every part of `out` writes into. */
export function stagingDir(out: string): string {
  return join(dirname(out), `.${basename(out)}.parts`);
}

/** Files a part writes: everything but the small text files, which finalize writes. */
export function isPartWork(f: PlannedFile): boolean {
  return f.kind !== "text";
}

/**
 * Output file → part (1-based): largest first, each to the part with the fewest bytes so far (ties: lower part,
 * then path order). Depends only on the plan, so every worker computes the same split.
 */
export function assignParts(plan: Plan, count: number): Map<string, number> {
  const work = plan.files
    .filter(isPartWork)
    .map((f) => ({ path: f.path, bytes: fileBytes(f, headerBytes) }))
    .sort((a, b) => b.bytes - a.bytes || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const load = new Array<number>(count).fill(0);
  const owner = new Map<string, number>();
  for (const f of work) {
    let best = 0;
    for (let p = 1; p < count; p++) if ((load[p] as number) < (load[best] as number)) best = p;
    load[best] = (load[best] as number) + f.bytes;
    owner.set(f.path, best + 1);
  }
  return owner;
}

/**
 * A digest of everything that fixes the output bytes: paths, sizes, tensor names, dtypes, shapes and every recipe
 * down to its source offsets and selected indices. Source files are named by tensor label and offset, not by path,
 * so workers that mount the checkpoint at different paths still agree.
 */
export function planFingerprint(plan: Plan): string {
  const h = createHash("sha256");
  const put = (...xs: (string | number)[]): void => void h.update(`${xs.join("\u0001")}\u0002`);
  const recipe = (r: Recipe): void => {
    put(r.kind, r.dtype, r.shape.join(","));
    switch (r.kind) {
      case "read":
        return put(r.label, r.offset, r.source.size);
      case "strided":
        return put(r.label, r.storageOffset, r.stride.join(","), r.source.size);
      case "concat":
        put(r.dim, r.parts.length);
        return r.parts.forEach(recipe);
      case "select":
        put(r.dim, r.indices.join(","));
        return recipe(r.input);
      case "cast":
      case "padRows":
        return recipe(r.input);
    }
  };
  for (const f of plan.files) {
    put(f.kind, f.path, fileBytes(f, headerBytes));
    if (f.kind === "text") put(createHash("sha256").update(f.content).digest("hex"));
    if (f.kind === "safetensors") put(JSON.stringify(f.metadata ?? {}));
    for (const t of tensorsOf(f)) {
      put(t.name);
      recipe(t.recipe);
    }
  }
  return h.digest("hex");
}

export function journalPath(staging: string, part: Part): string {
  return join(staging, JOURNAL_DIR, `part-${part.index}-of-${part.count}.json`);
}

async function readJournal(path: string): Promise<PartJournal | undefined> {
  try {
    return JSON.parse(await readFile(path, "utf8")) as PartJournal;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new MegahubError("OUTPUT", `part journal is unreadable (${(e as Error).message}); remove it and run that part again`, { file: path });
  }
}

const sizeOf = (path: string) => stat(path).then((s) => s.size, () => -1);

/**
 * Runs part `part` of `plan` into the staging area of `out`. Files the journal already lists, and that are on disk
 * at their planned size, are kept; anything else assigned to this part is (re)written.
 */
export async function runPart(
  plan: Plan,
  out: string,
  part: Part,
  options: Omit<ExecuteOptions, "onFile">,
): Promise<ExecuteResult & { skipped: string[] }> {
  const staging = stagingDir(out);
  const fingerprint = planFingerprint(plan);
  await mkdir(join(staging, JOURNAL_DIR), { recursive: true });
  const path = journalPath(staging, part);
  const previous = await readJournal(path);
  if (previous && previous.plan !== fingerprint) {
    throw new MegahubError("USAGE", `part ${part.index}/${part.count} was started for a different plan (other inputs or options); remove ${staging} or choose another --out`, { file: path });
  }
  const owner = assignParts(plan, part.count);
  const mine = plan.files.filter((f) => owner.get(f.path) === part.index);
  const journal: PartJournal = { plan: fingerprint, part: part.index, count: part.count, complete: false, files: {}, tensors: {}, overflows: 0 };
  const todo: PlannedFile[] = [];
  const skipped: string[] = [];
  for (const f of mine) {
    const done = previous?.files[f.path];
    if (done && (await sizeOf(join(staging, f.path))) === fileBytes(f, headerBytes) && done.bytes === fileBytes(f, headerBytes)) {
      journal.files[f.path] = done;
      for (const t of tensorsOf(f)) {
        const entry = previous?.tensors[t.name];
        if (entry) journal.tensors[t.name] = entry;
      }
      skipped.push(f.path);
    } else {
      await rm(join(staging, f.path), { force: true }); // a file cut short by an earlier run
      todo.push(f);
    }
  }
  journal.overflows = skipped.length > 0 ? (previous?.overflows ?? 0) : 0;
  await writeFileAtomic(path, JSON.stringify(journal));
  const execution = await executePlan({ ...plan, files: todo }, staging, {
    ...options,
    onFile: async (file, record, tensors) => {
      journal.files[file] = record;
      Object.assign(journal.tensors, tensors);
      await writeFileAtomic(path, JSON.stringify(journal));
    },
  });
  journal.overflows += execution.overflows;
  journal.complete = true;
  await writeFileAtomic(path, JSON.stringify(journal));
  return { ...execution, skipped };
}

/** Reads and checks every part's journal: all N present, complete, of this plan, and listing their files. */
export async function readParts(plan: Plan, out: string): Promise<PartJournal[]> {
  const staging = stagingDir(out);
  const names = await readdir(join(staging, JOURNAL_DIR)).catch(() => [] as string[]);
  const counts = new Set(names.map((n) => /^part-\d+-of-(\d+)\.json$/.exec(n)?.[1]).filter((c): c is string => c !== undefined));
  if (counts.size === 0) throw new MegahubError("USAGE", `no part has run for this output (nothing in ${staging}); run the parts with --part i/N first`, { file: out });
  if (counts.size > 1) throw new MegahubError("USAGE", `the staging area holds parts of different splits (${[...counts].map((c) => `N = ${c}`).join(", ")}); remove ${staging} and run again`, { file: out });
  const count = Number([...counts][0]);
  const fingerprint = planFingerprint(plan);
  const owner = assignParts(plan, count);
  const journals: PartJournal[] = [];
  const problems: string[] = [];
  for (let index = 1; index <= count; index++) {
    const j = await readJournal(journalPath(staging, { index, count }));
    const missing = [...owner].filter(([p, i]) => i === index && !j?.files[p]).map(([p]) => p);
    if (!j) problems.push(`part ${index}/${count} has not run`);
    else if (j.plan !== fingerprint) problems.push(`part ${index}/${count} was run for a different plan (other inputs or options)`);
    else if (!j.complete || missing.length > 0) problems.push(`part ${index}/${count} is incomplete (${missing.length > 0 ? `missing ${missing.join(", ")}` : "still running or stopped"})`);
    else journals.push(j);
  }
  if (problems.length > 0) throw new MegahubError("OUTPUT", `cannot finalize: ${problems.join("; ")}; nothing was written under ${out}`, { file: out });
  return journals;
}
