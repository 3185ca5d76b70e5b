// Resumed pushes send only what the server lacks (upload-resume.ts): proven by counting bytes at the server across
// a push killed mid-upload and the push that follows, and by the sha256 of every file in the final repo.
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as hubjs from "@huggingface/hub";
import { Agent } from "undici";
import { afterEach, describe, expect, it } from "vitest";
import { pushFolder } from "../src/hub/push-folder.js";
import { ResumableUploads } from "../src/hub/upload-resume.js";
import type { LocalHub } from "../src/hub/server/index.js";
import { cleanup, digestTree, fakeSleep, startHub, tempDir } from "./hub-helpers.js";

afterEach(cleanup);

const ROOT = join(import.meta.dirname, "..");
const PART = 1 << 20;

/** LFS files (two multipart with 1 MiB parts, two basic), plus regular ones; returns the folder and LFS bytes. */
const lfsSizes: Record<string, number> = {
  "model-00001-of-00002.safetensors": 16 * PART + 4321,
  "model-00002-of-00002.safetensors": 12 * PART + 17,
  "tokenizer.model": PART - 100,
  "extra/small.bin": 700_000,
};

async function bigModel(): Promise<{ dir: string; lfsBytes: number }> {
  const dir = await tempDir("megahub-resume-");
  for (const [path, size] of Object.entries(lfsSizes)) {
    await mkdir(join(dir, ...path.split("/").slice(0, -1)), { recursive: true });
    await writeFile(join(dir, ...path.split("/")), randomBytes(size));
  }
  await writeFile(join(dir, "config.json"), JSON.stringify({ model_type: "gpt", hidden_size: 8 }));
  await writeFile(join(dir, "README.md"), "---\nlicense: mit\n---\n# resume test\n");
  return { dir, lfsBytes: Object.values(lfsSizes).reduce((a, b) => a + b, 0) };
}

/** sha256 of every file of `repo`@main as the hub serves it (resolve URLs), .gitattributes left out. */
async function servedTree(hub: LocalHub, repo: string): Promise<Record<string, string>> {
  const tree = (await fetch(`${hub.url}/api/models/${repo}/tree/main?recursive=true`).then((r) => r.json())) as Array<{ type: string; path: string }>;
  const out: Record<string, string> = {};
  for (const e of tree) {
    if (e.type !== "file" || e.path === ".gitattributes") continue;
    const body = Buffer.from(await (await fetch(`${hub.url}/${repo}/resolve/main/${e.path}`)).arrayBuffer());
    out[e.path] = createHash("sha256").update(body).digest("hex");
  }
  return out;
}

/** Resolves once `cond` holds, checking every millisecond (the hub runs in this process, so checks interleave with its reads). */
function when(cond: () => boolean, timeoutMs: number): Promise<void> {
  return new Promise((done, fail) => {
    const t0 = Date.now();
    const timer = setInterval(() => {
      if (cond()) {
        clearInterval(timer);
        done();
      } else if (Date.now() - t0 > timeoutMs) {
        clearInterval(timer);
        fail(new Error("condition not reached"));
      }
    }, 1);
  });
}

describe("a push killed mid-upload", () => {
  it("resumes sending exactly the bytes the server lacks; the repo ends byte-identical", async () => {
    const hub = await startHub({ chunkSize: PART });
    const { dir, lfsBytes } = await bigModel();
    await hubjs.createRepo({ repo: "local/resume", hubUrl: hub.url, accessToken: hub.token });
    const child = spawn(process.execPath, ["bin/megahub.js", "push", dir, "--repo", "local/resume", "--hub-url", hub.url, "--token", hub.token, "--json"], {
      cwd: ROOT,
      stdio: ["ignore", "ignore", "pipe"],
    });
    const exited = new Promise<number | null>((r) => child.on("exit", (code, signal) => r(signal === null ? code : -1)));
    // At most 2 files × 5 parts of 1 MiB plus 2 basic bodies are in flight (and may still arrive whole after the
    // kill): killing at 30% leaves part of the push unsent.
    await when(() => hub.stats.lfs.bytesReceived >= lfsBytes * 0.3, 60_000);
    child.kill("SIGKILL");
    expect(await exited).toBe(-1);
    await new Promise((r) => setTimeout(r, 100)); // let the server see the dead connections
    const first = hub.stats.lfs.bytesReceived;
    expect(first).toBeLessThan(lfsBytes); // killed mid-upload, not after it
    expect(hub.stats.commits).toBe(0);

    const r = await pushFolder({ dir, repo: "local/resume", hubUrl: hub.url, accessToken: hub.token });
    const second = hub.stats.lfs.bytesReceived - first;
    process.stderr.write(
      `resume: ${lfsBytes} LFS bytes; killed run sent ${first}, resumed run ${second} (${r.bytesResumed} held, ${hub.stats.lfs.resumed} uploads resumed at an offset)\n`,
    );
    // Every byte the server received was kept: the two runs together sent each LFS byte exactly once.
    expect(first + second).toBe(lfsBytes);
    expect(r.bytesResumed).toBeGreaterThan(0);
    expect(hub.stats.lfs.resumed).toBeGreaterThan(0); // parts cut mid-body were continued, not restarted
    expect(hub.stats.lfs.rejected).toBe(0);
    expect(r.commits).toHaveLength(1);
    const local = await digestTree(dir);
    expect(await servedTree(hub, "local/resume")).toEqual(local);
    expect(Object.keys(local)).toHaveLength(6);
  }, 120_000);

  it("against a server without resumable uploads, the next push uploads whole objects as before, and ends correct", async () => {
    const hub = await startHub({ chunkSize: PART, resumableUploads: false });
    const { dir, lfsBytes } = await bigModel();
    const abort = new AbortController();
    const failed = pushFolder({
      dir, repo: "local/plain", hubUrl: hub.url, accessToken: hub.token, abortSignal: abort.signal,
      onEvent: (e) => {
        if (e.type === "upload" && e.done >= lfsBytes * 0.4) abort.abort();
      },
    }).catch((e: unknown) => e);
    expect(await failed).toBeInstanceOf(Error);
    await new Promise((r) => setTimeout(r, 100));
    const first = hub.stats.lfs.bytesReceived;
    // Objects stored before the abort are skipped by the batch answer; the others must be sent whole again.
    let unstored = 0;
    for (const [path, size] of Object.entries(lfsSizes)) {
      const oid = createHash("sha256").update(await readFile(join(dir, path))).digest("hex");
      if (!existsSync(join(hub.dataDir, "lfs", "objects", oid.slice(0, 2), oid.slice(2, 4), oid))) unstored += size;
    }
    expect(unstored).toBeGreaterThan(0);
    const r = await pushFolder({ dir, repo: "local/plain", hubUrl: hub.url, accessToken: hub.token });
    expect(r.bytesResumed).toBe(0);
    expect(hub.stats.lfs.resumed).toBe(0);
    expect(hub.log.some((l) => l.method === "GET" && l.path.startsWith("/__megahub/lfs/"))).toBe(false); // never asked
    expect(hub.stats.lfs.bytesReceived - first).toBe(unstored);
    expect(await servedTree(hub, "local/plain")).toEqual(await digestTree(dir));
  }, 60_000);
});

describe("connections cut mid-part", () => {
  // Deterministic cuts inside part and basic bodies (a kill on loopback mostly lands between whole parts: the
  // kernel had already taken a 1 MiB body); the retry within the same push continues each at its offset.
  it.each([
    ["resumable", true],
    ["plain (a server without the extension)", false],
  ])("%s", async (_name, resumable) => {
    const hub = await startHub({ chunkSize: PART, resumableUploads: resumable });
    const { dir, lfsBytes } = await bigModel();
    const cut = 300_000;
    hub.faults.add(
      { match: /^PUT \/__megahub\/lfs\/[0-9a-f]+\/part\//, fault: { kind: "cut", afterBytes: cut }, times: 3, skip: 2 },
      { match: /^PUT \/__megahub\/lfs\/[0-9a-f]+$/, fault: { kind: "cut", afterBytes: cut }, times: 1 },
    );
    const { sleep } = fakeSleep();
    const r = await pushFolder({ dir, repo: "local/cut", hubUrl: hub.url, accessToken: hub.token, fetchOptions: { sleep } });
    expect(hub.faults.applied).toHaveLength(4);
    expect(r.retries).toBeGreaterThanOrEqual(4);
    const received = hub.stats.lfs.bytesReceived;
    if (resumable) {
      expect(received).toBe(lfsBytes); // nothing sent twice
      expect(hub.stats.lfs.resumed).toBe(4);
      expect(r.bytesResumed).toBeGreaterThanOrEqual(4 * cut);
      expect(r.bytesSent + r.bytesResumed).toBe(lfsBytes); // a failed attempt's bytes count as held, not sent
    } else {
      expect(received).toBeGreaterThanOrEqual(lfsBytes + 4 * cut); // each cut body sent again from its start
      expect(r.bytesResumed).toBe(0);
    }
    expect(await servedTree(hub, "local/cut")).toEqual(await digestTree(dir));
  });
});

describe("the resumable-upload protocol", () => {
  it("official clients get fresh upload URLs and no resume header, even for an object left half-sent", async () => {
    const hub = await startHub({ chunkSize: PART });
    await hubjs.createRepo({ repo: "local/mixed", hubUrl: hub.url, accessToken: hub.token });
    const body = randomBytes(3 * PART);
    const oid = createHash("sha256").update(body).digest("hex");
    const batch = async (resume: boolean) => {
      const res = await fetch(`${hub.url}/local/mixed.git/info/lfs/objects/batch`, {
        method: "POST",
        headers: { Authorization: `Bearer ${hub.token}`, "Content-Type": "application/vnd.git-lfs+json", ...(resume ? { "X-Megahub-Resume": "1" } : {}) },
        body: JSON.stringify({ operation: "upload", transfers: ["basic", "multipart"], objects: [{ oid, size: body.length }] }),
      });
      const json = (await res.json()) as { objects: Array<{ actions: { upload: { href: string; header: Record<string, string> } } }> };
      return { granted: res.headers.get("x-megahub-resume"), upload: json.objects[0]?.actions.upload };
    };
    const a = await batch(true);
    expect(a.granted).toBe("1");
    const part1 = a.upload?.header["00001"] as string;
    expect((await fetch(part1, { method: "PUT", body: body.subarray(0, PART) })).status).toBe(200);
    // A resumable batch call gets the same URLs again, and the part says what it holds.
    expect((await batch(true)).upload?.href).toBe(a.upload?.href);
    const status = (await (await fetch(part1)).json()) as { length: number; received: number; sha256: string };
    expect(status).toEqual({ length: PART, received: PART, sha256: createHash("sha256").update(body.subarray(0, PART)).digest("hex") });
    // A plain one (what @huggingface/hub and huggingface_hub send) gets its own URLs and no header.
    const plain = await batch(false);
    expect(plain.granted).toBeNull();
    expect(plain.upload?.href).not.toBe(a.upload?.href);
    // The official client uploads and commits the same object through its own URLs.
    await hubjs.uploadFile({ repo: "local/mixed", hubUrl: hub.url, accessToken: hub.token, useXet: false, file: { path: "w.bin", content: new Blob([body]) } });
    const got = Buffer.from(await (await fetch(`${hub.url}/local/mixed/resolve/main/w.bin`)).arrayBuffer());
    expect(got.equals(body)).toBe(true);
  });

  it("refuses bad offsets: garbage 400, a mismatch 409 with what the part holds", async () => {
    const hub = await startHub({ chunkSize: PART });
    await hubjs.createRepo({ repo: "local/offsets", hubUrl: hub.url, accessToken: hub.token });
    const body = randomBytes(2 * PART + 5);
    const oid = createHash("sha256").update(body).digest("hex");
    const res = await fetch(`${hub.url}/local/offsets.git/info/lfs/objects/batch`, {
      method: "POST",
      headers: { Authorization: `Bearer ${hub.token}`, "Content-Type": "application/vnd.git-lfs+json", "X-Megahub-Resume": "1" },
      body: JSON.stringify({ operation: "upload", objects: [{ oid, size: body.length }] }),
    });
    const up = ((await res.json()) as { objects: Array<{ actions: { upload: { header: Record<string, string> } } }> }).objects[0]?.actions.upload;
    const part2 = up?.header["00002"] as string;
    expect((await fetch(part2, { method: "PUT", body: body.subarray(PART, PART + 1000) })).status).toBe(400); // short: kept, refused
    expect(((await (await fetch(part2)).json()) as { received: number }).received).toBe(1000);
    for (const bad of ["-1", "abc", "1e3", String(PART + 1), "99999999999999999999"]) {
      const r = await fetch(part2, { method: "PUT", headers: { "X-Megahub-Offset": bad }, body: new Uint8Array(0) });
      expect(r.status, bad).toBe(400);
    }
    const mismatch = await fetch(part2, { method: "PUT", headers: { "X-Megahub-Offset": "500" }, body: body.subarray(PART + 500, 2 * PART) });
    expect(mismatch.status).toBe(409);
    expect(mismatch.headers.get("x-megahub-received")).toBe("1000");
    const rest = await fetch(part2, { method: "PUT", headers: { "X-Megahub-Offset": "1000" }, body: body.subarray(PART + 1000, 2 * PART) });
    expect(rest.status).toBe(200);
    expect(rest.headers.get("etag")).toBe(`"${createHash("sha256").update(body.subarray(PART, 2 * PART)).digest("hex").slice(0, 32)}"`);
    expect((await fetch(`${up?.header["00001"]}/x`)).status).toBe(405);
    expect((await fetch(up?.header["00001"]?.replace(/part\/1$/, "part/9") as string)).status).toBe(400);
  });
});

describe("the client's resume decision", () => {
  /** A fake upload URL that answers GET with `status` and records PUTs. */
  async function fakeTarget(status: (len: number) => unknown): Promise<{ url: string; puts: Array<{ offset: string | undefined; bytes: number }>; close: () => void }> {
    const puts: Array<{ offset: string | undefined; bytes: number }> = [];
    const server = createServer((req: IncomingMessage, res) => {
      if (req.method === "GET") {
        res.end(JSON.stringify(status(6000)));
        return;
      }
      let n = 0;
      req.on("data", (c: Buffer) => (n += c.length));
      req.on("end", () => {
        puts.push({ offset: req.headers["x-megahub-offset"] as string | undefined, bytes: n });
        res.writeHead(200, { ETag: '"x"' }).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/up`, puts, close: () => server.close() };
  }

  const blob = new Blob([randomBytes(6000)]);
  const prefixSha = async (n: number) => createHash("sha256").update(new Uint8Array(await blob.slice(0, n).arrayBuffer())).digest("hex");

  it.each([
    ["a true prefix: only the rest is sent", async () => ({ length: 6000, received: 2500, sha256: await prefixSha(2500) }), "2500", 3500],
    ["a whole part held: an empty body", async () => ({ length: 6000, received: 6000, sha256: await prefixSha(6000) }), "6000", 0],
    ["a prefix whose sha256 is not ours: all of it", async () => ({ length: 6000, received: 2500, sha256: "0".repeat(64) }), undefined, 6000],
    ["a different length: all of it", async () => ({ length: 5999, received: 2500, sha256: await prefixSha(2500) }), undefined, 6000],
    ["more held than the part: all of it", async () => ({ length: 6000, received: 7000, sha256: await prefixSha(6000) }), undefined, 6000],
    ["garbage: all of it", async () => "not json", undefined, 6000],
  ])("%s", async (_name, make, offset, bytes) => {
    const answer = await make();
    const t = await fakeTarget(() => answer);
    const agent = new Agent();
    try {
      const ups = new ResumableUploads(agent);
      const granted = new Response(JSON.stringify({ objects: [{ actions: { upload: { href: t.url } } }] }), { headers: { "x-megahub-resume": "1" } });
      await (await ups.noteBatch(granted)).json();
      expect(ups.has(t.url)).toBe(true);
      let sent = 0;
      const res = await ups.send(t.url, { method: "PUT" }, blob, (n) => (sent += n));
      expect(res.status).toBe(200);
      expect(t.puts).toEqual([{ offset, bytes }]);
      expect(sent).toBe(bytes);
    } finally {
      t.close();
      await agent.close();
    }
  });

  it("an answer without the grant header leaves uploads plain", async () => {
    const ups = new ResumableUploads(new Agent());
    await ups.noteBatch(new Response(JSON.stringify({ objects: [{ actions: { upload: { href: "http://x/up" } } }] })));
    expect(ups.has("http://x/up")).toBe(false);
  });
});
