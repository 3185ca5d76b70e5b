import { MegahubError } from "../../errors.js";
import type { Command } from "../command.js";
import { stringOpt } from "../command.js";
import { installCudaProvider, planCudaProvider } from "../../verify/gpu-install.js";
import { CUDA_PROVIDER_PACKAGE } from "../../verify/ort-locate.js";
import { SUMMARIES } from "./summaries.js";

export const gpuCommand: Command = {
  name: "gpu",
  summary: SUMMARIES.gpu,
  usage: "megahub gpu install [--from <dir|file.tgz>] [--dry-run] [--json]",
  options: { from: { type: "string" }, "dry-run": { type: "boolean" } },
  details: [
    `Without --from: fetches ${CUDA_PROVIDER_PACKAGE.name}@${CUDA_PROVIDER_PACKAGE.version} with npm (ORT`,
    `${CUDA_PROVIDER_PACKAGE.ortVersion}'s libonnxruntime_providers_cuda.so and _shared.so, about 180 MB), checks the tarball`,
    "against its pinned integrity, and puts the two files beside ORT's core library.",
    "--from: a folder (searched a few levels deep) or a .tgz holding the two files — that package's tarball, ORT's",
    "own onnxruntime-linux-x64-gpu release tgz, or a folder copied from another machine — for offline machines.",
    "The CUDA provider's ORT version must equal the core's (a mismatched provider crashes ORT): otherwise nothing",
    "is installed. The provider needs CUDA 13 (cudart, cuBLAS, cuRAND) and an NVIDIA driver; `megahub doctor` checks.",
    "--dry-run: the checks that need no download (platform, the core's ORT version, --from exists) and the files it",
    "would write; nothing is fetched or written (the provider's own version is checked by the real run).",
  ],
  async run(positionals, values, reporter) {
    const [sub, ...extra] = positionals;
    if (sub !== "install" || extra.length > 0) throw new MegahubError("USAGE", "usage: megahub gpu install [--from <dir|file.tgz>]");
    const from = stringOpt(values, "from");
    if (values["dry-run"] === true) {
      const p = await planCudaProvider(from !== undefined ? { from } : {});
      for (const f of p.files) reporter.info(`would ${f.replaces ? "replace" : "write"} ${f.path}`);
      reporter.info(`dry run: ORT ${p.ortVersion} CUDA provider from ${p.source} into ${p.binDir}; nothing fetched or written`);
      reporter.result({ ok: true, dryRun: true, ...p });
      return 0;
    }
    const r = await installCudaProvider({ ...(from !== undefined ? { from } : {}), onProgress: (l) => reporter.info(l) });
    reporter.info(`ORT ${r.ortVersion} CUDA provider installed in ${r.binDir} from ${r.source}; run \`megahub doctor\` to check the CUDA libraries`);
    reporter.result({ ok: true, ...r });
    return 0;
  },
};
