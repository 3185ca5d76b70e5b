/**
 * Real torch on the other side of interop tests. Debian's torch lives in the system interpreter, which need not be
 * the `python3` on PATH, so tests call /usr/bin/python3 by full path.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { readZip } from "../../src/formats/torch/zip.js";
import { FileSource } from "../../src/io/byte-source.js";

export const PYTHON = "/usr/bin/python3";

function probe(): boolean {
  try {
    execFileSync(PYTHON, ["-c", "import torch"], { stdio: "ignore", timeout: 120_000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether /usr/bin/python3 can import torch (tests that need it use `describe.skipIf(!HAS_TORCH)`). CI sets
 * MEGAHUB_REQUIRE_TORCH=1 so that a missing torch fails the run instead of quietly skipping the interop tests.
 */
export const HAS_TORCH: boolean = probe();
if (!HAS_TORCH && process.env.MEGAHUB_REQUIRE_TORCH === "1") {
  throw new Error("MEGAHUB_REQUIRE_TORCH=1 but /usr/bin/python3 cannot import torch: install python3-torch");
}
if (!HAS_TORCH) {
  process.stderr.write("note: /usr/bin/python3 has no torch — torch interop tests skip (apt-get install python3-torch)\n");
}

/**
 * Runs `code` with /usr/bin/python3 (`sys.argv[1:]` = args) and returns its stdout. A failure throws with the
 * script's stderr in the message, so a failed torch.load shows torch's own error.
 */
export function runPython(code: string, args: string[] = []): string {
  try {
    return execFileSync(PYTHON, ["-c", code, ...args], {
      encoding: "utf8",
      maxBuffer: 256 << 20,
      timeout: 300_000,
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (e) {
    const err = e as { stderr?: string | Buffer; message: string };
    const stderr = err.stderr ? String(err.stderr).trim().split("\n").slice(-15).join("\n") : "";
    throw new Error(`python failed: ${err.message.split("\n")[0] ?? ""}\n${stderr}`);
  }
}

/**
 * Python prelude for torch tests: stub `megatron.core.enums` (ModelType) so Megatron checkpoints unpickle without
 * Megatron, import torch/json/hashlib/collections/argparse/zipfile, and define `sha(t)`, the sha256 of a tensor's
 * bytes in C order (any dtype, any strides).
 */
export const PY_PRELUDE = `
import sys, types, enum
_m, _c, _e = (types.ModuleType(n) for n in ('megatron', 'megatron.core', 'megatron.core.enums'))
class ModelType(enum.Enum):
    encoder_or_decoder = 1
    encoder_and_decoder = 2
ModelType.__module__ = 'megatron.core.enums'
_e.ModelType = ModelType; _m.core = _c; _c.enums = _e
sys.modules.update({'megatron': _m, 'megatron.core': _c, 'megatron.core.enums': _e})
import torch, json, hashlib, collections, argparse, zipfile
def sha(t):
    return hashlib.sha256(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
`;

/**
 * Python helpers (after PY_PRELUDE): `eq(a, b, path)` asserts two loaded objects are equal recursively — same
 * types (OrderedDict ≠ dict), tensors equal bit for bit with the same dtype/shape/strides/requires_grad,
 * Namespaces by vars, numpy arrays, NaN-aware floats; `storage_groups(obj)` lists, per tensor in traversal order,
 * the tensors sharing its storage (compare two objects' groups to check views stayed views).
 */
export const PY_EQUAL = `
import numpy as np, math
def eq(a, b, p='root'):
    assert type(a) is type(b), (p, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.stride(), a.requires_grad) == (b.dtype, b.shape, b.stride(), b.requires_grad), p
        assert torch.equal(a.detach().contiguous().reshape(-1).view(torch.uint8), b.detach().contiguous().reshape(-1).view(torch.uint8)), p
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), p
        for k in a: eq(a[k], b[k], f'{p}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), p
        for i, (x, y) in enumerate(zip(a, b)): eq(x, y, f'{p}[{i}]')
    elif isinstance(a, argparse.Namespace): eq(vars(a), vars(b), p)
    elif isinstance(a, np.ndarray): assert a.dtype == b.dtype and np.array_equal(a, b), p
    elif isinstance(a, float): assert a == b or (math.isnan(a) and math.isnan(b)), p
    else: assert a == b, (p, a, b)
def storage_groups(d):
    ts = []
    def walk(x):
        if isinstance(x, torch.Tensor): ts.append(x)
        elif isinstance(x, dict): [walk(v) for v in x.values()]
        elif isinstance(x, (list, tuple)): [walk(v) for v in x]
    walk(d)
    return [[j for j, u in enumerate(ts) if u.storage().data_ptr() == t.storage().data_ptr()] for t in ts]
`;

/**
 * A Megatron-like checkpoint saved by torch itself (run with PY_PRELUDE's stub; argv[1] = output path): args
 * Namespace with a torch dtype and a ModelType enum, checkpoint_version 3.0, nested model dicts with OrderedDicts,
 * a bf16 Parameter referenced twice, views (transpose, row) of one storage, fp16/bool/int64/float64 tensors,
 * optimizer state, Python/numpy/torch RNG state, bytes, sets, complex and big ints.
 */
export const PY_MEGATRON_CHECKPOINT = `${PY_PRELUDE}
import random, numpy as np
random.seed(1); np.random.seed(2); torch.manual_seed(3)
w = torch.randn(8, 6)
emb = torch.nn.Parameter(torch.randn(10, 4).to(torch.bfloat16))
layer = collections.OrderedDict([('weight', w), ('weight_t', w.t()), ('row', w[2]), ('bias', torch.zeros(8, dtype=torch.float16)),
    ('emb', emb), ('mask', torch.tensor([True, False, True])), ('steps', torch.arange(5)), ('scalar', torch.tensor(2.5, dtype=torch.float64))])
args = argparse.Namespace(num_layers=2, hidden_size=6, params_dtype=torch.bfloat16, model_type=ModelType.encoder_and_decoder,
    lr=3.0, tokenizer_type='SentencePieceTokenizer', seq_length=None, data_path=['a', 'b'], rampup=(1, 2))
ckpt = {'args': args, 'checkpoint_version': 3.0, 'iteration': 1000,
    'model': {'language_model': {'encoder': layer, 'embedding': collections.OrderedDict(word_embeddings=collections.OrderedDict(weight=emb))}},
    'optimizer': {'state': {0: {'exp_avg': torch.ones(3), 'step': 10}}, 'param_groups': [{'lr': 1e-4, 'params': [0]}]},
    'rng_state': [{'random_rng_state': random.getstate(), 'np_rng_state': np.random.get_state(), 'torch_rng_state': torch.get_rng_state()}],
    'extra': {b'raw': b'\\x00\\xff', 'set': {1, 2}, 'frozen': frozenset(['x']), 'complex': 1+2j, 'big': 2**80, 'neg': -3, 'inf': float('inf')}}
torch.save(ckpt, sys.argv[1])
`;

/** Each record of a zip: name, where its data starts, and whether its local extra field ends in an FB/Z pad. */
export async function zipRecords(path: string): Promise<{ name: string; dataOffset: number; fbPadding: "ok" | "missing" }[]> {
  const bytes = readFileSync(path);
  const src = await FileSource.open(path);
  try {
    const zip = await readZip(src);
    return [...zip.entries.values()].map((e) => {
      const at = e.localHeaderOffset;
      const nameEnd = at + 30 + bytes.readUInt16LE(at + 26);
      const dataOffset = nameEnd + bytes.readUInt16LE(at + 28);
      let p = nameEnd;
      while (p + 4 <= dataOffset && bytes.toString("latin1", p, p + 2) !== "FB") p += 4 + bytes.readUInt16LE(p + 2);
      const pad = p + 4 <= dataOffset ? bytes.readUInt16LE(p + 2) : -1;
      const ok = pad >= 0 && p + 4 + pad === dataOffset && bytes.toString("latin1", p + 4, dataOffset) === "Z".repeat(pad);
      return { name: e.name, dataOffset, fbPadding: ok ? "ok" : "missing" };
    });
  } finally {
    await src.close();
  }
}
