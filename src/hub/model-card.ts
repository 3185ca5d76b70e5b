import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { Template } from "@huggingface/jinja";
import { MegahubError } from "../errors.js";
import type { LineageStep, Manifest, VerificationRecord } from "../plan/manifest.js";

/** The template shipped in the package (`files` includes templates/); the same relative path from src/ and dist/. */
export const MODEL_CARD_TEMPLATE = new URL("../../templates/model-card.md.jinja", import.meta.url);

/**
 * What the card says beyond megahub.json. Lineage, licence and languages are facts megahub cannot know: each is
 * written only when given (an empty value means "leave it out"), never guessed.
 */
export interface ModelCardOptions {
  /** `"namespace/name"` the card is pushed to; used in the usage snippet. */
  repo: string;
  /** The manifest of the folder (megahub.json); undefined makes the card say provenance is unknown. */
  manifest?: Manifest | undefined;
  /** A Hub license id (the Hub rejects ids outside its list); omitted from the card when absent or empty. */
  license?: string | undefined;
  /** The Hub id of the model these weights derive from; omitted when absent or empty. */
  baseModel?: string | undefined;
  /** Extra tags, after megahub's defaults. */
  tags?: readonly string[] | undefined;
  /** Language codes; omitted when absent or empty. */
  languages?: readonly string[] | undefined;
  /** Template text; read from {@link MODEL_CARD_TEMPLATE} when absent. */
  template?: string | undefined;
}


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
  const given = (v: string | undefined) => (v !== undefined && v.trim() !== "" ? v.trim() : undefined);
  const steps = lineage.map((s) => s.step);
  return {
    license: given(options.license),
    languages: (options.languages ?? []).map((l) => l.trim()).filter((l) => l !== ""),
    library_name: "transformers",
    pipeline_tag: "text-generation",
    tags,
    base_model: given(options.baseModel),
    pruned: steps.some((s) => s === "prune" || s === "prune-vocab"),
    pruned_steps: unique(steps.filter((s) => s === "prune" || s === "prune-vocab")).join(" and "),
    repo_id: options.repo,
    model_name: options.repo.split("/").pop() ?? options.repo,
    megahub_version: m?.megahub ?? "",
    has_manifest: m !== undefined,
    architecture: cell(m?.architecture ?? "unknown"),
    dims: Object.entries(m?.model ?? {})
      .map(([k, v]) => `${k} ${v}`)
      .join(", "),
    parameters: Object.entries(m?.parameters ?? {}).map(([part, n]) => ({ part: cell(part), count: formatCount(n) })),
    parameters_layout: parametersLayout(lineage.at(-1)),
    lineage: lineage.map((s, i) => lineageRow(s, i + 1)),
    verification: (m?.verification ?? []).map((v) => verificationRow(v, lineage)),
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
        .map(([k, v]) => `\`${k}=${settingText(v)}\``)
        .join(", "),
    ),
    notes: (s.notes ?? []).map((note) => text(withoutPaths(note))),
  };
}

/** A setting as short text: no absolute paths, no raw JSON objects. */
function settingText(v: unknown, depth = 0): string {
  if (typeof v === "string") return JSON.stringify(v.startsWith("/") ? basename(v) : v);
  if (Array.isArray(v)) return `[${v.slice(0, 16).map((x) => settingText(x, depth + 1)).join(", ")}${v.length > 16 ? ", …" : ""}]`;
  if (typeof v === "object" && v !== null) {
    if (depth > 1) return "…";
    return `(${Object.entries(v).map(([k, x]) => `${k} ${settingText(x, depth + 1)}`).join(", ")})`;
  }
  return String(v);
}

/** Absolute paths in free text become their last segment (they would publish the user's directory layout). */
function withoutPaths(note: string): string {
  return note.replace(/(^|[\s("'=])(\/[^\s,;:)"']+)/g, (_m, pre: string, path: string) => `${pre}${basename(path)}`);
}

/** Which layout the parameter counts describe: the last step's output. */
function parametersLayout(last: LineageStep | undefined): string {
  if (last === undefined) return "";
  const output = last.settings.output;
  const megatron = last.step === "reshard" || last.step === "to-megatron" || output === "megatron";
  return megatron
    ? "as Megatron stores them (lm_head tied to the embedding: only its bias counted)"
    : "as these Hugging Face files store them (lm_head untied: its weight counted separately)";
}

function verificationRow(v: VerificationRecord, lineage: readonly LineageStep[]): Record<string, unknown> {
  // A record made before the last step checked an earlier model (the input of a later step), not these weights.
  const checked =
    v.step === undefined || v.step >= lineage.length
      ? "these weights"
      : v.step === 0
        ? "the original input"
        : `output of step ${v.step} (${lineage[v.step - 1]?.step ?? "?"})`;
  return {
    at: cell(v.at),
    kind: cell(v.kind),
    checked: cell(checked),
    reference: cell(basename(v.reference)),
    provider: cell(v.provider),
    dtype: cell(v.dtype),
    result: v.passed ? "passed" : "**FAILED**",
    max_abs_diff: v.maxAbsDiff.toExponential(2),
    top1: `${(v.top1Agreement * 100).toFixed(1)} %`,
    min_cosine: v.minCosine !== undefined ? v.minCosine.toFixed(6) : "–",
  };
}

/** Markdown text: one line, with `<extra_id_0>`-style tokens escaped so they render instead of vanishing as HTML. */
function text(s: string): string {
  return s.replace(/\s+/g, " ").replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** One Markdown table cell: text, with pipes escaped. */
function cell(s: string): string {
  return text(s).replace(/\|/g, "\\|");
}

function formatCount(n: number): string {
  const exact = n.toLocaleString("en-US");
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B (${exact})`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M (${exact})`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)} K (${exact})`;
  return exact;
}

function unique(xs: readonly string[]): string[] {
  return [...new Set(xs)];
}
