import { resolve } from "node:path";
import { startLocalHub } from "../../hub/server/index.js";
import { intOpt, stringOpt, type Command } from "../command.js";
import { SUMMARIES } from "./summaries.js";

export const hubCommand: Command = {
  name: "hub",
  summary: SUMMARIES.hub,
  usage: "megahub hub serve [--host 127.0.0.1] [--port 8080] [--data <dir>] [--token <hf_…>] [--user NAME:hf_…[:read]]…",
  options: {
    host: { type: "string" },
    port: { type: "string" },
    data: { type: "string" },
    token: { type: "string" },
    user: { type: "string", multiple: true },
    "part-size": { type: "string" },
  },
  details: [
    "Speaks what @huggingface/hub and the Python huggingface_hub (with hf_xet) need: repos, branches, tags,",
    "commits, refs, preupload, LFS batch with basic and multipart uploads and the Xet upload protocol (sha256",
    "checked), NDJSON commits with parents, tree, paths-info, resolve/raw with byte ranges. The --token belongs",
    "to user \"local\" and writes the local/ namespace; a random one is printed when --token is not given.",
    "Push to it with --hub-url http://HOST:PORT, or HF_ENDPOINT=http://HOST:PORT for the Python client.",
    "",
    "--part-size  multipart part size in bytes for LFS uploads (default 64 MiB)",
    "--user    another token: NAME:hf_… writes NAME/…, NAME:hf_…:read only reads (repeatable)",
    "--host    interface to bind (default 127.0.0.1; anything else exposes the repos to the network)",
    "--port    default 8080 (0 picks a free one)",
    "--data    storage folder (default ./megahub-hub-data)",
  ],
  async run(positionals, values, out) {
    if (positionals[0] !== "serve" || positionals.length !== 1) throw new RangeError('usage: megahub hub serve [...]');
    const given = stringOpt(values, "token");
    const dataDir = resolve(stringOpt(values, "data") ?? "megahub-hub-data");
    const host = stringOpt(values, "host") ?? "127.0.0.1";
    const users = (Array.isArray(values.user) ? values.user : []).map((spec) => {
      const m = /^([^:]+):([^:]+)(?::(read|write))?$/.exec(String(spec));
      if (m === null) throw new RangeError(`--user ${JSON.stringify(String(spec).split(":")[0])}…: expected NAME:hf_…[:read]`);
      return { user: m[1] as string, token: m[2] as string, role: (m[3] ?? "write") as "read" | "write" };
    });
    const hub = await startLocalHub({
      dataDir,
      host,
      port: intOpt(values, "port") ?? 8080,
      token: given,
      users,
      chunkSize: intOpt(values, "part-size"),
      onRequest: (e) => out.info(`${e.method} ${e.path} → ${e.status}${e.range ? ` (${e.range})` : ""} ${e.ms.toFixed(0)}ms`),
    });
    if (host !== "127.0.0.1" && host !== "localhost" && host !== "::1") {
      out.warn(`listening on ${host}: anyone who can reach it can read public repos`);
    }
    out.info(`megahub local hub on ${hub.url} (data: ${dataDir})`);
    // The token is printed only when megahub made it up: the user has no other way to learn it.
    if (given === undefined) out.info(`write token: ${hub.token}`);
    out.info(`push with: megahub push <dir> --repo local/<name> --hub-url ${hub.url} --token <token>`);
    out.result({ ok: true, url: hub.url, dataDir, ...(given === undefined ? { token: hub.token } : {}) });
    await new Promise<void>((done) => {
      const stop = () => {
        process.off("SIGINT", stop);
        process.off("SIGTERM", stop);
        done();
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });
    await hub.close();
    out.info("stopped");
    return 0;
  },
};
