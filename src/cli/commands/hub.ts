import { resolve } from "node:path";
import { startLocalHub } from "../../hub/server/index.js";
import { intOpt, stringOpt, type Command } from "../command.js";

export const hubCommand: Command = {
  name: "hub",
  summary: "run a local Hugging Face Hub-compatible server (to rehearse pushes and pulls offline)",
  usage: "megahub hub serve [--host 127.0.0.1] [--port 8080] [--data <dir>] [--token <hf_…>]",
  options: {
    host: { type: "string" },
    port: { type: "string" },
    data: { type: "string" },
    token: { type: "string" },
  },
  details: [
    "Speaks what @huggingface/hub needs: repos, preupload, LFS batch with basic and multipart uploads (sha256",
    "checked), NDJSON commits with parents, tree listing, resolve/raw with byte ranges. Writes need the token;",
    "a random one is printed at start when --token is not given. Push to it with --hub-url http://HOST:PORT.",
    "",
    "--host    interface to bind (default 127.0.0.1; anything else exposes the repos to the network)",
    "--port    default 8080 (0 picks a free one)",
    "--data    storage folder (default ./megahub-hub-data)",
  ],
  async run(positionals, values, out) {
    if (positionals[0] !== "serve" || positionals.length !== 1) throw new RangeError('usage: megahub hub serve [...]');
    const given = stringOpt(values, "token");
    const dataDir = resolve(stringOpt(values, "data") ?? "megahub-hub-data");
    const host = stringOpt(values, "host") ?? "127.0.0.1";
    const hub = await startLocalHub({
      dataDir,
      host,
      port: intOpt(values, "port") ?? 8080,
      token: given,
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
