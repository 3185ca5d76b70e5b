// The official Python huggingface_hub client (with hf_xet) and transformers against `megahub hub serve`, run as a
// user runs it: the CLI server in its own process, HF_ENDPOINT pointing at it, the client suites in
// test/python/. Skips with one line when the reference venv is absent (test/helpers/refpy.ts).
import type { ChildProcess } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { xorbChunks } from "../src/hub/server/xet-format.js";
import { HAS_REF, runRefPython } from "./helpers/refpy.js";
import { cleanup, spawnHubServe, tempDir } from "./hub-helpers.js";

const TOKEN = "hf_pyclientWriteToken1";
const READ_TOKEN = "hf_pyclientReadToken22";
const OTHER_TOKEN = "hf_pyclientOtherUser333";
const ROOT = join(import.meta.dirname, "..");

interface Result {
  check?: string;
  ok?: boolean;
  error?: string;
}

let server: ChildProcess | undefined;
let url = "";
let dataDir = "";
let work = "";

async function startServer(): Promise<void> {
  dataDir = await tempDir("megahub-pyhub-");
  work = await tempDir("megahub-pywork-");
  ({ url, server } = await spawnHubServe(["--data", dataDir, "--token", TOKEN, "--user", `local:${READ_TOKEN}:read`, "--user", `other:${OTHER_TOKEN}`, "--part-size", String(1 << 20)]));
}

function runSuite(file: string, args: string[]): Result[] {
  const out = runRefPython(readFileSync(join(ROOT, "test", "python", file), "utf8"), args, {
    env: { HF_ENDPOINT: url, HF_HOME: join(work, "hf-home"), HF_HUB_DISABLE_PROGRESS_BARS: "1", HF_TOKEN: "" },
    timeout: 600_000,
  });
  return out
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Result);
}

describe.skipIf(!HAS_REF)("the official Python client against megahub hub serve", () => {
  let client: Result[] = [];
  let tf: Result[] = [];
  beforeAll(async () => {
    await startServer();
    client = runSuite("hub_client_suite.py", [TOKEN, READ_TOKEN, OTHER_TOKEN, work]);
    tf = runSuite("hub_transformers_suite.py", [TOKEN, work]);
  }, 900_000);
  afterAll(async () => {
    server?.kill("SIGTERM");
    await cleanup();
  });

  const CLIENT_CHECKS = [
    "whoami",
    "create_repo",
    "upload_folder_through_xet",
    "model_info_blobs_and_card_data",
    "validate_yaml_refuses_bad_card",
    "hf_hub_download_and_metadata_headers",
    "upload_file_and_bytesio_lfs_fallback",
    "create_commit_copies_and_deletes",
    "list_repo_tree_and_commits",
    "branches_tags_refs_and_revisions",
    "snapshot_download_with_revision",
    "get_safetensors_metadata",
    "hf_file_system",
    "list_models_by_author_and_private_repos",
    "tokens_read_vs_write_and_namespaces",
    "visibility_settings_and_deletes",
  ];
  it.each(CLIENT_CHECKS)("huggingface_hub: %s", (name) => {
    const r = client.find((x) => x.check === name);
    expect(r, `check ${name} did not run`).toBeDefined();
    expect(r?.error ?? "").toBe("");
    expect(r?.ok).toBe(true);
  });

  it("every check of the suite is listed here (none silently added or lost)", () => {
    expect(client.filter((r) => r.check !== undefined).map((r) => r.check)).toEqual(CLIENT_CHECKS);
  });

  it("the Xet uploads took all three chunk encodings (stored, LZ4, byte-grouped LZ4) and were rebuilt byte-exact", () => {
    const counts = [0, 0, 0];
    const root = join(dataDir, "xet", "xorbs");
    for (const d of readdirSync(root)) {
      for (const f of readdirSync(join(root, d))) for (const c of xorbChunks(readFileSync(join(root, d, f)))) counts[c.scheme]!++;
    }
    // Byte-exact: hf_hub_download_and_metadata_headers compared every file with what was uploaded.
    expect(counts.every((n) => n > 0), `chunks by scheme: ${counts.join("/")}`).toBe(true);
  });

  it.each(["push_to_hub_then_from_pretrained", "trust_remote_code_fetch"])("transformers: %s", (name) => {
    const r = tf.find((x) => x.check === name);
    expect(r?.error ?? "").toBe("");
    expect(r?.ok).toBe(true);
  });
});
