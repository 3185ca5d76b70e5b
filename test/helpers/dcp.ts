/**
 * DCP referee: what torch 2.13's own distributed-checkpoint reader gives for a directory, as JSON of sha256s, and
 * the same picture computed by megahub's reader, so tests compare the two.
 */
import { createHash } from "node:crypto";
import { cpSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openDcp, type DcpCheckpoint } from "../../src/formats/torch-dcp/read.js";
import { blocks } from "../../src/plan/execute.js";
import type { Recipe } from "../../src/plan/recipe.js";
import { fixture } from "./fixtures.js";
import { runRefPython } from "./refpy.js";

export const DCP_FIXTURES = ["gpt-tp2-pp2", "gpt-tp2-perlayer"] as const;
export const dcpDir = (name: string) => fixture("dcp", name, "iter_0000010");

/** A scratch copy of a fixture's iteration directory (tests mutate copies, never fixtures). */
export function copyDcp(name: string): string {
  const dir = join(mkdtempSync(join(tmpdir(), "megahub-dcp-")), "iter");
  cpSync(dcpDir(name), dir, { recursive: true });
  return dir;
}

/**
 * Prelude for reference scripts: stubs Megatron's dummy classes (as Megatron HEAD keeps them, so old files load) and
 * defines sha(t) over a tensor's C-order bytes.
 */
export const PY_DCP_PRELUDE = `
import sys, types, io, os, json, hashlib, pickle, copy
m = types.ModuleType('megatron.core.dist_checkpointing.strategies.torch')
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import Metadata
class MCoreMetadata(Metadata):
    pass
class MCoreSavePlan:
    pass
MCoreMetadata.__module__ = m.__name__
m.MCoreMetadata = MCoreMetadata
m.MCoreSavePlan = MCoreSavePlan
for name in ('megatron', 'megatron.core', 'megatron.core.dist_checkpointing', 'megatron.core.dist_checkpointing.strategies'):
    sys.modules.setdefault(name, types.ModuleType(name))
sys.modules[m.__name__] = m
def sha(t):
    t = t.detach().contiguous().reshape(-1)
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes() if t.numel() else b'').hexdigest()
def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and sha(a) == sha(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, io.BytesIO):
        return a.getvalue() == b.getvalue()
    return a == b
DT = {torch.float32: 'F32', torch.float16: 'F16', torch.bfloat16: 'BF16', torch.float64: 'F64', torch.int64: 'I64', torch.int32: 'I32', torch.uint8: 'U8', torch.int8: 'I8', torch.bool: 'BOOL', torch.int16: 'I16'}
`;

export interface DcpPicture {
  tensors: Record<string, { dtype: string; shape: number[]; sha256: string }>;
  /** sha256 of each byte item's stored range, as torch's metadata locates it. */
  bytes: Record<string, string>;
}

/**
 * torch's view of a DCP directory: every tensor through `dcp_to_torch_save` (then torch.load) and again through
 * `dcp.load` into preallocated tensors (the two must agree), each byte item's stored range and a check that
 * torch.load of that range equals the object dcp_to_torch_save produced.
 */
export function torchPicture(dir: string): DcpPicture {
  return torchPictures([dir])[0] as DcpPicture;
}

/** torchPicture of several directories in one Python start. */
export function torchPictures(dirs: readonly string[]): DcpPicture[] {
  const code = `${PY_DCP_PRELUDE}
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
out_pt = sys.argv[1]
res = []
for d in sys.argv[2:]:
    dcp_to_torch_save(d, out_pt)
    saved = torch.load(out_pt, weights_only=False)
    md = dcp.FileSystemReader(d).read_metadata()
    pre = {k: torch.empty(v.size, dtype=v.properties.dtype) for k, v in md.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)}
    dcp.load(pre, storage_reader=dcp.FileSystemReader(d), no_dist=True)
    tensors, byts = {}, {}
    for k, v in md.state_dict_metadata.items():
        if isinstance(v, TensorStorageMetadata):
            a, b = saved[k], pre[k]
            assert a.dtype == b.dtype and a.shape == b.shape and sha(a) == sha(b), k
            tensors[k] = {'dtype': DT[a.dtype], 'shape': list(a.shape), 'sha256': sha(a)}
    for idx, info in md.storage_data.items():
        if idx.offset is None:
            with open(os.path.join(d, info.relative_path), 'rb') as f:
                f.seek(info.offset)
                raw = f.read(info.length)
            obj = torch.load(io.BytesIO(raw), weights_only=False)
            assert same(obj, saved[idx.fqn]), idx.fqn
            byts[idx.fqn] = hashlib.sha256(raw).hexdigest()
    res.append({'tensors': tensors, 'bytes': byts})
print(json.dumps(res))
`;
  const pt = join(mkdtempSync(join(tmpdir(), "megahub-dcp-pt-")), "whole.pt");
  return JSON.parse(runRefPython(code, [pt, ...dirs])) as DcpPicture[];
}

export async function recipeSha(r: Recipe): Promise<string> {
  const h = createHash("sha256");
  for await (const b of blocks(r, 1 << 16, { overflows: 0 })) h.update(b);
  return h.digest("hex");
}

/** megahub's view of a DCP directory, in the same shape as torchPicture. */
export async function ourPicture(where: string | DcpCheckpoint): Promise<DcpPicture> {
  const dcp = typeof where === "string" ? await openDcp(where) : where;
  try {
    const out: DcpPicture = { tensors: {}, bytes: {} };
    for (const t of dcp.tensors.values()) out.tensors[t.fqn] = { dtype: t.dtype, shape: [...t.shape], sha256: await recipeSha(t.recipe) };
    for (const [fqn, src] of dcp.bytes) out.bytes[fqn] = createHash("sha256").update(await src.read(0, src.size)).digest("hex");
    return out;
  } finally {
    if (typeof where === "string") await dcp.close();
  }
}

/**
 * A DCP directory's layout as sorted text rows: every model tensor chunk (fqn, dtype, global shape, offsets, sizes,
 * the rank whose data file holds it) and every `_extra_state` byte item with its rank; optimizer keys left out.
 */
export async function chunkLayout(dir: string): Promise<{ rows: string[]; extra: string[] }> {
  const dcp = await openDcp(dir);
  try {
    const rankOf = (path: string | undefined) => /^__(\d+)_/.exec(path ?? "")?.[1];
    const rows: string[] = [];
    for (const t of dcp.tensors.values()) {
      if (t.fqn.startsWith("optimizer.")) continue;
      for (const c of t.chunks) rows.push(`${t.fqn} ${t.dtype}[${t.shape.join(",")}] @[${c.offsets.join(",")}]+[${c.sizes.join(",")}] rank ${rankOf(dcp.metadata.storage(t.fqn, c.offsets)?.relativePath)}`);
    }
    const extra = [...dcp.bytes.keys()].filter((k) => k.includes("_extra_state")).map((k) => `${k} rank ${rankOf(dcp.metadata.storage(k)?.relativePath)}`);
    return { rows: rows.sort(), extra: extra.sort() };
  } finally {
    await dcp.close();
  }
}
