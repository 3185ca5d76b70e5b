import { inspectPath } from "../../converters/inspect.js";
import { unvettedGlobalsNote } from "../../converters/megatron-to-hf.js";
import { intOpt, type Command } from "../command.js";
import { formatBytes, formatParams, shapeText, table } from "../format.js";

export const inspectCommand: Command = {
  name: "inspect",
  summary: "describe a Megatron checkpoint, an HF model directory, or a torch/safetensors file (headers only)",
  usage: "megahub inspect <path> [--iteration N] [--tensors] [--json]",
  options: { iteration: { type: "string" }, tensors: { type: "boolean" } },
  details: ["--tensors  print the full tensor table (always included under --json)"],
  async run(positionals, values, out) {
    const path = positionals[0];
    if (!path) throw new RangeError("inspect needs a <path>");
    const iteration = intOpt(values, "iteration");
    const r = await inspectPath(path, iteration === undefined ? {} : { iteration });
    out.result({ ok: true, ...r });
    const total = r.tensors.reduce((a, t) => a + t.bytes, 0);
    out.info(`${r.path}`);
    out.info(`  format        ${r.format}${r.iteration !== undefined ? `, iteration ${r.iteration}` : ""}${r.tp ? `, TP ${r.tp}, PP ${r.pp}` : ""}`);
    if (r.checkpointVersion !== undefined) out.info(`  checkpoint_version ${r.checkpointVersion}`);
    out.info(`  dtypes        ${r.dtypes.join(", ")}`);
    out.info(`  tensors       ${r.tensors.length} (${formatBytes(total)})`);
    if (r.dims) {
      const d = r.dims;
      out.info(`  architecture  ${r.architecture}: hidden ${d.hidden}, ${d.heads} heads × ${d.kvChannels} (P ${d.heads * d.kvChannels}), FFN ${d.ffn}, ${d.encoderLayers} encoder / ${d.decoderLayers} decoder layers, vocab rows ${d.vocab}`);
    }
    if (r.parameters) {
      const p = r.parameters;
      out.info(table(["  part", "parameters"], [
        ["  embedding", formatParams(p.embedding)],
        ["  encoder", formatParams(p.encoder)],
        ["  decoder", formatParams(p.decoder)],
        ["  head", formatParams(p.head)],
        ["  total", `${formatParams(p.total)} (${p.total.toLocaleString("en-US")})`],
      ]));
    }
    // Shown as a warning (even under --quiet): a checkpoint that would run code under torch.load is worth knowing about.
    const unvetted = (r.dangerousGlobals?.length ?? 0) > 0 ? unvettedGlobalsNote(r.dangerousGlobals ?? []) : undefined;
    for (const n of r.notes) if (n !== unvetted) out.info(`  note: ${n}`);
    if (unvetted !== undefined) out.warn(unvetted);
    if (values.tensors === true) {
      out.info(table(["name", "dtype", "shape", "bytes", "file"], r.tensors.map((t) => [t.name, t.dtype, shapeText(t.shape), t.bytes, t.file ?? ""])));
    }
    return 0;
  },
};
