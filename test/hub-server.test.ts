import { createHash } from "node:crypto";
import { request } from "node:http";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import * as hubjs from "@huggingface/hub";
import { afterEach, describe, expect, it, vi } from "vitest";
import { main } from "../src/cli/main.js";
import { isMegahubError } from "../src/errors.js";
import { pullRepo } from "../src/hub/pull-repo.js";
import { pushFolder } from "../src/hub/push-folder.js";
import { checkRepoPath, repoPathProblem } from "../src/hub/repo-path.js";
import { cleanup, modelDir, startHub, tempDir } from "./hub-helpers.js";

afterEach(cleanup);

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** A raw HTTP request, so paths reach the server exactly as written (fetch would resolve `..`). */
function raw(url: string, method: string, path: string, body?: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; body: string }>((done, fail) => {
    const req = request(`${url}${path}`, { method, headers: { ...headers, ...(body ? { "Content-Length": Buffer.byteLength(body) } : {}) } });
    req.on("response", (res) => {
      let text = "";
      res.on("data", (c: Buffer) => (text += c.toString()));
      res.on("end", () => done({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("error", fail);
    req.end(body);
  });
  // (request() keeps `path` verbatim, including dot segments.)
}

async function batch(hubUrl: string, token: string, repo: string, oid: string, size: number) {
  const res = await fetch(`${hubUrl}/${repo}.git/info/lfs/objects/batch`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/vnd.git-lfs+json" },
    body: JSON.stringify({ operation: "upload", transfers: ["basic", "multipart"], hash_algo: "sha_256", objects: [{ oid, size }] }),
  });
  expect(res.status).toBe(200);
  const json = (await res.json()) as { transfer: string; objects: Array<{ actions?: { upload: { href: string; header?: Record<string, string> } } }> };
  expect(json.transfer).toBe("basic");
  return json.objects[0];
}

describe("LFS uploads are checked", () => {
  it("refuses a basic upload whose bytes do not hash to the oid, and a commit that references it", async () => {
    const hub = await startHub();
    await hubjs.createRepo({ repo: "local/lfs", hubUrl: hub.url, accessToken: hub.token });
    const good = Buffer.from("the bytes that were announced");
    const obj = await batch(hub.url, hub.token, "local/lfs", sha256(good), good.length);
    const href = obj?.actions?.upload.href as string;
    const bad = Buffer.from("the bytes that were sent instead");
    const put = await fetch(href, { method: "PUT", body: bad.subarray(0, good.length) });
    expect(put.status).toBe(400);
    expect(await put.text()).toMatch(/sha256 of the upload is [0-9a-f]{64}, not the announced oid/);
    expect(hub.stats.lfs.rejected).toBe(1);
    expect(hub.stats.lfs.objectsStored).toBe(0);

    const commit = await fetch(`${hub.url}/api/models/local/lfs/commit/main`, {
      method: "POST",
      headers: { Authorization: `Bearer ${hub.token}`, "Content-Type": "application/x-ndjson" },
      body: [
        { key: "header", value: { summary: "sneak" } },
        { key: "lfsFile", value: { path: "w.bin", algo: "sha256", oid: sha256(good), size: good.length } },
      ].map((l) => JSON.stringify(l)).join("\n"),
    });
    expect(commit.status).toBe(422);
    expect(((await commit.json()) as { error: string }).error).toMatch(/never uploaded/);

    // The same ticket is spent; a fresh batch + correct bytes is accepted, and the object is then "already stored".
    const again = await batch(hub.url, hub.token, "local/lfs", sha256(good), good.length);
    expect((await fetch(again?.actions?.upload.href as string, { method: "PUT", body: good })).status).toBe(200);
    expect(await batch(hub.url, hub.token, "local/lfs", sha256(good), good.length)).toEqual({ oid: sha256(good), size: good.length });
  });

  it("refuses a multipart upload whose assembled bytes do not match, and parts of the wrong size", async () => {
    const hub = await startHub({ chunkSize: 1024 });
    await hubjs.createRepo({ repo: "local/mp", hubUrl: hub.url, accessToken: hub.token });
    const good = Buffer.alloc(2500, 1);
    const obj = await batch(hub.url, hub.token, "local/mp", sha256(good), good.length);
    const header = obj?.actions?.upload.header as Record<string, string>;
    expect(Object.keys(header).sort()).toEqual(["00001", "00002", "00003", "chunk_size"]);
    const tooBig = await fetch(header["00001"] as string, { method: "PUT", body: Buffer.alloc(1025) });
    expect(tooBig.status).toBe(400);
    const parts = [];
    for (const [i, key] of ["00001", "00002", "00003"].entries()) {
      const slice = Buffer.alloc(Math.min(1024, good.length - i * 1024), i === 2 ? 9 : 1); // last part altered
      const res = await fetch(header[key] as string, { method: "PUT", body: slice });
      expect(res.status).toBe(200);
      parts.push({ partNumber: i + 1, etag: res.headers.get("etag") });
    }
    const done = await fetch(obj?.actions?.upload.href as string, { method: "POST", body: JSON.stringify({ oid: sha256(good), parts }) });
    expect(done.status).toBe(400);
    expect(hub.stats.lfs.objectsStored).toBe(0);
  });
});

describe("tokens", () => {
  it("writes without a token or with a wrong one are refused; messages never carry the token", async () => {
    const hub = await startHub();
    const noAuth = await fetch(`${hub.url}/api/repos/create`, { method: "POST", body: JSON.stringify({ name: "x", organization: "local" }) });
    expect(noAuth.status).toBe(401);
    const wrong = "hf_wrongTokenThatMustNotLeak123";
    const e = await pushFolder({ dir: await modelDir(), repo: "local/x", hubUrl: hub.url, accessToken: wrong }).catch((x: unknown) => x);
    expect(isMegahubError(e) && e.code === "HUB").toBe(true);
    expect((e as Error).message).toMatch(/401.*token is missing or not valid/);
    expect((e as Error).message).not.toContain(wrong);
    expect(hub.stats.commits).toBe(0);

    const none = await pushFolder({ dir: await modelDir(), repo: "local/x", hubUrl: hub.url }).catch((x: unknown) => x);
    expect(isMegahubError(none) && none.code === "USAGE").toBe(true);
  });

  it("the CLI prints neither a wrong nor a right token, and exits 1 on a refused one", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    const captured: string[] = [];
    const capture = (chunk: unknown) => {
      captured.push(String(chunk));
      return true;
    };
    const out = vi.spyOn(process.stdout, "write").mockImplementation(capture);
    const err = vi.spyOn(process.stderr, "write").mockImplementation(capture);
    const wrong = "hf_anotherWrongTokenXYZ987";
    let codes: number[];
    try {
      codes = [
        await main(["push", dir, "--repo", "local/cli", "--hub-url", hub.url, "--token", wrong]),
        await main(["push", dir, "--repo", "local/cli", "--hub-url", hub.url, "--token", hub.token, "--json"]),
        await main(["push", dir, "--repo", "local/cli", "--hub-url", hub.url, "--token", hub.token]),
        await main(["pull", "local/cli", "--out", join(await tempDir(), "p"), "--hub-url", hub.url, "--token", hub.token]),
        await main(["push", dir, "--repo", "local/cli", "--hub-url", hub.url, "--token", "not_a_token_secret"]),
      ];
    } finally {
      out.mockRestore();
      err.mockRestore();
    }
    expect(codes).toEqual([1, 0, 0, 0, 2]);
    const text = captured.join("");
    expect(text).toMatch(/error: .*401/);
    expect(text).toContain("Up to date");
    expect(text).toMatch(/"ok": true/);
    for (const secret of [wrong, hub.token, "not_a_token_secret"]) expect(text).not.toContain(secret);
  });

  it("private repos are invisible without the token", async () => {
    const hub = await startHub();
    await pushFolder({ dir: await modelDir(), repo: "local/secret", hubUrl: hub.url, accessToken: hub.token, private: true });
    expect(await hubjs.repoExists({ repo: "local/secret", hubUrl: hub.url })).toBe(false);
    expect(await hubjs.repoExists({ repo: "local/secret", hubUrl: hub.url, accessToken: hub.token })).toBe(true);
    const e = await pullRepo({ repo: "local/secret", out: join(await tempDir(), "p"), hubUrl: hub.url }).catch((x: unknown) => x);
    expect((e as Error).message).toMatch(/private and needs a token/);
    const ok = await pullRepo({ repo: "local/secret", out: join(await tempDir(), "p"), hubUrl: hub.url, accessToken: hub.token });
    expect(ok.files).toBe(6);
  });
});

describe("paths are checked against traversal", () => {
  it("the server refuses dot segments, encoded or not, in repo names and file paths", async () => {
    const hub = await startHub();
    await pushFolder({ dir: await modelDir(), repo: "local/safe", hubUrl: hub.url, accessToken: hub.token });
    const attempts = [
      "/local/safe/resolve/main/../../../../etc/passwd",
      "/local/safe/resolve/main/%2e%2e/%2e%2e/repo.json",
      "/local/safe/resolve/main/..%2F..%2Frepo.json",
      "/local/..%2F..%2Fetc/resolve/main/passwd",
      "/api/models/local/%2e%2e/tree/main",
      "/local/safe/resolve/main/a//b",
    ];
    for (const path of attempts) {
      const r = await raw(hub.url, "GET", path);
      expect([400, 404], path).toContain(r.status);
      expect(r.body, path).not.toMatch(/root:|"refs"/);
    }
    const commit = await raw(
      hub.url,
      "POST",
      "/api/models/local/safe/commit/main",
      [{ key: "header", value: { summary: "x" } }, { key: "file", value: { path: "../escape.txt", content: "aGk=", encoding: "base64" } }]
        .map((l) => JSON.stringify(l))
        .join("\n"),
      { Authorization: `Bearer ${hub.token}` },
    );
    expect(commit.status).toBe(400);
    expect(commit.body).toMatch(/'\.\.' segment/);
    const create = await raw(hub.url, "POST", "/api/repos/create", JSON.stringify({ name: "..", organization: "local" }), {
      Authorization: `Bearer ${hub.token}`,
    });
    expect(create.status).toBe(400);
    expect(await readdir(join(hub.dataDir, "repos", "models"))).toEqual(["local"]);
  });

  it("client-side checks refuse absolute, dot, backslash and .git paths", () => {
    for (const bad of ["/etc/passwd", "../x", "a/../b", "a\\b", "C:/x", "a//b", ".git/config", "a/./b", ""]) {
      expect(repoPathProblem(bad), bad).toBeDefined();
      expect(() => checkRepoPath(bad, "server")).toThrow(/refusing path/);
    }
    for (const good of ["model.safetensors", "tokenizer/tokenizer.json", ".gitattributes", "a b/c.d"]) {
      expect(repoPathProblem(good), good).toBeUndefined();
    }
  });
});

describe("hub behaviours the client relies on", () => {
  it("rejects a stale parentCommit with 412 and binary content committed as a regular file", async () => {
    const hub = await startHub();
    await hubjs.createRepo({ repo: "local/cc", hubUrl: hub.url, accessToken: hub.token });
    const post = (lines: unknown[]) =>
      fetch(`${hub.url}/api/models/local/cc/commit/main`, {
        method: "POST",
        headers: { Authorization: `Bearer ${hub.token}` },
        body: lines.map((l) => JSON.stringify(l)).join("\n"),
      });
    const file = (content: Buffer) => ({ key: "file", value: { path: "f.txt", content: content.toString("base64"), encoding: "base64" } });
    const stale = await post([{ key: "header", value: { summary: "s", parentCommit: "0".repeat(40) } }, file(Buffer.from("a"))]);
    expect(stale.status).toBe(412);
    const binary = await post([{ key: "header", value: { summary: "b" } }, file(Buffer.from([1, 0, 2]))]);
    expect(binary.status).toBe(400);
    expect(await binary.text()).toMatch(/binary files/);
  });

  it("pages the tree with absolute Link headers, which listFiles follows", async () => {
    const hub = await startHub({ treePageSize: 2 });
    await pushFolder({ dir: await modelDir(), repo: "local/pages", hubUrl: hub.url, accessToken: hub.token });
    const before = hub.log.length;
    const all: string[] = [];
    for await (const f of hubjs.listFiles({ repo: "local/pages", hubUrl: hub.url, recursive: true })) all.push(`${f.type}:${f.path}`);
    expect(all).toEqual([
      "file:.gitattributes", "file:README.md", "file:config.json", "directory:extra", "file:extra/weights.bin",
      "file:model.safetensors", "directory:tokenizer", "file:tokenizer/tokenizer_config.json",
    ]);
    expect(hub.log.slice(before).filter((l) => l.path.includes("/tree/")).length).toBe(4);
  });
});
