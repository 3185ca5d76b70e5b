import { inspectPath } from "../../ops/inspect.js";
import { unvettedGlobalsNote } from "../../ops/openba/megatron-to-hf.js";
import { intOpt, type Command } from "../command.js";
import { formatBytes, formatParams, shapeText, table } from "../format.js";
import { SUMMARIES } from "./summaries.js";

export const inspectCommand: Command = {
  name: "inspect",
  summary: SUMMARIES.inspect,
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
    const layout = r.tp ? `, TP ${r.tp}, PP ${r.pp}${r.vpp ? `, VPP ${r.vpp}` : ""}${r.ep ? `, EP ${r.ep}` : ""}` : "";
    out.info(`  format        ${r.format}${r.iteration !== undefined ? `, iteration ${r.iteration}` : ""}${layout}`);
    if (r.checkpointVersion !== undefined) out.info(`  checkpoint_version ${r.checkpointVersion}`);
    out.info(`  dtypes        ${r.dtypes.join(", ")}`);
    out.info(`  tensors       ${r.tensors.length} (${formatBytes(total)})`);
    if (r.optimizer) out.info(`  optimizer     ${r.optimizer}`);
    if (r.dims && "kvHeads" in r.dims) {
      const d = r.dims;
      const parts = r.features ? Object.entries(r.features).filter(([, on]) => on).map(([k]) => k) : [];
      out.info(`  architecture  ${r.architecture}: hidden ${d.hidden}, ${d.heads} heads / ${d.kvHeads} query groups × ${d.headDim}, FFN ${d.ffn}, ${d.layers} layers, vocab rows ${d.vocab}${parts.length ? `; ${parts.join(", ")}` : ""}${r.spec ? `; ${r.spec === "te" ? "Transformer Engine" : "local"} spec names` : ""}`);
      if (r.moe) {
        const e = r.moe;
        out.info(`  experts       ${e.experts} × FFN ${e.expertFfn} (${e.expertLayout}), top-${e.topk}, in ${e.moeLayers} of ${e.moeLayers + e.denseLayers} layers${e.sharedExpertFfn > 0 ? `; shared experts FFN ${e.sharedExpertFfn}${e.sharedExpertGate ? " (gated)" : ""}` : ""}${e.ep ? `; EP ${e.ep}, ${e.expertsPerRank} experts per rank` : ""}`);
        out.info(`  routing       ${e.routing}`);
        out.info(`  parameters    ${formatParams(e.totalParameters)} total, ${formatParams(e.activeParameters)} active per token`);
      }
    } else if (r.dims) {
      const d = r.dims;
      out.info(`  architecture  ${r.architecture}: hidden ${d.hidden}, ${d.heads} heads × ${d.kvChannels} (P ${d.heads * d.kvChannels}), FFN ${d.ffn}, ${d.encoderLayers} encoder / ${d.decoderLayers} decoder layers, vocab rows ${d.vocab}`);
    }
    if (r.parameters && "layers" in r.parameters) {
      const p = r.parameters;
      out.info(table(["  part", "parameters"], [
        ["  embedding", formatParams(p.embedding)],
        ["  layers", formatParams(p.layers)],
        ["  norm + head", formatParams(p.head)],
        ["  total", `${formatParams(p.total)} (${p.total.toLocaleString("en-US")})`],
      ]));
    } else if (r.parameters) {
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
