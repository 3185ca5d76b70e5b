import { stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as hubjs from "@huggingface/hub";
import { afterEach, describe, expect, it } from "vitest";
import { isMegahubError } from "../src/errors.js";
import { pullRepo } from "../src/hub/pull-repo.js";
import { pushFolder, type PushEvent } from "../src/hub/push-folder.js";
import { cleanup, digestTree, modelDir, startHub, tempDir } from "./hub-helpers.js";

afterEach(cleanup);

describe("the real @huggingface/hub client against the local hub", () => {
  it("whoAmI, createRepo (409 on repeat), uploadFiles, listFiles, fileExists, downloadFile, modelInfo", async () => {
    const hub = await startHub();
    const common = { hubUrl: hub.url, accessToken: hub.token };
    const me = await hubjs.whoAmI(common);
    expect(me.name).toBe("local");
    expect(me.auth.type).toBe("access_token");

    const repo = { type: "model" as const, name: "local/client" };
    await hubjs.createRepo({ ...common, repo });
    const again = await hubjs.createRepo({ ...common, repo }).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(hubjs.HubApiError);
    expect((again as hubjs.HubApiError).statusCode).toBe(409);
    expect(await hubjs.repoExists({ ...common, repo })).toBe(true);
    expect(await hubjs.repoExists({ ...common, repo: "local/absent" })).toBe(false);

    const big = new Uint8Array(12 * 1024 * 1024).map((_, i) => (i * 31) % 251); // > chunk: multipart
    await hubjs.uploadFiles({
      ...common,
      repo,
      files: [
        { path: "notes/hello.txt", content: new Blob(["hello hub\n"]) },
        { path: "data/big.bin", content: new Blob([big]) },
      ],
    });
    expect(hub.stats.lfs.objectsStored).toBe(1);
    expect(hub.stats.lfs.puts).toBe(12); // 12 parts of 1 MiB

    const listed: hubjs.ListFileEntry[] = [];
    for await (const f of hubjs.listFiles({ ...common, repo, recursive: true })) listed.push(f);
    const paths = listed.filter((f) => f.type === "file").map((f) => f.path);
    expect(paths).toEqual([".gitattributes", "data/big.bin", "notes/hello.txt"]);
    expect(listed.find((f) => f.path === "data/big.bin")?.lfs?.size).toBe(big.length);

    expect(await hubjs.fileExists({ ...common, repo, path: "notes/hello.txt" })).toBe(true);
    expect(await hubjs.fileExists({ ...common, repo, path: "notes/nope.txt" })).toBe(false);
    const text = await hubjs.downloadFile({ ...common, repo, path: "notes/hello.txt" });
    expect(await text?.text()).toBe("hello hub\n");
    expect(await hubjs.downloadFile({ ...common, repo, path: "missing.txt" })).toBeNull();
    const slice = await (await hubjs.downloadFile({ ...common, repo, path: "data/big.bin" }))?.slice(5_000_000, 5_000_010).arrayBuffer();
    expect([...new Uint8Array(slice ?? new ArrayBuffer(0))]).toEqual([...big.subarray(5_000_000, 5_000_010)]);

    const info = await hubjs.modelInfo({ ...common, name: "local/client" });
    expect(info.name).toBe("local/client");
  });

  it("parseSafetensorsMetadata reads megahub's pushed safetensors and counts its parameters", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    await pushFolder({ dir, repo: "local/st", hubUrl: hub.url, accessToken: hub.token });
    const meta = await hubjs.parseSafetensorsMetadata({
      repo: "local/st",
      hubUrl: hub.url,
      computeParametersCount: true,
    });
    expect(meta.sharded).toBe(false);
    expect(meta.parameterCount).toEqual({ F32: 8 });
    expect(meta.sharded ? [] : Object.keys(meta.header).filter((k) => k !== "__metadata__")).toEqual(["w"]);
  });
  it("parseSafetensorsMetadata follows a sharded model.safetensors.index.json", async () => {
    const hub = await startHub();
    const shard = (name: string, rows: number) => {
      const header = JSON.stringify({ [name]: { dtype: "BF16", shape: [rows, 4], data_offsets: [0, rows * 8] } });
      const padded = Buffer.from(header.padEnd(Math.ceil(header.length / 8) * 8, " "));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(padded.length));
      return Buffer.concat([len, padded, Buffer.alloc(rows * 8)]);
    };
    const dir = await modelDir({
      "model.safetensors": null,
      "model-00001-of-00002.safetensors": shard("shared.weight", 3),
      "model-00002-of-00002.safetensors": shard("lm_head.weight", 5),
      "model.safetensors.index.json": JSON.stringify({
        metadata: { total_size: 64 },
        weight_map: { "shared.weight": "model-00001-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors" },
      }),
    });
    await pushFolder({ dir, repo: "local/sharded", hubUrl: hub.url, accessToken: hub.token });
    const meta = await hubjs.parseSafetensorsMetadata({ repo: "local/sharded", hubUrl: hub.url, computeParametersCount: true });
    expect(meta.sharded).toBe(true);
    expect(meta.parameterCount).toEqual({ BF16: 32 });
  });
});

describe("pushFolder / pullRepo", () => {
  it("pushes a folder and pulls it back byte-identical", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    const events: PushEvent[] = [];
    const r = await pushFolder({ dir, repo: "local/rt", hubUrl: hub.url, accessToken: hub.token, onEvent: (e) => events.push(e) });
    expect(r.created).toBe(true);
    expect(r.card).toBe("existing"); // the folder has its own README.md
    expect(r.commits).toHaveLength(1);
    expect(r.uploaded.sort()).toEqual(Object.keys(await digestTree(dir)).sort());
    const last = events.filter((e) => e.type === "upload").at(-1);
    expect(last).toEqual({ type: "upload", done: r.uploadBytes, total: r.uploadBytes });
    expect(r.bytesSent).toBeGreaterThanOrEqual(3 * 1024 * 1024); // LFS bytes counted in the injected fetch

    const out = join(await tempDir(), "pulled");
    const p = await pullRepo({ repo: "local/rt", out, hubUrl: hub.url });
    const pulled = await digestTree(out);
    delete pulled[".gitattributes"]; // the Hub's initial commit, not ours
    expect(pulled).toEqual(await digestTree(dir));
    expect(p.commit).toBe(r.commits[0]?.oid);
    expect(p.bytesDownloaded).toBe(p.bytes);
  });

  it("compares files with the Hub through the sha256 megahub.json recorded while writing, unless a file changed since", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    const push = () => pushFolder({ dir, repo: "local/manifest", hubUrl: hub.url, accessToken: hub.token });
    await push();
    const weights = join(dir, "extra", "weights.bin");
    const size = (await stat(weights)).size;
    // A recorded digest is believed without reading the file: a (deliberately) wrong one makes the file look changed.
    const manifest = { megahub: "0.1.0", architecture: "openba", model: {}, lineage: [], verification: [], files: { "extra/weights.bin": { bytes: size, sha256: "0".repeat(64) } } };
    await writeFile(join(dir, "megahub.json"), JSON.stringify(manifest));
    expect((await push()).uploaded.sort()).toEqual(["extra/weights.bin", "megahub.json"]);
    // Once the file is newer than the manifest, its digest is computed again: unchanged.
    const later = new Date(Date.now() + 60_000);
    await utimes(weights, later, later);
    expect((await push()).uploaded).toEqual([]);
  });

  it("re-pushing an unchanged folder uploads nothing and makes no commit; a changed file goes alone", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    await pushFolder({ dir, repo: "local/idem", hubUrl: hub.url, accessToken: hub.token });
    const puts = hub.stats.lfs.puts;
    const commits = hub.stats.commits;
    const again = await pushFolder({ dir, repo: "local/idem", hubUrl: hub.url, accessToken: hub.token });
    expect(again.commits).toEqual([]);
    expect(again.uploaded).toEqual([]);
    expect(again.unchanged).toBe(5);
    expect(hub.stats.lfs.puts).toBe(puts);
    expect(hub.stats.commits).toBe(commits);

    await writeFile(join(dir, "config.json"), '{"model_type":"openba","d_model":8}');
    const third = await pushFolder({ dir, repo: "local/idem", hubUrl: hub.url, accessToken: hub.token });
    expect(third.uploaded).toEqual(["config.json"]);
    expect(hub.stats.lfs.puts).toBe(puts);
  });

  it("splits a push into commits under the limits, each on top of the previous one", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    const r = await pushFolder({ dir, repo: "local/split", hubUrl: hub.url, accessToken: hub.token, limits: { maxFiles: 2 } });
    expect(r.commits.map((c) => c.files.length)).toEqual([2, 2, 1]);
    expect(r.commits[0]?.files).toEqual(["extra/weights.bin", "model.safetensors"]); // weights first
    expect(r.commits.at(-1)?.files).toEqual(["README.md"]); // the card last
    const info = await fetch(`${hub.url}/api/models/local/split/revision/main`).then((x) => x.json() as Promise<{ sha: string }>);
    expect(info.sha).toBe(r.commits.at(-1)?.oid);
    expect(hub.stats.commits).toBe(3);
  });

  it("a push killed after its first commit resumes without re-sending anything stored", async () => {
    const hub = await startHub();
    const dir = await modelDir({ "extra/more.bin": Buffer.alloc(2 * 1024 * 1024, 7) });
    const abort = new AbortController();
    const first = await pushFolder({
      dir, repo: "local/kill", hubUrl: hub.url, accessToken: hub.token, limits: { maxFiles: 1 },
      abortSignal: abort.signal,
      onEvent: (e) => {
        if (e.type === "commit" && e.index === 1) abort.abort();
      },
    }).catch((e: unknown) => e);
    expect(isMegahubError(first)).toBe(true);
    expect(String((first as Error).message)).toMatch(/abort/i);
    const stored = hub.stats.lfs.objectsStored;
    const putsBefore = hub.stats.lfs.puts;
    expect(stored).toBe(1);

    const second = await pushFolder({ dir, repo: "local/kill", hubUrl: hub.url, accessToken: hub.token, limits: { maxFiles: 1 } });
    expect(second.unchanged).toBe(1); // the committed file is skipped
    expect(second.uploaded).not.toContain("extra/more.bin"); // committed by the killed run
    expect(hub.stats.lfs.objectsStored).toBe(stored + 2); // the two LFS files not yet stored, once each
    // Only the missing objects were PUT: weights.bin in 4 parts of 1 MiB, model.safetensors in one basic PUT.
    expect(hub.stats.lfs.puts - putsBefore).toBe(5);
  });

  it("LFS objects stored by a push whose commit failed are not uploaded again", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    hub.faults.add({ match: /^POST \/api\/models\/local\/lost\/commit\//, fault: { kind: "status", status: 400 }, times: 1 });
    const failed = await pushFolder({ dir, repo: "local/lost", hubUrl: hub.url, accessToken: hub.token }).catch((e: unknown) => e);
    expect(isMegahubError(failed)).toBe(true);
    const puts = hub.stats.lfs.puts;
    expect(hub.stats.lfs.objectsStored).toBe(2);
    const tree = await fetch(`${hub.url}/api/models/local/lost/tree/main?recursive=true`).then((x) => x.json() as Promise<Array<{ path: string }>>);
    expect(tree.map((e) => e.path)).toEqual([".gitattributes"]); // nothing half-committed

    const r = await pushFolder({ dir, repo: "local/lost", hubUrl: hub.url, accessToken: hub.token });
    expect(r.commits).toHaveLength(1);
    expect(hub.stats.lfs.puts).toBe(puts); // the Hub's batch said "already stored" for both
    expect(r.bytesSent).toBe(0);
  });

  it("generates the model card from megahub.json when the folder has no README", async () => {
    const hub = await startHub();
    const dir = await modelDir({ "README.md": null });
    const r = await pushFolder({ dir, repo: "local/card", hubUrl: hub.url, accessToken: hub.token, cardOptions: { tags: ["demo"] } });
    expect(r.card).toBe("generated");
    const card = await (await hubjs.downloadFile({ repo: "local/card", hubUrl: hub.url, path: "README.md" }))?.text();
    // No licence, language or base model it was not told: the metadata starts with what megahub knows.
    expect(card).toMatch(/^---\nlibrary_name: "transformers"/);
    expect(card).not.toMatch(/license:|base_model:|language:/);
    expect(card).toContain('- "demo"');
    expect(card).toContain("no `megahub.json`");
    const again = await pushFolder({ dir, repo: "local/card", hubUrl: hub.url, accessToken: hub.token, cardOptions: { tags: ["demo"] } });
    expect(again.commits).toEqual([]); // the card renders the same bytes
  });
});
