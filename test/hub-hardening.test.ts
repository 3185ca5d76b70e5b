// The local hub under hostile or unlucky clients (issue 16's server findings): crafted .gitattributes, revisions
// that are Object.prototype names, interrupted and retried uploads, oversized bodies, slow clients, many requests.
import { createHash, randomBytes } from "node:crypto";
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import * as hubjs from "@huggingface/hub";
import { afterEach, describe, expect, it } from "vitest";
import { startLocalHub } from "../src/hub/server/index.js";
import { compileGlob, globMatch, WorkBudget } from "../src/hub/server/upload-mode.js";
import { cleanup, startHub, tempDir } from "./hub-helpers.js";

afterEach(cleanup);

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const auth = (token: string) => ({ Authorization: `Bearer ${token}` });

async function batch(url: string, token: string, repo: string, body: Buffer) {
  const res = await fetch(`${url}/${repo}.git/info/lfs/objects/batch`, {
    method: "POST",
    headers: { ...auth(token), "Content-Type": "application/vnd.git-lfs+json" },
    body: JSON.stringify({ operation: "upload", transfers: ["basic", "multipart"], objects: [{ oid: sha256(body), size: body.length }] }),
  });
  const json = (await res.json()) as { objects: Array<{ actions?: { upload: { href: string; header?: Record<string, string> } } }> };
  return json.objects[0]?.actions?.upload;
}

describe(".gitattributes patterns are matched in linear time", () => {
  it.each([
    ["*.bin", "a/b/c.bin", true],
    ["*.bin", "c.bin.txt", false],
    ["weights/*.bin", "weights/x.bin", true],
    ["weights/*.bin", "other/weights/x.bin", false],
    ["/top.bin", "top.bin", true],
    ["**/deep/*.pt", "a/b/deep/x.pt", true],
    ["**/deep/*.pt", "deep/x.pt", true],
    ["a/**/b.bin", "a/b.bin", true],
    ["a/**/b.bin", "a/x/y/b.bin", true],
    ["a/**/b.bin", "a/xb.bin", false],
    ["data/**", "data/x/y", true],
    ["model-?????-of-*.safetensors", "model-00001-of-00002.safetensors", true],
    ["model-?????-of-*.safetensors", "model-001-of-00002.safetensors", false],
    ["*", "anything/at.all", true],
  ])("%s vs %s → %s", (pattern, path, want) => {
    expect(globMatch(compileGlob(pattern), path)).toBe(want);
  });

  it("a pattern that blows up a backtracking regex costs milliseconds, and the server keeps answering", async () => {
    const evil = `${"*a".repeat(40)}*b`;
    const path = "a".repeat(1000);
    const t0 = performance.now();
    expect(globMatch(compileGlob(evil), path)).toBe(false);
    expect(performance.now() - t0).toBeLessThan(500);

    const hub = await startHub();
    await hubjs.createRepo({ repo: "local/attrs", hubUrl: hub.url, accessToken: hub.token });
    const attrs = Array.from({ length: 200 }, () => `${evil} filter=lfs diff=lfs merge=lfs -text`).join("\n");
    await hubjs.uploadFiles({ repo: "local/attrs", hubUrl: hub.url, accessToken: hub.token, files: [{ path: ".gitattributes", content: new Blob([attrs]) }] });
    const files = Array.from({ length: 256 }, (_, i) => ({ path: `${"a".repeat(900)}${i}`, size: 5, sample: "aGVsbG8=" }));
    const slow = fetch(`${hub.url}/api/models/local/attrs/preupload/main`, {
      method: "POST",
      headers: { ...auth(hub.token), "Content-Type": "application/json" },
      body: JSON.stringify({ files }),
    });
    const t1 = performance.now();
    const other = await fetch(`${hub.url}/api/models/local/attrs`);
    expect(other.status).toBe(200);
    const res = await slow;
    // Either answered (the matcher is fast enough) or refused with a clear 400 once its work budget is spent.
    expect([200, 400]).toContain(res.status);
    expect(performance.now() - t1).toBeLessThan(10_000);
  });

  it("the work budget refuses instead of spinning", () => {
    const p = compileGlob(`${"*a".repeat(200)}*b`);
    expect(() => {
      const budget = new WorkBudget(1_000_000);
      for (let i = 0; i < 100; i++) globMatch(p, "a".repeat(1000), budget);
    }).toThrow(/too many or too complex/);
  });
});

describe("revisions and paths that are Object.prototype names answer 4xx, never 500", () => {
  it("on every route that takes a revision", async () => {
    const hub = await startHub();
    await hubjs.createRepo({ repo: "local/proto", hubUrl: hub.url, accessToken: hub.token });
    const revs = ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf", "%E0%A4%A", "a".repeat(300), "refs%2Fheads%2F__proto__"];
    const statuses: Record<string, number> = {};
    for (const rev of revs) {
      const calls: Array<[string, string, string?]> = [
        ["GET", `/local/proto/resolve/${rev}/.gitattributes`],
        ["HEAD", `/local/proto/raw/${rev}/.gitattributes`],
        ["GET", `/api/models/local/proto/revision/${rev}`],
        ["GET", `/api/models/local/proto/tree/${rev}`],
        ["GET", `/api/models/local/proto/commits/${rev}`],
        ["POST", `/api/models/local/proto/paths-info/${rev}`, JSON.stringify({ paths: ["constructor"] })],
        ["POST", `/api/models/local/proto/preupload/${rev}`, JSON.stringify({ files: [] })],
        ["POST", `/api/models/local/proto/commit/${rev}`, '{"key":"header","value":{"summary":"x"}}\n'],
        ["DELETE", `/api/models/local/proto/branch/${rev}`],
        ["DELETE", `/api/models/local/proto/tag/${rev}`],
        ["POST", `/api/models/local/proto/branch/main`, JSON.stringify({ startingPoint: rev })],
        ["POST", `/api/models/local/proto/tag/${rev}`, JSON.stringify({ tag: "t" })],
        ["GET", `/api/models/local/proto/xet-write-token/${rev}`],
        ["GET", `/api/${rev}/local/proto`],
        ["GET", `/local/proto/resolve/main/${rev}`],
        ["GET", `/${rev}/proto/resolve/main/x`],
      ];
      for (const [method, path, body] of calls) {
        const res = await fetch(`${hub.url}${path}`, { method, headers: auth(hub.token), body });
        statuses[`${method} ${path.slice(0, 80)}`] = res.status;
      }
    }
    expect(Object.entries(statuses).filter(([, s]) => s < 400 || s >= 500)).toEqual([]);
    // A branch may be called `constructor`; it is then found as itself, not as Object.prototype.constructor.
    const make = await fetch(`${hub.url}/api/models/local/proto/branch/constructor`, { method: "POST", headers: auth(hub.token), body: "{}" });
    expect(make.status).toBe(200);
    const main = (await (await fetch(`${hub.url}/api/models/local/proto`)).json()) as { sha: string };
    const info = (await (await fetch(`${hub.url}/api/models/local/proto/revision/constructor`)).json()) as { sha: string };
    expect(info.sha).toBe(main.sha);
  });
});

describe("interrupted and retried uploads", () => {
  it("an interrupted multipart upload's temp file is removed when the URL goes idle, and at restart", async () => {
    const dataDir = await tempDir("megahub-hubdata-");
    const hub = await startLocalHub({ dataDir, chunkSize: 1 << 20 });
    await hubjs.createRepo({ repo: "local/cut", hubUrl: hub.url, accessToken: hub.token });
    const body = randomBytes(3 << 20);
    const up = await batch(hub.url, hub.token, "local/cut", body);
    const part1 = up?.header?.["00001"] as string;
    // Send half a part, then drop the connection.
    await new Promise<void>((done) => {
      const u = new URL(part1);
      const s = connect(Number(u.port), u.hostname, () => {
        s.write(`PUT ${u.pathname} HTTP/1.1\r\nHost: x\r\nContent-Length: ${1 << 20}\r\n\r\n`);
        s.write(body.subarray(0, 1 << 19), () => setTimeout(() => (s.destroy(), done()), 100));
      });
    });
    await new Promise((r) => setTimeout(r, 100));
    const tmp = join(dataDir, "lfs", "tmp");
    expect(readdirSync(tmp).length).toBe(1);
    expect(await hub.expireUploads(0)).toBe(1);
    expect(readdirSync(tmp).length).toBe(0);

    // A temp file left by a server that died is removed when the next one starts.
    const up2 = await batch(hub.url, hub.token, "local/cut", randomBytes(3 << 20));
    await fetch(up2?.header?.["00001"] as string, { method: "PUT", body: randomBytes(1 << 20) });
    expect(readdirSync(tmp).length).toBe(1);
    await hub.close();
    const again = await startLocalHub({ dataDir, chunkSize: 1 << 20 });
    expect(existsSync(tmp) ? readdirSync(tmp).length : 0).toBe(0);
    await again.close();
  });

  it("a basic PUT and a multipart /complete whose answer was lost succeed when retried", async () => {
    const hub = await startHub();
    await hubjs.createRepo({ repo: "local/lost", hubUrl: hub.url, accessToken: hub.token });
    const small = randomBytes(1000);
    const put = await batch(hub.url, hub.token, "local/lost", small);
    hub.faults.add({ match: /^PUT \/__megahub\/lfs\//, fault: { kind: "drop-response" }, times: 1 });
    await expect(fetch(put?.href as string, { method: "PUT", body: small })).rejects.toThrow();
    const retry = await fetch(put?.href as string, { method: "PUT", body: small });
    expect(retry.status).toBe(200);

    const big = randomBytes((2 << 20) + 5);
    const mp = await batch(hub.url, hub.token, "local/lost", big);
    const parts = [];
    for (let i = 1; i <= 3; i++) {
      const res = await fetch(mp?.header?.[String(i).padStart(5, "0")] as string, { method: "PUT", body: big.subarray((i - 1) << 20, i << 20) });
      parts.push({ partNumber: i, etag: res.headers.get("etag") });
    }
    const completion = JSON.stringify({ oid: sha256(big), parts });
    hub.faults.add({ match: /^POST \/__megahub\/lfs\/.*\/complete$/, fault: { kind: "drop-response" }, times: 1 });
    await expect(fetch(mp?.href as string, { method: "POST", body: completion })).rejects.toThrow();
    expect((await fetch(mp?.href as string, { method: "POST", body: completion })).status).toBe(200);
    expect(hub.stats.lfs.objectsStored).toBe(2);
  });

  it("the multipart completion body is bounded by the number of parts", async () => {
    const hub = await startHub();
    await hubjs.createRepo({ repo: "local/big", hubUrl: hub.url, accessToken: hub.token });
    const mp = await batch(hub.url, hub.token, "local/big", randomBytes((2 << 20) + 5));
    const res = await fetch(mp?.href as string, { method: "POST", body: Buffer.alloc(8 << 20, 0x20) });
    expect(res.status).toBe(413);
  });
});

describe("slow and many clients", () => {
  it("a request body that stalls is cut off by the request timeout", async () => {
    const hub = await startHub({ requestTimeoutMs: 800 });
    const u = new URL(hub.url);
    const t0 = performance.now();
    const reply = await new Promise<string>((done) => {
      let text = "";
      const s = connect(Number(u.port), u.hostname, () => {
        s.write(`POST /api/repos/create HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${hub.token}\r\nContent-Length: 100\r\n\r\n{"na`);
      });
      s.on("data", (c) => (text += c.toString()));
      s.on("close", () => done(text));
    });
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(reply === "" || reply.startsWith("HTTP/1.1 408")).toBe(true);
  });

  it("200 concurrent requests with large bodies keep the server's memory bounded", async () => {
    // The server runs in its own process, so its peak RSS (VmHWM) is measured apart from the clients'.
    const dataDir = await tempDir("megahub-hubdata-");
    const token = "hf_manyRequestsToken1";
    const child = spawn(process.execPath, ["bin/megahub.js", "hub", "serve", "--port", "0", "--data", dataDir, "--token", token], {
      cwd: join(import.meta.dirname, ".."),
      stdio: ["ignore", "pipe", "pipe"],
    });
    try {
      const url = await new Promise<string>((done) => {
        let seen = "";
        const look = (c: Buffer) => {
          seen += c.toString();
          const m = /local hub on (http:\/\/\S+)/.exec(seen);
          if (m) done(m[1] as string);
        };
        child.stdout.on("data", look);
        child.stderr.on("data", look);
      });
      await hubjs.createRepo({ repo: "local/many", hubUrl: url, accessToken: token });
      const hwm = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))?.[1]) / 1024;
      const before = hwm();
      const payload = JSON.stringify({ files: [], padding: "x".repeat(4 << 20) });
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          i % 2 === 0
            ? fetch(`${url}/api/models/local/many/preupload/main`, { method: "POST", headers: { ...auth(token), "Content-Type": "application/json" }, body: payload }).then((r) => r.status)
            : fetch(`${url}/api/models/local/many/tree/main`).then((r) => r.status),
        ),
      );
      expect(results.every((s) => s === 200)).toBe(true);
      // 100 bodies of 4 MB held at once would be 400 MB of buffers alone; the shared budget keeps 64 MB (buffer, string and value counted).
      const grew = hwm() - before;
      process.stderr.write(`local hub: peak RSS grew ${grew.toFixed(0)} MB under 200 concurrent requests\n`);
      expect(grew, `server peak RSS grew ${grew.toFixed(0)} MB`).toBeLessThan(350);
    } finally {
      child.kill("SIGTERM");
    }
  }, 120_000);
});
