import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { convertMegatronToHf } from "../../ops/openba/convert.js";
import { MegahubError } from "../../errors.js";
import { stringOpt, type Command } from "../command.js";
import { formatBytes, formatParams } from "../format.js";
import type { Reporter } from "../reporter.js";
import { SUMMARIES } from "./summaries.js";

/** The package root (fixtures ship with it), found from this file's location in dist/ or src/. */
export function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
}

interface DemoContext {
  base: string;
  input: string;
  tokenizer: string;
  reference: string;
  hfDir: string;
  out: Reporter;
  steps: Record<string, unknown>[];
}

/**
 * Each step of the demo: the whole life of a checkpoint, on the tiny OpenBA model shipped in fixtures/. Steps import
 * their modules lazily so the demo starts fast and a broken optional part names itself.
 */
const STEPS: [title: string, run: (c: DemoContext) => Promise<void>][] = [
  [
    "convert: Megatron (fp16, TP 2) → Hugging Face safetensors + config + tokenizer",
    async (c) => {
      const conv = await convertMegatronToHf({ input: c.input, out: c.hfDir, tokenizer: c.tokenizer, onProgress: (d, t) => c.out.progress("convert", d, t) });
      const d = conv.converted.dims;
      c.out.info(`    → ${c.hfDir}: ${Object.keys(conv.execution?.files ?? {}).join(", ")}`);
      c.out.info(`    hidden ${d.hidden}, ${d.heads} heads × ${d.kvChannels}, FFN ${d.ffn}, ${d.encoderLayers}/${d.decoderLayers} layers, vocab rows ${d.vocab}; ${formatBytes(conv.execution?.bytesWritten ?? 0)} written`);
      c.steps.push({ step: "convert", out: c.hfDir, dims: d });
    },
  ],
  [
    "verify: run the converted model in ONNX Runtime against logits from an independent PyTorch forward",
    async (c) => {
      const { verifyModel } = await import("../../verify/verify-model.js");
      const report = join(c.base, "verify-report.html");
      const r = await verifyModel(c.hfDir, { reference: c.reference, device: "auto", report, onWarning: (l) => c.out.warn(l) });
      const m = r.metrics;
      c.out.info(`    provider ${r.provider}${r.fallbackReason ? ` (CUDA unavailable: ${r.fallbackReason.split("\n")[0]})` : ""}; max |Δ| ${m.maxAbs.toExponential(2)}, top-1 ${(m.top1Agreement * 100).toFixed(1)} %, min cosine ${m.minCosine.toFixed(6)} → ${r.passed ? "PASS" : "FAIL"}`);
      c.out.info(`    report: ${report}`);
      c.steps.push({ step: "verify", passed: r.passed, provider: r.provider, maxAbsDiff: m.maxAbs, top1: m.top1Agreement, report });
      if (!r.passed) throw new MegahubError("VERIFY", r.failures.join("; "));
    },
  ],
  [
    "generate: greedy decoding through OpenBA's chat template <S> {input} <extra_id_0>",
    async (c) => {
      const { generate } = await import("../../verify/generate.js");
      const g = await generate(c.hfDir, { prompt: "The license", maxNewTokens: 12, device: "auto" });
      c.out.info(`    prompt ${JSON.stringify(g.renderedPrompt)} → ids [${g.inputIds.join(", ")}]`);
      c.out.info(`    generated [${g.generatedIds.join(", ")}] = ${JSON.stringify(g.text)} (random tiny weights: the words mean nothing)`);
      c.steps.push({ step: "generate", prompt: g.renderedPrompt, generatedIds: g.generatedIds });
    },
  ],
  [
    "reshard: TP 2 → TP 3 (a non-power-of-two) for a different cluster, as Megatron checkpoints",
    async (c) => {
      const { reshardMegatron } = await import("../../ops/openba/reshard.js");
      const out = join(c.base, "megatron-tp3");
      const r = await reshardMegatron({ input: c.input, out, tp: 3, tokenizer: c.tokenizer, onProgress: (d, t) => c.out.progress("reshard", d, t) });
      c.out.info(`    → ${out}: ${r.summary.files.filter((f) => f.path.endsWith(".pt")).length} rank files; ${r.vocabChange}`);
      c.out.info(`    dropped TP-specific state: ${r.dropped.join(", ") || "none"}`);
      c.steps.push({ step: "reshard", out, tp: 3, paddedVocab: r.paddedVocab, dropped: r.dropped });
    },
  ],
  [
    "prune: width and depth, Megatron straight to HF in one pass (OpenBA-v2's method)",
    async (c) => {
      const { pruneCheckpoint } = await import("../../ops/prune/run.js");
      const out = join(c.base, "pruned");
      const pr = await pruneCheckpoint({ input: c.input, out, tokenizer: c.tokenizer, hidden: 48, heads: 8, ffn: 96, decoderLayers: 2, onProgress: (l, d, t) => c.out.progress(l, d, t) });
      const p = pr.dims;
      c.out.info(`    → ${out}: hidden ${p.hidden}, ${p.heads} heads, FFN ${p.ffn}, ${p.encoderLayers}/${p.decoderLayers} layers (dropped decoder [${pr.resolved.drop.decoder.join(", ")}])`);
      c.out.info(`    parameters ${formatParams(pr.params.before.total)} → ${formatParams(pr.params.after.total)}; masks in prune-masks.json`);
      c.steps.push({ step: "prune", out, dims: p, parameters: pr.params });
    },
  ],
  [
    "prune-vocab: keep the pieces a real corpus uses (99 % coverage), rewrite spiece.model, re-index rows; verify on kept ids",
    async (c) => {
      const { pruneVocab } = await import("../../ops/vocab/run.js");
      const { verifyModel } = await import("../../verify/verify-model.js");
      const out = join(c.base, "vocab-pruned");
      const report = join(c.base, "prune-vocab-report.html");
      const corpus = join(packageRoot(), "fixtures", "corpus", "train.txt");
      const r = await pruneVocab({ input: c.hfDir, out, corpus: [corpus], coverage: 0.99, report, onProgress: (l, d, t) => c.out.progress(l, d, t) });
      const { pieces, vocab, params } = r.report;
      c.out.info(`    → ${out}: ${pieces.kept} of ${pieces.before} pieces cover ${(r.report.coverage * 100).toFixed(2)} % of ${r.report.corpus.tokens} corpus tokens; rows ${vocab.before.rows} → ${vocab.after.rows}; parameters ${formatParams(params.before.total)} → ${formatParams(params.after.total)}`);
      const v = await verifyModel(out, { against: c.hfDir, idMap: join(out, "vocab-id-map.json"), device: "auto", onWarning: (l) => c.out.warn(l) });
      c.out.info(`    verify --against the unpruned model on its ${v.metrics.vocab} kept ids: max |Δ| ${v.metrics.maxAbs.toExponential(2)} → ${v.passed ? "PASS" : "FAIL"}; coverage chart in ${report}`);
      c.steps.push({ step: "prune-vocab", out, keptPieces: pieces.kept, coverage: r.report.coverage, rows: vocab.after.rows, parameters: params, verified: v.passed, report });
      if (!v.passed) throw new MegahubError("VERIFY", v.failures.join("; "));
    },
  ],
  [
    "push + pull: publish to a local Hub-compatible server with the real @huggingface/hub client, then pull it back",
    async (c) => {
      const { startLocalHub, pushFolder, pullRepo } = await import("../../hub/index.js");
      const hub = await startLocalHub({ dataDir: join(c.base, "hub-data"), port: 0 });
      try {
        const repo = "local/openba-demo";
        const pushed = await pushFolder({ dir: c.hfDir, repo, hubUrl: hub.url, accessToken: hub.token });
        c.out.info(`    pushed ${pushed.uploaded.length} files to ${hub.url}/${repo} in ${pushed.commits.length} commit(s); model card ${pushed.card}`);
        const again = await pushFolder({ dir: c.hfDir, repo, hubUrl: hub.url, accessToken: hub.token });
        c.out.info(`    pushed again: ${again.uploaded.length} files sent, ${again.unchanged} already there (resumable, idempotent)`);
        const pulled = await pullRepo({ repo, out: join(c.base, "pulled"), hubUrl: hub.url });
        c.out.info(`    pulled ${pulled.files} files (${formatBytes(pulled.bytes)}) at commit ${pulled.commit.slice(0, 12)} into ${pulled.out}, sha256 checked`);
        c.steps.push({ step: "push+pull", repo, commits: pushed.commits.length, repushUploaded: again.uploaded.length, pulled: pulled.files });
      } finally {
        await hub.close();
      }
    },
  ],
  [
    "GPT family: a Megatron-Core Llama (bf16, TP 2) → HF LlamaForCausalLM + its tokenizer, padding rows dropped",
    async (c) => {
      const { convertAny } = await import("../../ops/dispatch.js");
      const gpt = join(packageRoot(), "fixtures", "gpt");
      const out = join(c.base, "llama-hf");
      const r = await convertAny({ input: join(gpt, "demo-tp2"), out, tokenizer: join(gpt, "tokenizer"), onProgress: (d, t) => c.out.progress("convert", d, t) });
      if (r.architecture !== "gpt") throw new MegahubError("MODEL", "the demo Llama was not recognised as Megatron-Core GPT");
      const d = r.dims;
      c.out.info(`    → ${out}: ${r.hf.hfArch}, hidden ${d.hidden}, ${d.heads} heads / ${d.kvHeads} query groups × ${d.headDim}, FFN ${d.ffn}, ${d.layers} layers; vocab ${r.hf.vocab} of ${d.vocab} rows`);
      c.steps.push({ step: "convert-gpt", out, hfArch: r.hf.hfArch, dims: d, vocab: r.hf.vocab });
    },
  ],
  [
    "GPT family: verify the Llama in ONNX Runtime against logits of an independent torch forward of the Megatron weights",
    async (c) => {
      const { verifyModel } = await import("../../verify/verify-model.js");
      const dir = join(c.base, "llama-hf");
      const r = await verifyModel(dir, { reference: join(packageRoot(), "fixtures", "gpt", "reference", "demo.safetensors"), device: "auto", onWarning: (l) => c.out.warn(l) });
      const m = r.metrics;
      c.out.info(`    provider ${r.provider}; max |Δ| ${m.maxAbs.toExponential(2)}, top-1 ${(m.top1Agreement * 100).toFixed(1)} % → ${r.passed ? "PASS" : "FAIL"}`);
      c.steps.push({ step: "verify-gpt", passed: r.passed, provider: r.provider, maxAbsDiff: m.maxAbs, top1: m.top1Agreement });
      if (!r.passed) throw new MegahubError("VERIFY", r.failures.join("; "));
    },
  ],
  [
    "GPT family: reshard TP 2 → TP 1 × PP 2 × VPP 2, then back to HF, bit for bit",
    async (c) => {
      const { convertAny, reshardAny } = await import("../../ops/dispatch.js");
      const { readFile } = await import("node:fs/promises");
      const gpt = join(packageRoot(), "fixtures", "gpt");
      const mg = join(c.base, "llama-pp2-vpp2");
      const r = await reshardAny({ input: join(gpt, "demo-tp2"), out: mg, tp: 1, pp: 2, vpp: 2, tokenizer: join(gpt, "tokenizer"), onProgress: (d, t) => c.out.progress("reshard", d, t) });
      const back = join(c.base, "llama-hf-again");
      await convertAny({ input: mg, out: back, tokenizer: join(gpt, "tokenizer") });
      const same = Buffer.compare(await readFile(join(back, "model.safetensors")), await readFile(join(c.base, "llama-hf", "model.safetensors"))) === 0;
      c.out.info(`    → ${mg}: ${r.summary.files.filter((f) => f.path.endsWith(".pt")).length} rank files (model0/model1 chunks); converted again: ${same ? "identical bytes" : "DIFFERENT"}`);
      c.steps.push({ step: "reshard-gpt", out: mg, identical: same });
      if (!same) throw new MegahubError("VERIFY", "the resharded Llama does not convert to the same HF bytes");
    },
  ],
];

export const demoCommand: Command = {
  name: "demo",
  summary: SUMMARIES.demo,
  usage: "megahub demo [--out <dir>] [--json]",
  options: { out: { type: "string", short: "o" } },
  async run(_positionals, values, out) {
    const root = packageRoot();
    const base = stringOpt(values, "out") ?? (await mkdtemp(join(tmpdir(), "megahub-demo-")));
    const c: DemoContext = {
      base,
      input: join(root, "fixtures", "megatron", "fp16-tp2"),
      tokenizer: join(root, "fixtures", "tokenizer", "spiece.model"),
      reference: join(root, "fixtures", "reference", "fp16-tp2.safetensors"),
      hfDir: join(base, "hf"),
      out,
      steps: [],
    };
    out.info(`megahub demo: a tiny OpenBA checkpoint (fp16, TP 2, real sentencepiece tokenizer) through every step, in ${base}`);
    out.info(`source: ${c.input}`);
    for (const [i, [title, run]] of STEPS.entries()) {
      out.info(`\n[${i + 1}/${STEPS.length}] ${title}`);
      await run(c);
    }
    out.result({ ok: true, out: base, steps: c.steps });
    out.info(`\ndone. ${c.hfDir}/megahub.json holds the provenance of every tensor; the model card was rendered from it.`);
    return 0;
  },
};
