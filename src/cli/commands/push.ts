import { resolveHubUrl, resolveToken } from "../../hub/config.js";
import { pushFolder } from "../../hub/push-folder.js";
import { listOpt, stringOpt, type Command } from "../command.js";
import { formatBytes } from "../reporter.js";
import { SUMMARIES } from "./summaries.js";

export const pushCommand: Command = {
  name: "push",
  summary: SUMMARIES.push,
  usage:
    'megahub push <dir> --repo <ns/name> [--private] [--revision main] [--message "…"] [--hub-url URL] [--token T] [--include GLOB…] [--exclude GLOB…] [--delete GLOB…] [--keep-superseded] [--force] [--dry-run] [--json]',
  options: {
    repo: { type: "string" },
    private: { type: "boolean" },
    revision: { type: "string" },
    message: { type: "string" },
    "hub-url": { type: "string" },
    token: { type: "string" },
    "dry-run": { type: "boolean" },
    card: { type: "string" },
    license: { type: "string" },
    "base-model": { type: "string" },
    tag: { type: "string", multiple: true },
    language: { type: "string", multiple: true },
    include: { type: "string", multiple: true },
    exclude: { type: "string", multiple: true },
    delete: { type: "string", multiple: true },
    "keep-superseded": { type: "boolean" },
    force: { type: "boolean" },
  },
  details: [
    "Only files the Hub lacks (or holds with other bytes) are sent; run the same command again after any failure",
    "to resume. Large pushes are split into several commits (weights first, config and model card last).",
    "",
    "--token          write token; else HF_TOKEN, else the token file (HF_TOKEN_PATH, $HF_HOME/token,",
    "                 ~/.cache/huggingface/token). The token is never printed. Prefer HF_TOKEN: arguments",
    "                 are visible to other users of the machine.",
    "--hub-url        Hub to push to; else HF_ENDPOINT, else https://huggingface.co",
    "--dry-run        compare with the Hub and print the plan; upload and create nothing",
    "--card MODE      auto (render README.md from megahub.json unless the folder has one), always, never",
    "--license ID     license in the card's metadata (left out unless given: OpenBA's weights are agpl-3.0)",
    "--base-model ID  base_model in the card's metadata (left out unless given)",
    "--language CODE  language in the card's metadata (repeatable; left out unless given)",
    "--tag TAG        extra card tag (repeatable)",
    "--include GLOB   push only matching files (fnmatch, `*` crosses folders; repeatable)",
    "--exclude GLOB   never push matching files, never delete matching repo files (repeatable)",
    "--delete GLOB    remove matching repo files the folder does not have, as `hf upload --delete` (repeatable)",
    "--keep-superseded  keep repo weight files the folder's weights supersede (removed by default, with a notice:",
    "                 an old model.safetensors beside new shards would be what transformers loads)",
    "--force          push a folder whose last recorded verification (megahub.json) failed",
    "--dry-run also prints the model card that would be pushed (--json: cardPreview).",
  ],
  async run(positionals, values, out) {
    const dir = positionals[0];
    const repo = stringOpt(values, "repo");
    if (dir === undefined || repo === undefined) throw new RangeError("push needs <dir> and --repo <ns/name>");
    const card = stringOpt(values, "card") ?? "auto";
    if (card !== "auto" && card !== "always" && card !== "never") {
      throw new RangeError(`--card must be auto, always or never, got "${card}"`);
    }
    const hubUrl = resolveHubUrl(stringOpt(values, "hub-url"));
    const token = await resolveToken({ explicit: stringOpt(values, "token") });
    const dryRun = values["dry-run"] === true;
    out.info(
      `${dryRun ? "Planning push of" : "Pushing"} ${dir} to ${repo}@${stringOpt(values, "revision") ?? "main"} on ${hubUrl}` +
        (token ? ` (token from ${token.source})` : " (no token)"),
    );
    const r = await pushFolder({
      dir,
      repo,
      hubUrl,
      accessToken: token?.token,
      revision: stringOpt(values, "revision"),
      private: values.private === true ? true : undefined,
      message: stringOpt(values, "message"),
      dryRun,
      card,
      include: listOpt(values, "include"),
      exclude: listOpt(values, "exclude"),
      delete: listOpt(values, "delete"),
      keepSuperseded: values["keep-superseded"] === true,
      force: values.force === true,
      cardOptions: {
        license: stringOpt(values, "license"),
        baseModel: stringOpt(values, "base-model"),
        tags: listOpt(values, "tag"),
        languages: listOpt(values, "language"),
      },
      onEvent: (e) => {
        switch (e.type) {
          case "plan":
            out.info(
              `${e.files} files: ${e.unchanged} already on the Hub, ${e.upload} to upload (${formatBytes(e.uploadBytes)}) in ${e.commits} commit${e.commits === 1 ? "" : "s"}`,
            );
            break;
          case "delete":
            if (e.superseded.length > 0) {
              out.warn(`${dryRun ? "would remove" : "removing"} ${e.superseded.length} weight file(s) the folder's weights supersede (--keep-superseded keeps them): ${e.superseded.join(", ")}`);
            }
            if (e.paths.length > e.superseded.length) {
              out.info(`${dryRun ? "would remove" : "removing"} (--delete): ${e.paths.filter((p) => !e.superseded.includes(p)).join(", ")}`);
            }
            break;
          case "hashing":
            out.progress("hashing", e.done, e.total);
            break;
          case "upload":
            out.progress("uploading", e.done, e.total);
            break;
          case "retry":
            out.warn(`retry ${e.retry.attempt} of ${e.retry.method} ${e.retry.url} after ${e.retry.reason}, waiting ${(e.retry.delayMs / 1000).toFixed(1)}s`);
            break;
          case "commit":
            out.info(`commit ${e.index}/${e.of}: ${e.oid.slice(0, 12)} (${e.files} files)${e.recovered ? " — confirmed from the Hub after a lost answer" : ""}`);
            break;
        }
      },
    });
    if (dryRun) {
      for (const p of r.uploaded) out.info(`  would upload ${p}`);
      for (const p of r.deleted) out.info(`  would delete ${p}`);
      if (r.cardPreview !== undefined) out.info(`--- README.md (model card preview) ---\n${r.cardPreview.trimEnd()}\n--- end of preview ---`);
    } else if (r.commits.length === 0) {
      out.info(`Up to date: ${repo}@${r.revision} already has every file.`);
    } else {
      out.info(`Pushed ${r.uploaded.length} files (${formatBytes(r.bytesSent)} sent${r.bytesResumed > 0 ? `, ${formatBytes(r.bytesResumed)} the Hub held from an interrupted push` : ""}) in ${r.commits.length} commit(s): ${r.commits.at(-1)?.url ?? ""}`);
    }
    out.result({ ok: true, ...r });
    return 0;
  },
};
