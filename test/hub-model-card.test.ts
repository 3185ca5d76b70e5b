import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as hubjs from "@huggingface/hub";
import { afterEach, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import type { Manifest } from "../src/plan/manifest.js";
import { renderModelCard } from "../src/hub/model-card.js";
import { pushFolder } from "../src/hub/push-folder.js";
import { cleanup, modelDir, startHub } from "./hub-helpers.js";

afterEach(cleanup);

const MANIFEST: Manifest = {
  megahub: "0.1.0",
  architecture: "openba",
  model: { hidden: 4096, encoderLayers: 12, decoderLayers: 36, vocab: 251000 },
  parameters: { embedding: 1_028_096_000, total: 14_600_000_000 },
  lineage: [
    {
      step: "convert",
      at: "2026-01-02T03:04:05.000Z",
      source: { path: "/home/alice/ckpt/OpenBA-LM/iter_0100000", format: "megatron", iteration: 100000, tp: 4, pp: 1, dtype: "bf16" },
      settings: { dtype: "bf16", shard: "5GB" },
      notes: ["optimizer state dropped"],
    },
    {
      step: "prune-vocab",
      at: "2026-01-02T04:00:00.000Z",
      source: { path: "out/hf", format: "hf" },
      settings: { keep: 64000, corpus: "zh|en sample" },
      notes: ["kept 64000 of 251000 vocabulary rows"],
    },
  ],
  files: { "model.safetensors": { bytes: 29_200_000_000 } },
  verification: [
    { at: "2026-01-02T05:00:00.000Z", kind: "reference", reference: "/data/ref/logits.json", provider: "cuda", dtype: "fp16", passed: true, maxAbsDiff: 0.0031, top1Agreement: 0.998, minCosine: 0.99991 },
    { at: "2026-01-02T05:10:00.000Z", kind: "against", reference: "out/hf", provider: "cpu", dtype: "fp32", passed: false, maxAbsDiff: 0.5, top1Agreement: 0.9 },
  ],
};

/** Splits `---\nYAML\n---\nbody`, failing the test when the card does not start with front matter. */
function frontMatter(card: string): { meta: Record<string, unknown>; body: string } {
  const m = /^---\n([\s\S]*?)\n---\n([\s\S]*)$/.exec(card);
  if (!m) throw new Error(`no front matter in:\n${card.slice(0, 300)}`);
  return { meta: parseYaml(m[1] as string) as Record<string, unknown>, body: m[2] as string };
}

describe("model card", () => {
  it("has YAML metadata that parses back with the values given", async () => {
    const card = await renderModelCard({
      repo: "me/openba-pruned",
      manifest: MANIFEST,
      license: "apache-2.0",
      baseModel: "OpenBA/OpenBA-LM",
      tags: ["zh-en", "needs: quoting #"],
      languages: ["zh", "en"],
    });
    const { meta } = frontMatter(card);
    expect(meta).toEqual({
      license: "apache-2.0",
      language: ["zh", "en"],
      library_name: "transformers",
      pipeline_tag: "text-generation",
      tags: ["openba", "t5", "encoder-decoder", "megatron", "megahub", "pruned", "zh-en", "needs: quoting #"],
      base_model: "OpenBA/OpenBA-LM",
    });
  });

  it("lists every lineage step in order with its source and settings, and the verification results", async () => {
    const { body } = frontMatter(await renderModelCard({ repo: "me/openba-pruned", manifest: MANIFEST }));
    const convert = body.indexOf("| 1 | convert | 2026-01-02T03:04:05.000Z | iter_0100000 (megatron, iteration 100000, TP 4, PP 1, bf16) |");
    const prune = body.indexOf("| 2 | prune-vocab |");
    expect(convert).toBeGreaterThan(0);
    expect(prune).toBeGreaterThan(convert);
    expect(body).toContain('`keep=64000`, `corpus="zh\\|en sample"`'); // pipes escaped inside the table
    expect(body).toContain("- kept 64000 of 251000 vocabulary rows");
    expect(body).not.toContain("/home/alice"); // local paths are not published
    expect(body).toMatch(/\| reference \| these weights \| logits\.json \| cuda \| fp16 \| passed \| 3\.10e-3 \| 99\.8 % \| 0\.999910 \|/);
    expect(body).toMatch(/\| against \| these weights \| hf \| cpu \| fp32 \| \*\*FAILED\*\* \|/);
    expect(body).toContain("| total | 14.60 B (14,600,000,000) |");
  });

  it("says only what is true: nothing invented, pruned-not-retrained, the check history by model, no paths, escaped tokens", async () => {
    const m: Manifest = {
      ...MANIFEST,
      parameters: { embedding: 2048, total: 123_456 },
      lineage: [
        MANIFEST.lineage[0] as Manifest["lineage"][number],
        {
          step: "prune",
          at: "2026-01-03T00:00:00.000Z",
          source: { path: "/home/alice/out/hf", format: "hf" },
          settings: { from: { hidden: 64, heads: 4 }, tokenizer: "/home/alice/spiece.model", output: "hf" },
          notes: ["kept <extra_id_0> and <R>", "masks in /home/alice/out/pruned/prune-masks.json"],
        },
      ],
      verification: [
        { ...(MANIFEST.verification[0] as Manifest["verification"][number]), step: 1 },
        { ...(MANIFEST.verification[0] as Manifest["verification"][number]), kind: "against", reference: "/home/alice/out/hf", step: 2 },
      ],
    };
    const card = await renderModelCard({ repo: "me/small", manifest: m, baseModel: "", license: "" });
    const { meta, body } = frontMatter(card);
    expect(meta).not.toHaveProperty("base_model");
    expect(meta).not.toHaveProperty("license");
    expect(meta).not.toHaveProperty("language");
    expect(body).not.toContain("derived from");
    expect(body).not.toContain("](https://huggingface.co/)");
    expect(body).toContain("**Pruned, not retrained.**");
    expect(body).toMatch(/\| reference \| output of step 1 \(convert\) \|/);
    expect(body).toMatch(/\| against \| these weights \|/);
    expect(card).not.toContain("/home/alice");
    expect(body).toContain("`from=(hidden 64, heads 4)`");
    expect(body).toContain('`tokenizer="spiece.model"`');
    expect(body).toContain("- kept &lt;extra_id_0&gt; and &lt;R&gt;");
    expect(body).toContain("| total | 123.5 K (123,456) |");
    expect(body).toContain("| embedding | 2,048 |");
    expect(body).toMatch(/Parameters as these Hugging Face files store them \(lm_head untied/);
    expect(body).toContain('tokenizer("<S> " + query + " <extra_id_0>"'); // code stays code
  });

  it("has a usage snippet with trust_remote_code and the <S> … <extra_id_0> prompt for this repo", async () => {
    const { body } = frontMatter(await renderModelCard({ repo: "me/openba-pruned", manifest: MANIFEST }));
    expect(body).toContain('AutoModelForSeq2SeqLM.from_pretrained("me/openba-pruned", trust_remote_code=True)');
    expect(body).toContain('tokenizer("<S> " + query + " <extra_id_0>", return_tensors="pt")');
  });

  it("says the provenance is unknown when there is no megahub.json", async () => {
    const { meta, body } = frontMatter(await renderModelCard({ repo: "me/x" }));
    expect(meta.tags).not.toContain("pruned");
    expect(body).toContain("no `megahub.json`");
    expect(body).toContain("No verification was recorded");
  });

  it("is rendered from the folder's megahub.json on push and lands in the repo as README.md", async () => {
    const hub = await startHub();
    const dir = await modelDir({ "README.md": null });
    await writeFile(join(dir, "megahub.json"), JSON.stringify(MANIFEST));
    // MANIFEST's last check failed (the card must show it), so publishing it takes --force.
    await pushFolder({ dir, repo: "local/carded", hubUrl: hub.url, accessToken: hub.token, force: true, cardOptions: { baseModel: "OpenBA/OpenBA-Chat" } });
    const card = (await (await hubjs.downloadFile({ repo: "local/carded", hubUrl: hub.url, path: "README.md" }))?.text()) ?? "";
    const { meta, body } = frontMatter(card);
    expect(meta.base_model).toBe("OpenBA/OpenBA-Chat");
    expect(body).toContain("| 2 | prune-vocab |");
    expect(card).toBe(await renderModelCard({ repo: "local/carded", manifest: MANIFEST, baseModel: "OpenBA/OpenBA-Chat" }));
  });

  it("reports a template that does not parse, naming it", async () => {
    await expect(renderModelCard({ repo: "me/x", template: "{% if x %}unclosed" })).rejects.toThrow(/template does not parse/);
  });
});
