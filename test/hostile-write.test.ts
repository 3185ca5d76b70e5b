/**
 * Hostile-pickle laundering: a checkpoint whose args and carried state hold code-running globals must come out of
 * every Megatron writer (reshard, prune --to megatron, prune-vocab --to megatron) without them, so that real
 * torch.load(weights_only=False) of megahub's output runs nothing. A marker file proves whether code ran; the
 * --keep-unknown-globals run shows the marker does appear when the globals are carried (the test can fail).
 */
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { sanitizeValue } from "../src/formats/torch/sanitize.js";
import { pickleValue } from "../src/formats/torch/pickle-write.js";
import { isSafeGlobal } from "../src/formats/torch/safe-globals.js";
import { PyCall, PyDict, PyGlobal, PyList, PyTuple } from "../src/formats/torch/values.js";
import { isMegahubError } from "../src/errors.js";
import { fixture, hasFixture } from "./helpers/fixtures.js";
import { megahub } from "./helpers/cli.js";
import { HAS_TORCH, PY_PRELUDE, runPython } from "./helpers/torch.js";

const work = mkdtempSync(join(tmpdir(), "megahub-hostile-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const call = (m: string, n: string, ...args: (string | number)[]) => new PyCall(new PyGlobal(m, n), new PyTuple(args));

describe("allow-list", () => {
  it.each([
    ["torch._utils._rebuild_tensor_v2", true],
    ["torch.HalfStorage", true],
    ["torch.bfloat16", true],
    ["collections.OrderedDict", true],
    ["argparse.Namespace", true],
    ["megatron.core.transformer.enums.AttnBackend", true],
    ["megatron.core.enums.ModelType", true],
    ["signal.Signals", true],
    ["posix.system", false],
    ["commands.Popen", false],
    ["commands.getoutput", false],
    ["timeit.timeit", false],
    ["pdb.run", false],
    ["torch.load", false],
    ["torch.jit.load", false],
    ["numpy.load", false],
    ["builtins.eval", false],
    ["torch.nn.Module", false],
    ["megatron.training.checkpointing.load_checkpoint", false],
  ])("%s → %s", (g, ok) => expect(isSafeGlobal(g)).toBe(ok));

  it("drops unvetted calls and globals, keeps vetted ones, keeps sharing, leaves the input alone", () => {
    const shared = new PyList([1, 2]);
    const evil = call("posix", "system", "touch /tmp/x");
    const state = new PyDict([
      ["hidden_size", 64],
      ["attention_backend", call("megatron.core.transformer.enums", "AttnBackend", 5)],
      ["exit_signal", call("signal", "Signals", 15)],
      ["evil", evil],
      ["fn", new PyGlobal("timeit", "timeit")],
      ["a", shared],
      ["b", shared],
      ["chain", new PyCall(new PyGlobal("builtins", "getattr"), new PyTuple([new PyGlobal("torch._utils", "_rebuild_tensor"), "__globals__"]))],
      ["enum", new PyCall(new PyGlobal("builtins", "getattr"), new PyTuple([new PyGlobal("megatron.core.enums", "ModelType"), "encoder_and_decoder"]))],
    ]);
    const ns = new PyCall(new PyGlobal("argparse", "Namespace"), new PyTuple([]), "newobj");
    ns.state = state;
    const { value, dropped } = sanitizeValue(ns);
    expect(dropped).toEqual(["posix.system", "timeit.timeit", "builtins.getattr"]);
    const out = value as PyCall;
    expect(out.field("hidden_size")).toBe(64);
    expect(out.field("evil")).toMatch(/^<removed by megahub: posix\.system\("touch \/tmp\/x"\)>$/);
    expect(out.field("fn")).toBe("<removed by megahub: timeit.timeit>");
    expect(out.field("chain")).toMatch(/removed by megahub: builtins\.getattr/);
    expect(out.field("enum")).toBeInstanceOf(PyCall);
    expect(out.field("attention_backend")).toBeInstanceOf(PyCall);
    expect(out.field("a")).toBe(out.field("b"));
    expect(state.get("evil")).toBe(evil); // the input tree is not modified
    // The writer refuses what slipped through, and writes the sanitized value.
    expect(() => pickleValue(ns)).toThrow(/not on megahub's allow-list/);
    expect(pickleValue(value).length).toBeGreaterThan(0);
    expect(pickleValue(ns, { keepUnknownGlobals: true }).length).toBeGreaterThan(0);
  });

  it("bounds depth with a typed error", () => {
    let v: PyList = new PyList();
    for (let i = 0; i < 5000; i++) v = new PyList([v]);
    try {
      sanitizeValue(v);
      expect.unreachable();
    } catch (e) {
      expect(isMegahubError(e)).toBe(true);
    }
  });
});

/** Builds a Megatron checkpoint whose args and opt_param_scheduler hold code-running globals, with real torch. */
function hostileCheckpoint(dir: string, marker: string, source = fixture("megatron", "fp16-tp2")): void {
  runPython(
    `${PY_PRELUDE}
sys.path.insert(0, "scripts"); import fixturelib; fixturelib._install_transformer_enums(sys.modules["megatron.core"])  # Megatron-Core args
import os, shutil, subprocess
src, dst, marker = sys.argv[1], sys.argv[2], sys.argv[3]
shutil.copytree(src, dst)
class Sys:
    def __reduce__(self): return (os.system, ("touch " + marker,))
class Popen:
    def __reduce__(self): return (subprocess.Popen, (["touch", marker + ".popen"],))
for root, _, files in os.walk(dst):
    for f in files:
        if f.endswith(".pt"):
            p = os.path.join(root, f)
            ck = torch.load(p, map_location="cpu")
            ck["args"].evil = Sys()
            ck["args"].nested = {"x": [Popen()]}
            ck["opt_param_scheduler"] = {"max_lr": 1e-4, "hook": Sys()}
            torch.save(ck, p)
`,
    [source, dir, marker],
  );
}

function loadAll(dir: string): void {
  runPython(
    `${PY_PRELUDE}
sys.path.insert(0, "scripts"); import fixturelib; fixturelib._install_transformer_enums(sys.modules["megatron.core"])  # Megatron-Core args
import os
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        if f.endswith(".pt"):
            torch.load(os.path.join(root, f), map_location="cpu")
`,
    [dir],
  );
}

describe.skipIf(!HAS_TORCH || !hasFixture("megatron", "fp16-tp2"))("megahub's output of a hostile checkpoint runs nothing under torch.load", () => {
  const marker = join(work, "pwned");
  const src = join(work, "hostile-src");
  const clean = () => {
    rmSync(marker, { force: true });
    rmSync(`${marker}.popen`, { force: true });
  };
  const ran = () => existsSync(marker) || existsSync(`${marker}.popen`);

  it("the source itself runs code (the marker works)", () => {
    hostileCheckpoint(src, marker);
    clean();
    loadAll(src);
    expect(ran()).toBe(true);
    clean();
  });

  it.each([
    ["reshard", (o: string) => ["reshard", src, "--out", o, "--tp", "1"]],
    ["prune --to megatron", (o: string) => ["prune", src, "--out", o, "--to", "megatron", "--ffn", "64"]],
    ["prune-vocab --to megatron", (o: string) => ["prune-vocab", src, "--out", o, "--to", "megatron", "--tokenizer", fixture("tokenizer", "spiece.model"), "--corpus", fixture("corpus", "train.txt"), "--keep", "400"]],
  ])("%s drops them, names them, and torch.load of the output runs nothing", (_name, args) => {
    const o = join(work, `out-${_name.replace(/\W+/g, "-")}`);
    const r = megahub([...args(o), "--json"]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    const text = JSON.stringify(r.json());
    expect(text).toContain("posix.system");
    expect(text).toMatch(/(subprocess|commands)\.Popen/);
    clean();
    loadAll(o);
    expect(ran()).toBe(false);
    expect(readdirSync(o).length).toBeGreaterThan(0);
  });

  it.skipIf(!hasFixture("gpt", "llama-tp1"))("a Megatron-Core GPT source resharded to torch_dist and legacy: common.pt and rank files run nothing", () => {
    const gpt = join(work, "hostile-gpt");
    hostileCheckpoint(gpt, marker, fixture("gpt", "llama-tp1"));
    for (const format of ["torch_dist", "torch"]) {
      const o = join(work, `out-gpt-${format}`);
      const r = megahub(["reshard", gpt, "--out", o, "--tp", "1", "--format", format, "--json"]);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(JSON.stringify(r.json()), format).toContain("posix.system");
      clean();
      loadAll(o);
      expect(ran(), format).toBe(false);
    }
  });

  it("human mode names them on stderr", () => {
    const r = megahub(["reshard", src, "--out", join(work, "human"), "--tp", "1", "--dry-run"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: dropped unvetted pickle globals.*posix\.system/);
    for (const args of [["inspect", src], ["convert", src, "--out", join(work, "conv"), "--dry-run", "--quiet"]]) {
      const i = megahub(args);
      expect(i.code).toBe(0);
      expect(i.stderr, args[0]).toMatch(/warning: .*not on megahub's allow-list.*posix\.system/);
    }
  });

  it("--keep-unknown-globals carries them (and torch.load then runs them)", () => {
    const o = join(work, "kept");
    const r = megahub(["reshard", src, "--out", o, "--tp", "1", "--keep-unknown-globals"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/carried unvetted pickle globals/);
    clean();
    loadAll(o);
    expect(ran()).toBe(true);
    clean();
  });
});
