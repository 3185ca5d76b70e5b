import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { Template } from "@huggingface/jinja";
import { MegahubError } from "../errors.js";
import type { LineageStep, Manifest, VerificationRecord } from "../plan/manifest.js";

/** The template shipped in the package (`files` includes templates/); the same relative path from src/ and dist/. */
export const MODEL_CARD_TEMPLATE = new URL("../../templates/model-card.md.jinja", import.meta.url);

/** What the card says beyond megahub.json. Everything has a default fit for OpenBA. */
export interface ModelCardOptions {
  /** `"namespace/name"` the card is pushed to; used in the usage snippet. */
  repo: string;
  /** The manifest of the folder (megahub.json); undefined makes the card say provenance is unknown. */
  manifest?: Manifest | undefined;
  /** A Hub license id (the Hub rejects ids outside its list). @default "agpl-3.0" */
  license?: string | undefined;
  /** The Hub id of the model these weights derive from. @default "OpenNLG/OpenBA-V2-Based" */
  baseModel?: string | undefined;
  /** Extra tags, after megahub's defaults. */
  tags?: readonly string[] | undefined;
  /** @default ["zh", "en"] */
  languages?: readonly string[] | undefined;
  /** Template text; read from {@link MODEL_CARD_TEMPLATE} when absent. */
  template?: string | undefined;
}

/** `base_model` when none is given: the OpenBA release whose modeling code converted models load with. */
export const DEFAULT_BASE_MODEL = "OpenNLG/OpenBA-V2-Based";
/** OpenBA's weights are released under GNU AGPL 3.0 (its code under Apache-2.0); the id is from the Hub's list. */
export const DEFAULT_LICENSE = "agpl-3.0";

/**
 * Renders README.md for a pushed model: YAML metadata the Hub indexes (license, language, library_name,
 * `pipeline_tag: text-generation` — text2text-generation is no longer a top-level task, hub-protocol.md §3), the
 * lineage and verification from megahub.json, and a usage snippet with OpenBA's prompt format. Deterministic for
 * a given manifest, so pushing the same folder twice uploads the same card (and so nothing).
 */
export async function renderModelCard(options: ModelCardOptions): Promise<string> {
  const source = options.template ?? (await readFile(MODEL_CARD_TEMPLATE, "utf8"));
  let template: Template;
  try {
    template = new Template(source);
  } catch (e) {
    // @huggingface/jinja's parse errors can be opaque ("reading 'type'"): say which template failed.
    throw new MegahubError("FORMAT", `model card template does not parse: ${(e as Error).message}`, {
      file: options.template === undefined ? MODEL_CARD_TEMPLATE.pathname : "<template>",
    });
  }
  return `${template.render(modelCardContext(options)).trimEnd()}\n`;
}

/** The values the template sees, with Markdown table cells already escaped. Exported for tests. */
export function modelCardContext(options: ModelCardOptions): Record<string, unknown> {
  const m = options.manifest;
  const lineage = m?.lineage ?? [];
  const tags = unique([
    "openba",
    "t5",
    "encoder-decoder",
    "megatron",
    "megahub",
    ...(lineage.some((s) => s.step.startsWith("prune")) ? ["pruned"] : []),
    ...(options.tags ?? []),
  ]);
  return {
    license: options.license ?? DEFAULT_LICENSE,
    languages: [...(options.languages ?? ["zh", "en"])],
    library_name: "transformers",
    pipeline_tag: "text-generation",
    tags,
    base_model: options.baseModel ?? DEFAULT_BASE_MODEL,
    repo_id: options.repo,
    model_name: options.repo.split("/").pop() ?? options.repo,
    megahub_version: m?.megahub ?? "",
    has_manifest: m !== undefined,
    architecture: cell(m?.architecture ?? "unknown"),
    dims: Object.entries(m?.model ?? {})
      .map(([k, v]) => `${k} ${v}`)
      .join(", "),
    parameters: Object.entries(m?.parameters ?? {}).map(([part, n]) => ({ part: cell(part), count: formatCount(n) })),
    lineage: lineage.map((s, i) => lineageRow(s, i + 1)),
    verification: (m?.verification ?? []).map(verificationRow),
    files: Object.entries(m?.files ?? {}).map(([path, f]) => ({ path: cell(path), bytes: f.bytes.toLocaleString("en-US") })),
  };
}

function lineageRow(s: LineageStep, n: number): Record<string, unknown> {
  const src = s.source;
  const facts = [
    src.format,
    src.iteration !== undefined ? `iteration ${src.iteration}` : undefined,
    src.tp !== undefined ? `TP ${src.tp}` : undefined,
    src.pp !== undefined ? `PP ${src.pp}` : undefined,
    src.dtype,
  ].filter((x): x is string => x !== undefined && x !== "");
  // Only the last path segment: absolute paths would publish the user's directory layout and user name.
  const name = src.path ? basename(src.path) : "?";
  return {
    n,
    step: cell(s.step),
    at: cell(s.at),
    source: cell(`${name}${facts.length > 0 ? ` (${facts.join(", ")})` : ""}`),
    settings: cell(
      Object.entries(s.settings)
        .map(([k, v]) => `\`${k}=${JSON.stringify(v)}\``)
        .join(", "),
    ),
    notes: (s.notes ?? []).map((note) => note.replace(/\s+/g, " ")),
  };
}

function verificationRow(v: VerificationRecord): Record<string, unknown> {
  return {
    at: cell(v.at),
    kind: cell(v.kind),
    reference: cell(basename(v.reference)),
    provider: cell(v.provider),
    dtype: cell(v.dtype),
    result: v.passed ? "passed" : "**FAILED**",
    max_abs_diff: v.maxAbsDiff.toExponential(2),
    top1: `${(v.top1Agreement * 100).toFixed(1)} %`,
    min_cosine: v.minCosine !== undefined ? v.minCosine.toFixed(6) : "–",
  };
}

/** One Markdown table cell: no newlines, pipes escaped. */
function cell(text: string): string {
  return text.replace(/\s+/g, " ").replace(/\|/g, "\\|");
}

function formatCount(n: number): string {
  const exact = n.toLocaleString("en-US");
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B (${exact})`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M (${exact})`;
  return exact;
}

function unique(xs: readonly string[]): string[] {
  return [...new Set(xs)];
}
