import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { HubApiError } from "@huggingface/hub";
import { afterEach, describe, expect, it } from "vitest";
import { resolveHubUrl, resolveToken, tokenFilePath } from "../src/hub/config.js";
import { planCommits } from "../src/hub/plan-commits.js";
import { redact, toHubError } from "../src/hub/redact.js";
import { cleanup, tempDir } from "./hub-helpers.js";

afterEach(cleanup);

describe("token lookup", () => {
  it("prefers --token, then HF_TOKEN, then the token file", async () => {
    const home = await tempDir();
    await mkdir(join(home, ".cache", "huggingface"), { recursive: true });
    await writeFile(join(home, ".cache", "huggingface", "token"), "hf_fromFile\n");
    expect(await resolveToken({ explicit: "hf_flag", env: { HF_TOKEN: "hf_env" }, home })).toEqual({ token: "hf_flag", source: "--token" });
    expect(await resolveToken({ env: { HF_TOKEN: "hf_env" }, home })).toEqual({ token: "hf_env", source: "HF_TOKEN" });
    expect(await resolveToken({ env: {}, home })).toEqual({
      token: "hf_fromFile",
      source: `token file ${join(home, ".cache", "huggingface", "token")}`,
    });
    expect(await resolveToken({ env: {}, home: await tempDir() })).toBeUndefined();
  });

  it("finds the token file through HF_TOKEN_PATH, HF_HOME and XDG_CACHE_HOME", () => {
    expect(tokenFilePath({ HF_TOKEN_PATH: "/a/tok", HF_HOME: "/b" }, "/h")).toBe("/a/tok");
    expect(tokenFilePath({ HF_HOME: "/b" }, "/h")).toBe(join("/b", "token"));
    expect(tokenFilePath({ XDG_CACHE_HOME: "/c" }, "/h")).toBe(join("/c", "huggingface", "token"));
    expect(tokenFilePath({}, "/h")).toBe(join("/h", ".cache", "huggingface", "token"));
  });

  it("refuses a token without hf_ and never repeats it", async () => {
    const e = await resolveToken({ env: { HF_TOKEN: "ghp_secretvalue123" } }).catch((x: unknown) => x);
    expect((e as Error).message).toMatch(/from HF_TOKEN is not a Hugging Face token/);
    expect((e as Error).message).not.toContain("ghp_secretvalue123");
  });
});

describe("hub URL", () => {
  it("takes --hub-url, then HF_ENDPOINT, without a trailing slash", () => {
    expect(resolveHubUrl(undefined, {})).toBe("https://huggingface.co");
    expect(resolveHubUrl(undefined, { HF_ENDPOINT: "http://127.0.0.1:8080/" })).toBe("http://127.0.0.1:8080");
    expect(resolveHubUrl("https://mirror.example/hub/", { HF_ENDPOINT: "http://x" })).toBe("https://mirror.example/hub");
    expect(() => resolveHubUrl("ftp://x", {})).toThrow(/http or https/);
    expect(() => resolveHubUrl("https://user:hf_pw@x", {})).toThrow(/must not contain credentials/);
  });
});

describe("redaction", () => {
  it("masks tokens, bearer values, upload tickets and signed queries", () => {
    const text =
      "Authorization: Bearer hf_abcdefgh failed at http://h/__megahub/lfs/0123456789abcdef0123 and " +
      "https://s3.example/obj?X-Amz-Signature=deadbeef&X-Amz-Credential=abc with token hf_zzzzzzzzzz";
    const out = redact(text);
    expect(out).not.toMatch(/hf_abcdefgh|hf_zzzzzzzzzz|0123456789abcdef0123|deadbeef/);
    expect(out).toContain("/__megahub/lfs/***");
    expect(out).toContain("https://s3.example/obj?***");
  });

  it("turns a HubApiError into one line with a hint and no secret", () => {
    const err = new HubApiError("http://h/api/x", 401, "req1", "Invalid token hf_leakyleaky\n<html>\n</html>. URL: http://h/api/x");
    const m = toHubError(err, "creating repo a/b", ["hf_leakyleaky"]).message;
    expect(m).toMatch(/^creating repo a\/b: the Hub answered 401: .*\(the token is missing or not valid/);
    expect(m).not.toContain("hf_leakyleaky");
    expect(m).not.toContain("\n");
  });
});

describe("commit planning", () => {
  it("puts LFS files first and the card last, and splits under every limit", () => {
    const files = [
      { path: "README.md", size: 10 },
      { path: "config.json", size: 10 },
      { path: "model-00001-of-00002.safetensors", size: 600 },
      { path: "model-00002-of-00002.safetensors", size: 600 },
      { path: "tokenizer.json", size: 300 },
      { path: "vocab.txt", size: 300 },
    ];
    const plan = planCommits(files, { maxFiles: 10, maxRegularBytes: 400, maxLfsBytes: 1000 });
    expect(plan.map((c) => c.map((f) => f.path))).toEqual([
      ["model-00001-of-00002.safetensors"],
      ["model-00002-of-00002.safetensors", "tokenizer.json"],
      ["vocab.txt", "config.json", "README.md"],
    ]);
    expect(planCommits(files, { maxFiles: 4, maxRegularBytes: 1e9, maxLfsBytes: 1e9 }).map((c) => c.length)).toEqual([4, 2]);
  });
});
