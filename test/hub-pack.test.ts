import { createWriteStream } from "node:fs";
import { readFile, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";
import { pack as tarPack } from "tar-stream";
import { afterEach, describe, expect, it, vi } from "vitest";
import { main } from "../src/cli/main.js";
import { isMegahubError } from "../src/errors.js";
import { indexTar } from "../src/formats/tar/index.js";
import { PACK_MANIFEST, packDir } from "../src/formats/tar/pack.js";
import { unpackTar } from "../src/formats/tar/unpack.js";
import { FileSource } from "../src/io/byte-source.js";
import { cleanup, digestTree, modelDir, tempDir } from "./hub-helpers.js";

afterEach(cleanup);

/** Writes a tar by hand (tar-stream), for archives megahub itself would never make. */
async function handTar(path: string, members: Array<{ name: string; body?: string; type?: "file" | "symlink" | "directory"; linkname?: string }>) {
  const p = tarPack();
  const done = pipeline(p, createWriteStream(path));
  for (const m of members) {
    const type = m.type ?? "file";
    const body = Buffer.from(type === "file" ? (m.body ?? "") : "");
    p.entry({ name: m.name, type, size: body.length, ...(m.linkname ? { linkname: m.linkname } : {}) }, body);
  }
  p.finalize();
  await done;
}

describe("pack / unpack", () => {
  it("round-trips a folder byte for byte, and the tar's members are readable in place", async () => {
    const dir = await modelDir();
    const work = await tempDir();
    const tar = join(work, "model.tar");
    const packed = await packDir(dir, tar);
    expect(packed.files).toBe(5);
    const source = await FileSource.open(tar);
    try {
      const members = await indexTar(source);
      expect(members.map((m) => m.name)).toEqual([
        "README.md", "config.json", "extra/weights.bin", "model.safetensors", "tokenizer/tokenizer_config.json", PACK_MANIFEST,
      ]);
      const st = members.find((m) => m.name === "model.safetensors");
      expect(Buffer.from((await st?.source.read(0, st.size)) ?? [])).toEqual(await readFile(join(dir, "model.safetensors")));
    } finally {
      await source.close();
    }

    const out = join(work, "out");
    const r = await unpackTar(tar, out);
    expect(r.files).toBe(5);
    expect(await digestTree(out)).toEqual(await digestTree(dir));
  });

  it("detects a tampered member and leaves no output", async () => {
    const dir = await modelDir();
    const work = await tempDir();
    const tar = join(work, "model.tar");
    await packDir(dir, tar);
    const bytes = await readFile(tar);
    const at = await offsetOf(tar, "config.json");
    bytes[at + 2] = (bytes[at + 2] ?? 0) ^ 0x20; // one flipped bit inside the member's data, headers intact
    await writeFile(tar, bytes);
    const out = join(work, "out");
    const e = await unpackTar(tar, out).catch((x: unknown) => x);
    expect(isMegahubError(e) && e.code === "FORMAT").toBe(true);
    expect((e as Error).message).toMatch(/config\.json does not match the manifest.*altered/);
    await expect(stat(out)).rejects.toThrow();
    expect((await readdir(work)).filter((n) => n.includes(".tmp-"))).toEqual([]);
  });

  it("refuses traversal names, links, a missing manifest and an existing output", async () => {
    const work = await tempDir();
    const cases: Array<[string, Parameters<typeof handTar>[1], RegExp]> = [
      ["dotdot", [{ name: "../evil.txt", body: "x" }], /refusing member "\.\.\/evil\.txt"/],
      ["abs", [{ name: "/etc/evil", body: "x" }], /refusing member "\/etc\/evil": the path is absolute/],
      ["nested", [{ name: "a/../../evil", body: "x" }], /refusing member/],
      ["link", [{ name: "ln", type: "symlink", linkname: "/etc/passwd" }], /refusing symlink member "ln"/],
      ["nomanifest", [{ name: "a.txt", body: "x" }], /no \.megahub-pack\.json member/],
      // Object.prototype's names are not manifest entries: an unlisted member must not slip through unverified.
      ["prototype", [{ name: "constructor", body: "x" }, { name: PACK_MANIFEST, body: JSON.stringify({ format: "megahub-pack/1", files: {} }) }], /constructor is in the tar but not in its manifest/],
    ];
    for (const [name, members, message] of cases) {
      const tar = join(work, `${name}.tar`);
      await handTar(tar, members);
      const out = join(work, `out-${name}`);
      const e = await unpackTar(tar, out).catch((x: unknown) => x);
      expect((e as Error).message, name).toMatch(message);
      await expect(stat(out), name).rejects.toThrow();
    }
    expect(await readdir(work)).not.toContain("evil.txt");
    const dir = await modelDir();
    await expect(packDir(dir, join(work, "dotdot.tar"))).rejects.toThrow(/already exists/);
    await expect(packDir(dir, join(dir, "inside.tar"))).rejects.toThrow(/inside the folder/);
  });
});

describe("megahub pack / unpack commands", () => {
  it("exit 0 on a round trip, 1 on a tampered tar, with --json results", async () => {
    const dir = await modelDir();
    const work = await tempDir();
    const printed: string[] = [];
    const spy = vi.spyOn(process.stdout, "write").mockImplementation((c: unknown) => (printed.push(String(c)), true));
    const spyErr = vi.spyOn(process.stderr, "write").mockImplementation((c: unknown) => (printed.push(String(c)), true));
    let codes: number[];
    try {
      codes = [await main(["pack", dir, "--out", join(work, "m.tar"), "--json"])];
      codes.push(await main(["unpack", join(work, "m.tar"), "--out", join(work, "u"), "--json"]));
      const bytes = await readFile(join(work, "m.tar"));
      const at = await offsetOf(join(work, "m.tar"), "model.safetensors");
      bytes[at + 40] = (bytes[at + 40] ?? 0) ^ 1;
      await writeFile(join(work, "bad.tar"), bytes);
      codes.push(await main(["unpack", join(work, "bad.tar"), "--out", join(work, "v")]));
    } finally {
      spy.mockRestore();
      spyErr.mockRestore();
    }
    expect(codes).toEqual([0, 0, 1]);
    expect(JSON.parse(printed[0] ?? "{}")).toMatchObject({ ok: true, files: 5 });
    expect(printed.join("")).toMatch(/model\.safetensors does not match the manifest/);
    expect(await digestTree(join(work, "u"))).toEqual(await digestTree(dir));
  });
});

/** Byte offset of a member's data, by walking the ustar headers (indexTar hides offsets behind its sources). */
async function offsetOf(tar: string, name: string): Promise<number> {
  const bytes = await readFile(tar);
  let pos = 0;
  while (pos + 512 <= bytes.length) {
    const header = bytes.subarray(pos, pos + 512);
    const n = header.subarray(0, 100).toString("utf8").replace(/\0.*$/s, "");
    const size = parseInt(header.subarray(124, 136).toString("utf8").replace(/\0.*$/s, "").trim() || "0", 8);
    if (n === name) return pos + 512;
    pos += 512 + Math.ceil(size / 512) * 512;
  }
  throw new Error(`${name} not in ${tar}`);
}
