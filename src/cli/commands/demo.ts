import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { convertMegatronToHf } from "../../converters/convert.js";
import { stringOpt, type Command } from "../command.js";
import { formatBytes } from "../format.js";

/** The package root (fixtures ship with it), found from this file's location in dist/ or src/. */
export function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
}

export const demoCommand: Command = {
  name: "demo",
  summary: "run the main job on the tiny OpenBA checkpoint shipped in fixtures/ and show what happened",
  usage: "megahub demo [--out <dir>] [--json]",
  options: { out: { type: "string", short: "o" } },
  async run(_positionals, values, out) {
    const root = packageRoot();
    const input = join(root, "fixtures", "megatron", "fp16-tp2");
    const tokenizer = join(root, "fixtures", "tokenizer", "spiece.model");
    const base = stringOpt(values, "out") ?? (await mkdtemp(join(tmpdir(), "megahub-demo-")));
    const steps: Record<string, unknown>[] = [];
    out.info(`megahub demo: a tiny OpenBA checkpoint (fp16, TP 2) → Hugging Face layout, in ${base}`);

    out.info("\n[1] convert");
    const hfDir = join(base, "hf");
    const conv = await convertMegatronToHf({ input, out: hfDir, tokenizer, onProgress: (d, t) => out.progress("convert", d, t) });
    const d = conv.converted.dims;
    out.info(`    ${input}`);
    out.info(`    → ${hfDir}: ${Object.keys(conv.execution?.files ?? {}).join(", ")}`);
    out.info(`    hidden ${d.hidden}, ${d.heads} heads × ${d.kvChannels}, FFN ${d.ffn}, ${d.encoderLayers}/${d.decoderLayers} layers, ${formatBytes(conv.execution?.bytesWritten ?? 0)} written`);
    steps.push({ step: "convert", out: hfDir, files: conv.execution?.files });

    out.result({ ok: true, out: base, steps });
    out.info(`\ndone. Look at ${hfDir}/megahub.json for the provenance of every tensor.`);
    return 0;
  },
};
