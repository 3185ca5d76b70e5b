/**
 * Installing the packed megahub as a user would: no onnxruntime-node CUDA download (it would fail offline), the demo
 * runs from the installed package, and scripts/preinstall.cjs leaves ORT's script alone when the user asked for it.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "..");
const work = mkdtempSync(join(tmpdir(), "megahub-install-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** The environment of a user's shell: none of this project's npm config, and ORT's downloader pointed at a dead proxy
 * so that an attempted CUDA download fails at once, connected or not. */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(npm_|ONNXRUNTIME_NODE_INSTALL|INIT_CWD)/i.test(k)) env[k] = v;
  return { ...env, GLOBAL_AGENT_HTTP_PROXY: "http://127.0.0.1:9", GLOBAL_AGENT_HTTPS_PROXY: "http://127.0.0.1:9", ...extra };
}

const UPSTREAM = "require('fs').writeFileSync(require('path').join(__dirname, 'ran'), 'upstream');\n";

/** A package root with the preinstall script and a stand-in onnxruntime-node whose install.js leaves a marker. */
function fakeTree(name: string): { root: string; script: string } {
  const root = join(work, name);
  mkdirSync(join(root, "scripts"), { recursive: true });
  copyFileSync(join(ROOT, "scripts", "preinstall.cjs"), join(root, "scripts", "preinstall.cjs"));
  const ort = join(root, "node_modules", "onnxruntime-node");
  mkdirSync(join(ort, "script"), { recursive: true });
  writeFileSync(join(ort, "package.json"), JSON.stringify({ name: "onnxruntime-node", version: "1.29.0" }));
  writeFileSync(join(ort, "script", "install.js"), UPSTREAM);
  return { root, script: join(ort, "script") };
}

function node(args: string[], cwd: string, env: NodeJS.ProcessEnv) {
  return spawnSync(process.execPath, args, { cwd, env, encoding: "utf8" });
}

describe("scripts/preinstall.cjs", () => {
  it.each([
    ["no flag: ORT's download is switched off", {}, false],
    ["ONNXRUNTIME_NODE_INSTALL=cuda12: ORT's script kept", { ONNXRUNTIME_NODE_INSTALL: "cuda12" }, true],
    ["npm config onnxruntime-node-install: ORT's script kept", { npm_config_onnxruntime_node_install: "skip" }, true],
    ["megahub's own checkout (allowScripts decides there): ORT's script kept", { npm_package_json: "ROOT/package.json", npm_config_local_prefix: "ROOT" }, true],
  ])("%s", (title, given: Record<string, string>, kept) => {
    const { root, script } = fakeTree(title.replace(/\W+/g, "-"));
    const flags = Object.fromEntries(Object.entries(given).map(([k, v]) => [k, v.replace("ROOT", root)]));
    const r = node(["scripts/preinstall.cjs"], root, userEnv(flags));
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(join(script, "install.js"), "utf8") === UPSTREAM).toBe(kept);
    // What npm then runs as ORT's postinstall.
    const post = node(["./install.js"], script, userEnv(flags));
    expect(post.status, post.stderr).toBe(0);
    expect(existsSync(join(script, "ran"))).toBe(kept);
    if (kept) return;
    expect(readFileSync(join(script, "install-upstream.js"), "utf8")).toBe(UPSTREAM);
    // Asking ORT explicitly later still reaches its own script; a second preinstall changes nothing.
    expect(node(["./install.js", "--onnxruntime-node-install=cuda12"], script, userEnv()).status).toBe(0);
    expect(existsSync(join(script, "ran"))).toBe(true);
    const before = readFileSync(join(script, "install.js"), "utf8");
    expect(node(["scripts/preinstall.cjs"], root, userEnv()).status).toBe(0);
    expect(readFileSync(join(script, "install.js"), "utf8")).toBe(before);
    expect(readdirSync(script).sort()).toEqual(["install-upstream.js", "install.js", "ran"]);
  });

  it("never fails an install: an unwritable ORT folder leaves its script and says so", () => {
    const { root, script } = fakeTree("readonly");
    mkdirSync(join(script, "install-upstream.js")); // writing ORT's copy fails
    const r = node(["scripts/preinstall.cjs"], root, userEnv());
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^megahub preinstall: left onnxruntime-node's install script as it was/);
    expect(readFileSync(join(script, "install.js"), "utf8")).toBe(UPSTREAM);
  });
});

describe("npm install of the packed package", () => {
  it("installs without ORT's CUDA download, and the demo runs from the installed package", () => {
    const pkgDir = join(work, "pkg");
    mkdirSync(pkgDir);
    // dist/ is built by `npm test`'s tsc; --ignore-scripts skips `prepare` (a second build).
    const pack = spawnSync("npm", ["pack", "--ignore-scripts", "--pack-destination", pkgDir, "--json"], { cwd: ROOT, env: userEnv(), encoding: "utf8" });
    expect(pack.status, pack.stderr).toBe(0);
    const [info] = JSON.parse(pack.stdout) as { filename: string; files: { path: string }[] }[];
    if (!info) throw new Error("npm pack printed no package");
    const files = info.files.map((f) => f.path);
    // Only what the demo needs ships: no test fixtures, no hostile pickles.
    expect(files.filter((f) => f.startsWith("fixtures/hostile") || f.startsWith("fixtures/moe") || f.startsWith("test/"))).toEqual([]);
    expect(files).toContain("fixtures/gpt/demo-tp2/latest_checkpointed_iteration.txt");

    const proj = join(work, "proj");
    mkdirSync(proj);
    writeFileSync(join(proj, "package.json"), JSON.stringify({ name: "proj", version: "1.0.0", private: true }));
    const inst = spawnSync("npm", ["install", join(pkgDir, info.filename), "--prefer-offline", "--no-audit", "--no-fund", "--foreground-scripts"], { cwd: proj, env: userEnv(), encoding: "utf8" });
    expect(inst.status, `${inst.stdout}\n${inst.stderr}`).toBe(0);
    expect(`${inst.stdout}${inst.stderr}`).not.toMatch(/nuget|Failed to download|ECONNREFUSED/i);
    const ortScript = join(proj, "node_modules", "onnxruntime-node", "script");
    expect(readFileSync(join(ortScript, "install.js"), "utf8")).toMatch(/megahub-preinstall/);
    expect(readFileSync(join(ortScript, "install-upstream.js"), "utf8")).toBe(readFileSync(join(ROOT, "node_modules", "onnxruntime-node", "script", "install.js"), "utf8"));

    const demo = spawnSync(join(proj, "node_modules", ".bin", "megahub"), ["demo"], { cwd: proj, env: userEnv(), encoding: "utf8" });
    expect(demo.status, demo.stderr).toBe(0);
    expect(demo.stdout).toMatch(/\[10\/10\][\s\S]*identical bytes[\s\S]*^done\./m);
  });
});
