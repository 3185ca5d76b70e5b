import { MegahubError } from "../../errors.js";
import type { Command } from "../command.js";
import { stringOpt } from "../command.js";
import { formatBytes } from "../reporter.js";
import { exportOnnx } from "../../verify/export-onnx.js";
import { SUMMARIES } from "./summaries.js";

export const exportOnnxCommand: Command = {
  name: "export-onnx",
  summary: SUMMARIES["export-onnx"],
  usage: "megahub export-onnx <hf-dir> --out <dir> [--dry-run] [--json]",
  options: { out: { type: "string", short: "o" }, "dry-run": { type: "boolean" } },
  details: [
    "Writes model.onnx (input_ids, attention_mask, decoder_input_ids → logits), encoder_model.onnx and",
    "decoder_model.onnx (last-position logits for generation), opset 17, all reading model.onnx.data beside them.",
    "Llama / Mistral / Qwen2 / Qwen3 and Mixtral / Qwen2-MoE / Qwen3-MoE: model.onnx alone (input_ids, attention_mask → logits [B,S,V], no KV cache).",
    "Weights keep their stored dtype; F16/BF16 are cast to fp32 inside the graph. --out must not exist or be empty.",
    "--dry-run builds the graphs and prints the files and bytes it would write; nothing is written.",
  ],
  async run(positionals, values, reporter) {
    const [dir, ...extra] = positionals;
    if (dir === undefined || extra.length > 0) throw new MegahubError("USAGE", "expected exactly one <hf-dir>");
    const out = stringOpt(values, "out");
    if (out === undefined) throw new MegahubError("USAGE", "--out <dir> is required");
    const dryRun = values["dry-run"] === true;
    const r = await exportOnnx(dir, out, { dryRun, onProgress: (done, total) => reporter.progress("weights", done, total) });
    if (dryRun) {
      for (const f of r.sizes) reporter.info(`  would write ${f.file} (${formatBytes(f.bytes)})`);
      reporter.info(`dry run: would export to ${r.outDir} (opset ${r.opset}, ${r.tensors} tensors); nothing written`);
      reporter.result({ ok: true, ...r });
      return 0;
    }
    reporter.info(`wrote ${r.files.join(", ")} to ${r.outDir} (opset ${r.opset}, ${r.tensors} tensors, ${r.dataBytes} bytes of data)`);
    reporter.result({ ok: true, ...r });
    return 0;
  },
};
