/**
 * Publishing safely: a lost answer to an upload is recovered by asking the Hub whether it stored the object; a
 * re-push removes the weight files the new folder supersedes; --include/--exclude select files; a folder whose
 * last verification failed is refused unless forced; a dry run previews the card.
 */
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isMegahubError } from "../src/errors.js";
import { pushFolder, type PushEvent } from "../src/hub/push-folder.js";
import { globMatch, planDeletes } from "../src/hub/push-select.js";
import { cleanup, fakeSleep, modelDir, startHub, tinySafetensors } from "./hub-helpers.js";

afterEach(cleanup);

async function repoFiles(url: string, repo: string): Promise<string[]> {
  const r = await fetch(`${url}/api/models/${repo}/tree/main?recursive=true`);
  const list = (await r.json()) as { path: string; type: string }[];
  return list.filter((e) => e.type === "file").map((e) => e.path).sort();
}

describe("a lost answer to an upload", () => {
  it.each([
    ["basic PUT", /^PUT \/__megahub\/lfs\/[0-9a-f]+$/],
    ["multipart /complete", /^POST \/__megahub\/lfs\/[0-9a-f]+\/complete$/],
  ])("%s: the retry finds the object stored and the push goes on", async (_name, match) => {
    const hub = await startHub({ chunkSize: 1 << 20 });
    const dir = await modelDir();
    hub.faults.add({ match, fault: { kind: "drop-response" }, times: 1 });
    const { sleep } = fakeSleep();
    const r = await pushFolder({ dir, repo: "local/lost", hubUrl: hub.url, accessToken: hub.token, fetchOptions: { sleep } });
    expect(hub.faults.applied).toHaveLength(1);
    expect(r.commits).toHaveLength(1);
    expect(await repoFiles(hub.url, "local/lost")).toContain("extra/weights.bin");
  });
});

describe("globs and delete plans", () => {
  it.each([
    ["*.safetensors", "model-00001-of-00002.safetensors", true],
    ["*.safetensors", "sub/model.safetensors", true], // fnmatch: * crosses /
    ["extra/*", "extra/weights.bin", true],
    ["model-0000?-of-*.safetensors", "model-00002-of-00003.safetensors", true],
    ["[mc]onfig.json", "config.json", true],
    ["[!c]onfig.json", "config.json", false],
    ["*.bin", "weights.binx", false],
    ["*a*a*a*a*a*a*a*a*a*b", "a".repeat(5000), false],
  ])("%s ~ %s → %s", (g, p, want) => expect(globMatch(g, p)).toBe(want));

  it("supersedes old weight files only when the folder has weights, never outside the selection", () => {
    const remote = ["model.safetensors", "config.json", ".gitattributes", "notes.txt", "pytorch_model.bin"];
    const local = new Set(["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json", "config.json"]);
    expect(planDeletes(remote, local, {})).toEqual({ paths: ["model.safetensors", "pytorch_model.bin"], superseded: ["model.safetensors", "pytorch_model.bin"] });
    expect(planDeletes(remote, local, { keepSuperseded: true }).paths).toEqual([]);
    expect(planDeletes(remote, local, { delete: ["*.txt"], exclude: ["*.bin"] }).paths).toEqual(["model.safetensors", "notes.txt"]);
    expect(planDeletes(remote, new Set(["config.json"]), {}).paths).toEqual([]); // no weights here: nothing superseded
  });
});

describe("re-publishing", () => {
  it("a sharded re-push removes the stale single file (with a notice); --keep-superseded keeps it", async () => {
    const hub = await startHub();
    const single = await modelDir({ "extra/weights.bin": null, "README.md": null });
    await pushFolder({ dir: single, repo: "local/republish", hubUrl: hub.url, accessToken: hub.token, card: "never" });
    expect(await repoFiles(hub.url, "local/republish")).toContain("model.safetensors");
    const sharded = await modelDir({
      "model.safetensors": null, "extra/weights.bin": null, "README.md": null,
      "model-00001-of-00002.safetensors": tinySafetensors(),
      "model-00002-of-00002.safetensors": tinySafetensors(),
      "model.safetensors.index.json": JSON.stringify({ metadata: {}, weight_map: {} }),
    });
    const dry = await pushFolder({ dir: sharded, repo: "local/republish", hubUrl: hub.url, dryRun: true, card: "never", keepSuperseded: true });
    expect(dry.deleted).toEqual([]);
    const events: PushEvent[] = [];
    const r = await pushFolder({ dir: sharded, repo: "local/republish", hubUrl: hub.url, accessToken: hub.token, card: "never", onEvent: (e) => events.push(e) });
    expect(r.superseded).toEqual(["model.safetensors"]);
    expect(events).toContainEqual({ type: "delete", paths: ["model.safetensors"], superseded: ["model.safetensors"] });
    const files = await repoFiles(hub.url, "local/republish");
    expect(files).not.toContain("model.safetensors");
    expect(files).toEqual(expect.arrayContaining(["model-00001-of-00002.safetensors", "model.safetensors.index.json"]));
    expect(r.commits).toHaveLength(1); // the removal rode with the upload
  });

  it("--include/--exclude select what is pushed", async () => {
    const hub = await startHub();
    const dir = await modelDir();
    const r = await pushFolder({ dir, repo: "local/select", hubUrl: hub.url, accessToken: hub.token, card: "never", include: ["*.json", "*.safetensors"], exclude: ["tokenizer/*"] });
    expect(r.uploaded.sort()).toEqual(["config.json", "model.safetensors"]);
    expect((await repoFiles(hub.url, "local/select")).filter((f) => f !== ".gitattributes")).toEqual(["config.json", "model.safetensors"]);
  });

  it("refuses a folder whose last verification failed unless forced; a dry run previews the card", async () => {
    const hub = await startHub();
    const dir = await modelDir({ "README.md": null });
    const record = { at: "2026-01-01T00:00:00Z", kind: "reference", reference: "ref.safetensors", provider: "cpu", dtype: "F32", maxAbsDiff: 1, top1Agreement: 0.5 };
    const manifest = (passed: boolean[]) => ({ megahub: "0.1.0", architecture: "openba", model: {}, lineage: [], files: {}, verification: passed.map((p) => ({ ...record, passed: p })) });
    await writeFile(join(dir, "megahub.json"), JSON.stringify(manifest([true, false])));
    const push = (force?: boolean) => pushFolder({ dir, repo: "local/gate", hubUrl: hub.url, accessToken: hub.token, ...(force ? { force } : {}) });
    const err = await push().catch((e: unknown) => e);
    expect(isMegahubError(err) && err.code === "VERIFY" && /FAILED.*--force/.test(err.message)).toBe(true);
    const dry = await pushFolder({ dir, repo: "local/gate", hubUrl: hub.url, dryRun: true });
    expect(dry.cardPreview).toMatch(/^---\n/);
    expect((await push(true)).commits).toHaveLength(1);
    await writeFile(join(dir, "megahub.json"), JSON.stringify(manifest([false, true])));
    await rm(join(dir, "config.json"));
    expect((await push()).commits).toHaveLength(1); // the last check passed: allowed
  });
});
