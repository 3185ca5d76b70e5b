// Shared fixtures of the hub tests: temp folders, a tiny model folder, and a local hub that closes itself.
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative, sep } from "node:path";
import { startLocalHub, type LocalHub, type LocalHubOptions } from "../src/hub/server/index.js";

const cleanups: Array<() => Promise<void>> = [];

/** Call from afterEach/afterAll: closes hubs and removes temp folders made by this file's tests. */
export async function cleanup(): Promise<void> {
  while (cleanups.length > 0) await cleanups.pop()?.();
}

export async function tempDir(prefix = "megahub-hub-"): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  cleanups.push(() => rm(d, { recursive: true, force: true }));
  return d;
}

/** A local hub on a random loopback port with small multipart parts (1 MiB), so 3 MB files go multipart. */
export async function startHub(options: Partial<LocalHubOptions> = {}): Promise<LocalHub> {
  const hub = await startLocalHub({ dataDir: await tempDir("megahub-hubdata-"), chunkSize: 1 << 20, ...options });
  cleanups.push(() => hub.close());
  return hub;
}

/** `megahub hub serve <args>` as a child process (the CLI, not the library), resolved with its URL once it listens. */
export async function spawnHubServe(args: readonly string[]): Promise<{ url: string; server: ChildProcess }> {
  const server = spawn(process.execPath, [join(import.meta.dirname, "..", "bin", "megahub.js"), "hub", "serve", "--port", "0", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const url = await new Promise<string>((done, fail) => {
    let seen = "";
    const look = (c: Buffer) => {
      seen += c.toString();
      const m = /local hub on (http:\/\/\S+)/.exec(seen);
      if (m) done(m[1] as string);
    };
    server.stdout?.on("data", look);
    server.stderr?.on("data", look);
    server.once("exit", (code) => fail(new Error(`hub serve exited with ${code}: ${seen}`)));
  });
  return { url, server };
}

/** A safetensors file holding one F32 tensor "w" of shape [2, 4]: 8 parameters. */
export function tinySafetensors(): Buffer {
  const header = JSON.stringify({ w: { dtype: "F32", shape: [2, 4], data_offsets: [0, 32] }, __metadata__: { format: "pt" } });
  const padded = Buffer.from(header.padEnd(Math.ceil(header.length / 8) * 8, " "));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(padded.length));
  const data = Buffer.from(new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]).buffer);
  return Buffer.concat([len, padded, data]);
}

/**
 * A model folder: model.safetensors, config.json, README.md, a tokenizer JSON in a sub-folder, and a 3 MB
 * binary (multipart with 1 MiB parts). Random bytes make each folder's LFS objects distinct. `extra` adds
 * files, or removes a default one with null.
 */
export async function modelDir(extra: Record<string, Buffer | string | null> = {}): Promise<string> {
  const dir = await tempDir("megahub-model-");
  const files: Record<string, Buffer | string | null> = {
    "model.safetensors": tinySafetensors(),
    "config.json": JSON.stringify({ model_type: "openba", d_model: 4 }, null, 2),
    "README.md": "---\nlicense: apache-2.0\n---\n# test model\n",
    "tokenizer/tokenizer_config.json": JSON.stringify({ model_max_length: 512 }),
    "extra/weights.bin": randomBytes(3 * 1024 * 1024 + 123),
    ...extra,
  };
  for (const [path, content] of Object.entries(files)) {
    if (content === null) continue; // null leaves a default file out
    await mkdir(join(dir, ...path.split("/").slice(0, -1)), { recursive: true });
    await writeFile(join(dir, ...path.split("/")), content);
  }
  return dir;
}

/** Every file under `dir` as path → sha256, for byte-equality checks. */
export async function digestTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (at: string) => {
    for (const e of await readdir(at, { withFileTypes: true })) {
      const abs = join(at, e.name);
      if (e.isDirectory()) await walk(abs);
      else out[relative(dir, abs).split(sep).join("/")] = createHash("sha256").update(await readFile(abs)).digest("hex");
    }
  };
  await walk(dir);
  return out;
}

/** A sleep that does not wait, recording what it was asked to wait. */
export function fakeSleep(): { sleep: (ms: number) => Promise<void>; delays: number[] } {
  const delays: number[] = [];
  return { delays, sleep: async (ms: number) => void delays.push(ms) };
}
