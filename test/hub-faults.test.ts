import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isMegahubError } from "../src/errors.js";
import { pullRepo, type PullEvent } from "../src/hub/pull-repo.js";
import { pushFolder, type PushEvent } from "../src/hub/push-folder.js";
import { backoffDelay, DEFAULT_RETRY_POLICY, isRetryableStatus, parseRetryAfter } from "../src/hub/retry.js";
import { cleanup, digestTree, fakeSleep, modelDir, startHub, tempDir } from "./hub-helpers.js";

afterEach(cleanup);

describe("retry policy", () => {
  it("parses Retry-After as seconds or an HTTP date", () => {
    expect(parseRetryAfter("3")).toBe(3000);
    expect(parseRetryAfter("0.5")).toBe(500);
    expect(parseRetryAfter(new Date(10_000).toUTCString(), 4_000)).toBe(6_000);
    expect(parseRetryAfter("soon")).toBeUndefined();
    expect(parseRetryAfter(null)).toBeUndefined();
  });

  it("backs off exponentially with jitter inside [step/2, step], capped", () => {
    const p = { ...DEFAULT_RETRY_POLICY, baseDelayMs: 100, maxDelayMs: 1000 };
    expect(backoffDelay(0, p, () => 0)).toBe(50);
    expect(backoffDelay(0, p, () => 1)).toBe(100);
    expect(backoffDelay(3, p, () => 0.5)).toBe(600);
    expect(backoffDelay(10, p, () => 1)).toBe(1000);
  });

  it("retries 408, 429 and 5xx except 501, never 4xx client errors", () => {
    expect([408, 429, 500, 502, 503, 504].every(isRetryableStatus)).toBe(true);
    expect([400, 401, 403, 404, 409, 412, 413, 501].some(isRetryableStatus)).toBe(false);
  });
});

describe("push through a failing hub", () => {
  it("retries 503 and 429 with Retry-After on every phase, waiting what the server asked", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    hub.faults.add(
      { match: /^GET \/api\/whoami-v2/, fault: { kind: "status", status: 503 }, times: 2 },
      { match: /^POST \/api\/models\/local\/flaky\/preupload\//, fault: { kind: "status", status: 429, retryAfter: 2 }, times: 1 },
      { match: /\.git\/info\/lfs\/objects\/batch$/, fault: { kind: "status", status: 502 }, times: 1 },
      { match: /^PUT \/__megahub\/lfs\//, fault: { kind: "status", status: 503, retryAfter: 1 }, times: 3 },
      { match: /^POST \/api\/models\/local\/flaky\/commit\//, fault: { kind: "status", status: 500 }, times: 2 },
    );
    const { sleep, delays } = fakeSleep();
    const events: PushEvent[] = [];
    const r = await pushFolder({
      dir, repo: "local/flaky", hubUrl: hub.url, accessToken: hub.token,
      fetchOptions: { sleep }, onEvent: (e) => events.push(e),
    });
    expect(hub.faults.applied).toHaveLength(9);
    expect(r.retries).toBe(9);
    expect(delays).toContain(2000); // Retry-After: 2 on the 429
    expect(delays.filter((d) => d === 1000)).toHaveLength(3); // Retry-After: 1 on each 503 PUT
    expect(events.filter((e) => e.type === "retry")).toHaveLength(9);
    expect(r.commits).toHaveLength(1);
    const out = join(await tempDir(), "pulled");
    await pullRepo({ repo: "local/flaky", out, hubUrl: hub.url });
    const pulled = await digestTree(out);
    delete pulled[".gitattributes"];
    expect(pulled).toEqual(await digestTree(dir));
    // Byte progress stayed true across the retried PUTs (failed attempts are taken back).
    expect(events.filter((e) => e.type === "upload").at(-1)).toEqual({ type: "upload", done: r.uploadBytes, total: r.uploadBytes });
  });

  it("survives dropped connections on uploads and parts", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    hub.faults.add({ match: /^PUT \/__megahub\/lfs\//, fault: { kind: "drop" }, times: 3, skip: 1 });
    const { sleep } = fakeSleep();
    const r = await pushFolder({ dir, repo: "local/drops", hubUrl: hub.url, accessToken: hub.token, fetchOptions: { sleep } });
    expect(hub.faults.applied).toHaveLength(3);
    expect(r.retries).toBeGreaterThanOrEqual(3);
    expect(hub.stats.lfs.objectsStored).toBe(2);
  });

  it("a commit whose answer is lost is confirmed from the tree, not committed twice", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    hub.faults.add({ match: /^POST \/api\/models\/local\/lostans\/commit\//, fault: { kind: "drop-response" }, times: 1 });
    const { sleep } = fakeSleep();
    const events: PushEvent[] = [];
    const r = await pushFolder({
      dir, repo: "local/lostans", hubUrl: hub.url, accessToken: hub.token, fetchOptions: { sleep },
      onEvent: (e) => events.push(e),
    });
    expect(hub.faults.applied).toEqual(["POST /api/models/local/lostans/commit/main → drop-response"]);
    expect(events.find((e) => e.type === "commit")).toMatchObject({ recovered: true });
    expect(hub.stats.commits).toBe(1); // the retry hit the moved head (412) and was not applied
    const info = await fetch(`${hub.url}/api/models/local/lostans/revision/main`).then((x) => x.json() as Promise<{ sha: string }>);
    expect(r.commits[0]?.oid).toBe(info.sha);
  });

  it("a commit that keeps failing leaves the repo as it was, and the next run completes it", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    hub.faults.add({ match: /\/commit\//, fault: { kind: "status", status: 503 }, times: 100 });
    const { sleep } = fakeSleep();
    const failed = await pushFolder({
      dir, repo: "local/down", hubUrl: hub.url, accessToken: hub.token,
      fetchOptions: { sleep, retry: { maxRetries: 2 } },
    }).catch((e: unknown) => e);
    expect(isMegahubError(failed)).toBe(true);
    expect((failed as Error).message).toMatch(/503.*run again/);
    const tree = await fetch(`${hub.url}/api/models/local/down/tree/main?recursive=true`).then((x) => x.json() as Promise<unknown[]>);
    expect(tree).toHaveLength(1); // only .gitattributes: no partial commit is visible
    hub.faults.clear();
    const putsBefore = hub.stats.lfs.puts;
    const r = await pushFolder({ dir, repo: "local/down", hubUrl: hub.url, accessToken: hub.token });
    expect(r.commits).toHaveLength(1);
    expect(hub.stats.lfs.puts).toBe(putsBefore);
  });

  it("gives up on a Retry-After longer than the policy allows, saying to run again", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    hub.faults.add({ match: /preupload/, fault: { kind: "status", status: 429, retryAfter: 3600 }, times: 1 });
    const { sleep, delays } = fakeSleep();
    const e = await pushFolder({ dir, repo: "local/limited", hubUrl: hub.url, accessToken: hub.token, fetchOptions: { sleep } }).catch(
      (x: unknown) => x,
    );
    expect(delays).toEqual([]);
    expect((e as Error).message).toMatch(/429.*rate-limited/);
  });
});

describe("pull through a failing hub", () => {
  const bigPath = /^GET \/local\/cut\/resolve\/[0-9a-f]+\/extra\/weights\.bin$/;

  it("resumes a download cut mid-body with a Range request", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    await pushFolder({ dir, repo: "local/cut", hubUrl: hub.url, accessToken: hub.token });
    hub.faults.add({ match: bigPath, fault: { kind: "truncate", afterBytes: 1_000_000 }, times: 2 });
    const events: PullEvent[] = [];
    const out = join(await tempDir(), "pulled");
    const r = await pullRepo({ repo: "local/cut", out, hubUrl: hub.url, onEvent: (e) => events.push(e) });
    expect(r.resumed).toEqual(["extra/weights.bin"]);
    const ranges = hub.log.filter((l) => /weights\.bin$/.test(l.path)).map((l) => l.range);
    expect(ranges[0]).toBeUndefined();
    expect(ranges.slice(1)).toHaveLength(2);
    for (const rg of ranges.slice(1)) expect(Number(/^bytes=(\d+)-$/.exec(rg ?? "")?.[1])).toBeGreaterThan(0);
    const pulled = await digestTree(out);
    expect(pulled["extra/weights.bin"]).toBe((await digestTree(dir))["extra/weights.bin"]);
  });

  it("a pull that fails keeps its partial file; the next run resumes it and `out` appears only then", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    await pushFolder({ dir, repo: "local/cut", hubUrl: hub.url, accessToken: hub.token });
    hub.faults.add({ match: bigPath, fault: { kind: "truncate", afterBytes: 1_500_000 }, times: 1 });
    const parent = await tempDir();
    const out = join(parent, "pulled");
    const failed = await pullRepo({ repo: "local/cut", out, hubUrl: hub.url, maxResumes: 0 }).catch((e: unknown) => e);
    expect(isMegahubError(failed)).toBe(true);
    await expect(stat(out)).rejects.toThrow();
    const staging = (await readdir(parent)).find((n) => n.startsWith(".pulled.tmp-pull-"));
    expect(staging).toBeDefined();
    const parts = (await readdir(join(parent, staging as string, "objects"))).filter((n) => n.endsWith(".part"));
    expect(parts).toHaveLength(1);

    const r = await pullRepo({ repo: "local/cut", out, hubUrl: hub.url });
    expect(r.resumed).toEqual(["extra/weights.bin"]);
    expect(r.bytesDownloaded).toBeLessThan(r.bytes);
    const last = hub.log.filter((l) => /weights\.bin$/.test(l.path)).at(-1);
    expect(last?.range).toMatch(/^bytes=[1-9]\d*-$/);
    const pulled = await digestTree(out);
    delete pulled[".gitattributes"];
    expect(pulled).toEqual(await digestTree(dir));
    expect((await readdir(parent)).filter((n) => n.includes(".tmp-pull-"))).toEqual([]); // staging removed
  });

  it("refuses bytes that do not match the Hub's sha256, leaving no output", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    await pushFolder({ dir, repo: "local/rot", hubUrl: hub.url, accessToken: hub.token });
    // Corrupt the stored object behind the server's back (bit rot, a bad mirror).
    const sha = (await digestTree(dir))["extra/weights.bin"] as string;
    const object = join(hub.dataDir, "lfs", "objects", sha.slice(0, 2), sha.slice(2, 4), sha);
    const bytes = await readFile(object);
    bytes[1000] = (bytes[1000] ?? 0) ^ 0xff;
    await writeFile(object, bytes);
    const out = join(await tempDir(), "pulled");
    const e = await pullRepo({ repo: "local/rot", out, hubUrl: hub.url }).catch((x: unknown) => x);
    expect((e as Error).message).toMatch(/extra\/weights\.bin.*sha256 .* does not match/);
    await expect(stat(out)).rejects.toThrow();
  });
});
