import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { MegahubError } from "../../errors.js";
import type { Command } from "../command.js";
import { listOpt } from "../command.js";
import type { Reporter } from "../reporter.js";
import { cudaVerdict, diagnoseCuda, type CudaDiagnosis } from "../../verify/cuda-doctor.js";
import { INSTALL_RECORD } from "../../verify/gpu-install.js";
import { ORT_DIR_ENV } from "../../verify/ort-locate.js";
import { describePlacement } from "../../verify/placement.js";
import { SUMMARIES } from "./summaries.js";

export const doctorCommand: Command = {
  name: "doctor",
  summary: SUMMARIES.doctor,
  usage: "megahub doctor [--no-probe] [--search <dir>]... [--require-cuda] [--json]",
  options: {
    "no-probe": { type: "boolean" },
    search: { type: "string", multiple: true },
    "require-cuda": { type: "boolean" },
  },
  details: [
    "Checks, cheapest first: the onnxruntime-node in use and its core's version; the CUDA provider files beside the",
    "core and their ORT version; every library the provider needs, found as the dynamic loader would (ldd-style,",
    "nothing is loaded); then opens a CUDA session on a two-node model in a child process (--no-probe skips it).",
    "A library missing from the loader's path is also looked for in CUDA toolkits and NVIDIA's Python wheels",
    "(--search adds folders). The verdict line is what `verify --device cuda` says when CUDA cannot be used.",
    `${ORT_DIR_ENV}=<onnxruntime-node folder> makes megahub use that onnxruntime-node instead of its own.`,
    "Exit 0; with --require-cuda, exit 1 when CUDA is unusable.",
  ],
  async run(positionals, values, reporter) {
    if (positionals.length > 0) throw new MegahubError("USAGE", "doctor takes no positional arguments");
    const d = await diagnoseCuda({ probe: values["no-probe"] !== true, search: listOpt(values, "search") });
    printDiagnosis(d, reporter);
    const code = values["require-cuda"] === true && !d.usable ? 1 : 0;
    reporter.result({ ok: code === 0, verdict: cudaVerdict(d), ...d, installRecord: readRecord(d) });
    return code;
  },
};

function readRecord(d: CudaDiagnosis): unknown {
  const p = join(d.ort.binDir, INSTALL_RECORD);
  if (!existsSync(p)) return undefined;
  try {
    return JSON.parse(readFileSync(p, "utf8")) as unknown;
  } catch {
    return undefined;
  }
}

function printDiagnosis(d: CudaDiagnosis, r: Reporter): void {
  const o = d.ort;
  r.info(
    `onnxruntime-node ${o.version} at ${o.packageDir}${o.fromEnv ? ` (from ${ORT_DIR_ENV})` : ""}; core ` +
      `${o.core.split("/").pop()} is ORT ${o.coreVersion ?? "?"}; megahub is pinned to ${o.pinned}`,
  );
  r.info("execution providers:");
  r.info("  cpu    built into the core");
  const p = d.provider;
  if (p) {
    const record = readRecord(d) as { source?: string } | undefined;
    const cuda = p.cuda.present ? `${p.cuda.path.split("/").pop()} ORT ${p.cuda.version ?? "?"}` : `${p.cuda.path.split("/").pop()} missing`;
    const shared = `${p.shared.path.split("/").pop()} ${p.shared.present ? "present" : "missing"}`;
    r.info(`  cuda   ${cuda}, ${shared}${record?.source ? ` (installed by megahub gpu install from ${record.source})` : ""}`);
  } else {
    r.info("  cuda   not handled on this platform");
  }
  if (d.libraries.length > 0) {
    r.info(`libraries the CUDA provider needs (ldd-style, searched as the loader would):`);
    for (const l of d.libraries) {
      const where = l.path !== undefined ? `${l.path} (${l.via})` : "not found";
      const off = l.offPath !== undefined ? ` — present off the loader's path at ${l.offPath}` : "";
      const lazy = l.role === "lazy" ? ` [loaded only when used: ${l.purpose}]` : l.neededBy !== "libonnxruntime_providers_cuda.so" ? ` [needed by ${l.neededBy}]` : "";
      r.info(`  ${l.name.padEnd(20)} => ${where}${off}${lazy}${l.problem ? ` (${l.problem})` : ""}`);
    }
  }
  if (d.probe) {
    const s = (d.probe.ms / 1000).toFixed(1);
    if (d.probe.ok && d.probe.placement) r.info(`CUDA session probe: opened and ran in ${s} s; ${describePlacement(d.probe.placement, "CUDAExecutionProvider")}`);
    else r.info(`CUDA session probe: failed in ${s} s: ${d.probe.failure?.text ?? d.probe.crashed ?? "no answer"}`);
  }
  r.info(
    `TF32: off for verification on CUDA (megahub sets NVIDIA_TF32_OVERRIDE=0 before CUDA starts; verify --tf32 allows it)` +
      (d.tf32Override !== undefined ? `; this shell has NVIDIA_TF32_OVERRIDE=${d.tf32Override}` : ""),
  );
  r.info(`verdict: ${cudaVerdict(d)}`);
}
