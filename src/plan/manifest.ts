import { readFile } from "node:fs/promises";
import { MegahubError } from "../errors.js";
import { parseJsonObject } from "../io/json-file.js";
import { join } from "node:path";
import { writeFileAtomic } from "../io/atomic.js";

/**
 * megahub.json: written beside every output (HF dir or Megatron root). It is the provenance record the model card,
 * `verify` and `push` read: where the weights came from, every step applied, and what verification found.
 */
export const MANIFEST_FILE = "megahub.json";

export interface LineageStep {
  /** "convert", "reshard", "to-megatron", "prune", "prune-vocab", … */
  step: string;
  /** ISO time the step finished. */
  at: string;
  /** Where this step read from. */
  source: {
    path: string;
    format: string;
    iteration?: number | string;
    tp?: number;
    pp?: number;
    vpp?: number;
    dtype?: string;
  };
  /** The options the step ran with (plain JSON). */
  settings: Record<string, unknown>;
  /** Free-form facts a reader should know (dropped optimizer state, vocab rows kept …). */
  notes?: string[];
}

export interface VerificationRecord {
  at: string;
  kind: "reference" | "against";
  reference: string;
  provider: string;
  dtype: string;
  passed: boolean;
  maxAbsDiff: number;
  top1Agreement: number;
  minCosine?: number;
  atol?: number;
  /** Lineage steps of the model that was checked: a record carried from a source checked that source. */
  step?: number;
}

export interface Manifest {
  megahub: string;
  architecture: string;
  /** Model dims as read from tensor shapes. */
  model: Record<string, number | string>;
  /** Parameter counts per part. */
  parameters?: Record<string, number>;
  lineage: LineageStep[];
  /** Per output file: bytes and sha256. */
  files: Record<string, { bytes: number; sha256?: string }>;
  /** Per output tensor: sha256 of its bytes and the recipe that made it. */
  tensors?: Record<string, { sha256?: string; recipe: string }>;
  verification: VerificationRecord[];
}

export async function readManifest(dir: string): Promise<Manifest | undefined> {
  try {
    const path = join(dir, MANIFEST_FILE);
    const m = parseJsonObject(await readFile(path, "utf8"), path);
    if (!Array.isArray(m.verification)) throw new MegahubError("FORMAT", "expected a \"verification\" list", { file: path });
    return m as unknown as Manifest;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

export async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  await writeFileAtomic(join(dir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
}

/** Adds a verification result to an existing output's manifest (creating a minimal one if absent). */
export async function appendVerification(dir: string, record: VerificationRecord): Promise<void> {
  const m = (await readManifest(dir)) ?? {
    megahub: "0.1.0",
    architecture: "openba",
    model: {},
    lineage: [],
    files: {},
    verification: [],
  };
  m.verification.push({ ...record, step: record.step ?? m.lineage.length });
  await writeManifest(dir, m);
}
