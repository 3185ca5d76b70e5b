import { resolveHubUrl, resolveToken } from "../../hub/config.js";
import { pullRepo } from "../../hub/pull-repo.js";
import { stringOpt, type Command } from "../command.js";
import { formatBytes } from "../reporter.js";
import { SUMMARIES } from "./summaries.js";

export const pullCommand: Command = {
  name: "pull",
  summary: SUMMARIES.pull,
  usage: "megahub pull <ns/name> --out <dir> [--revision main] [--hub-url URL] [--token T] [--dry-run] [--json]",
  options: {
    out: { type: "string" },
    "dry-run": { type: "boolean" },
    revision: { type: "string" },
    "hub-url": { type: "string" },
    token: { type: "string" },
  },
  details: [
    "The revision is pinned to its commit, every file is checked (sha256 for LFS files, git blob id otherwise),",
    "and --out appears only when all files are verified. After a failure, run the same command again: verified",
    "files are kept and partial ones continue with HTTP Range requests.",
    "",
    "--token     needed for private repos; else HF_TOKEN or the token file",
    "--hub-url   Hub to pull from; else HF_ENDPOINT, else https://huggingface.co",
    "--dry-run   list the files and bytes it would download into --out; download and create nothing",
  ],
  async run(positionals, values, out) {
    const repo = positionals[0];
    const dir = stringOpt(values, "out");
    if (repo === undefined || dir === undefined) throw new RangeError("pull needs <ns/name> and --out <dir>");
    const hubUrl = resolveHubUrl(stringOpt(values, "hub-url"));
    const token = await resolveToken({ explicit: stringOpt(values, "token") });
    const dryRun = values["dry-run"] === true;
    const r = await pullRepo({
      dryRun,
      repo,
      out: dir,
      hubUrl,
      accessToken: token?.token,
      revision: stringOpt(values, "revision"),
      onEvent: (e) => {
        if (e.type === "plan") {
          out.info(
            `${repo}@${e.commit.slice(0, 12)}: ${e.files} files, ${formatBytes(e.bytes)}${e.alreadyHere > 0 ? ` (${e.alreadyHere} already downloaded)` : ""}`,
          );
        } else if (e.type === "download") {
          out.progress("downloading", e.done, e.total);
        } else if (e.type === "resume") {
          out.info(`resuming ${e.path} at byte ${e.from}`);
        } else {
          out.warn(`retry ${e.retry.attempt} of ${e.retry.method} ${e.retry.url} after ${e.retry.reason}`);
        }
      },
    });
    if (dryRun) {
      for (const f of r.planned ?? []) out.info(`  would download ${f.path} (${formatBytes(f.bytes)})`);
      out.info(`dry run: would pull into ${r.out}; nothing written`);
      out.result({ ok: true, ...r });
      return 0;
    }
    out.info(`Pulled ${r.files} files (${formatBytes(r.bytes)}, ${formatBytes(r.bytesDownloaded)} downloaded now) into ${r.out}`);
    out.result({ ok: true, ...r });
    return 0;
  },
};
