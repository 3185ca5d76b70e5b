/**
 * The writing half of metadata.ts: a DCP `Metadata` pickled with the real torch classes, as `pickle.load` in torch's
 * FileSystemReader (and Megatron's loader, which uses it) rebuilds them. Field layouts follow torch 2.13's
 * dataclasses (torch/distributed/checkpoint/metadata.py, filesystem.py), which every torch ≥ 2.0 accepts: the pickle
 * only sets attributes, so a field an older class lacks is simply extra.
 */
import { MegahubError } from "../../errors.js";
import { DTYPES, type Dtype } from "../../tensors/dtypes.js";
import { pickleValue } from "../torch/pickle-write.js";
import { PyCall, PyDict, PyGlobal, PyList, PyTuple, type PyValue } from "../torch/values.js";
import { DCP_GLOBALS, type DcpChunk, type DcpStorageInfo } from "./metadata.js";

const M = "torch.distributed.checkpoint.metadata";
const cls = (module: string, name: string) => new PyGlobal(module, name);
const C = {
  metadata: cls(M, "Metadata"),
  tensor: cls(M, "TensorStorageMetadata"),
  bytes: cls(M, "BytesStorageMetadata"),
  chunk: cls(M, "ChunkStorageMetadata"),
  properties: cls(M, "TensorProperties"),
  memFormat: cls(M, "_MEM_FORMAT_ENCODING"),
  index: cls(M, "MetadataIndex"),
  storageInfo: cls("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
  size: cls("torch", "Size"),
  layout: cls("torch.serialization", "_get_layout"),
};

/** torch's CURRENT_DCP_VERSION (filesystem.py) at 2.13. */
export const DCP_VERSION = "1.0.0";

export interface MetadataTensor {
  readonly kind: "tensor";
  readonly fqn: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly chunks: readonly (DcpChunk & { readonly storage: DcpStorageInfo })[];
}

export interface MetadataBytes {
  readonly kind: "bytes";
  readonly fqn: string;
  readonly storage: DcpStorageInfo;
}

export interface MetadataOptions {
  /**
   * planner_data: "flat" writes torch's flattening map {fqn: (fqn,)} (what `dcp.save` writes, and what
   * `dcp_to_torch_save` before torch 2.7 needs); "none" writes None, as Megatron-Core does. Default "flat".
   */
  plannerData?: "flat" | "none";
}

/** A dataclass instance as Python pickles it: NEWOBJ of the class, then BUILD with its __dict__. */
function instance(c: PyGlobal, fields: [string, PyValue][] | PyTuple): PyCall {
  const call = new PyCall(c, new PyTuple([]), "newobj");
  call.state = fields instanceof PyTuple ? fields : new PyDict(fields);
  return call;
}

const size = (dims: readonly number[]) => new PyCall(C.size, new PyTuple([new PyTuple([...dims])]));

function properties(dtype: Dtype): PyCall {
  // TensorProperties.__getstate__: (dtype, layout, requires_grad, memory format encoding, pin_memory).
  return instance(
    C.properties,
    new PyTuple([
      cls("torch", DTYPES[dtype].torch),
      new PyCall(C.layout, new PyTuple(["torch.strided"])),
      false,
      new PyCall(C.memFormat, new PyTuple([0])),
      false,
    ]),
  );
}

function storageInfo(s: DcpStorageInfo): PyCall {
  // _StorageInfo.__getstate__ leaves out None fields: transform_descriptors only when there are some.
  const fields: [string, PyValue][] = [
    ["relative_path", s.relativePath],
    ["offset", s.offset],
    ["length", s.length],
  ];
  if (s.transforms.length > 0) fields.push(["transform_descriptors", new PyList([...s.transforms])]);
  return instance(C.storageInfo, fields);
}

function index(fqn: string, offsets: readonly number[] | undefined, i: number | undefined): PyCall {
  // MetadataIndex.__init__ sets fqn, index, then offset only when given (so a bytes index has no offset attribute).
  const fields: [string, PyValue][] = [
    ["fqn", fqn],
    ["index", i ?? null],
  ];
  if (offsets !== undefined) fields.push(["offset", size(offsets)]);
  return instance(C.index, fields);
}

/** The `.metadata` bytes for these items, in this order. */
export function dcpMetadataBytes(items: readonly (MetadataTensor | MetadataBytes)[], options: MetadataOptions = {}): Uint8Array {
  // Entries are collected as arrays: PyDict.set searches, which is quadratic for thousands of chunks.
  const sdm: [PyValue, PyValue][] = [];
  const storage: [PyValue, PyValue][] = [];
  const seen = new Set<string>();
  for (const item of items) {
    if (seen.has(item.fqn)) throw new MegahubError("USAGE", "named twice in one checkpoint", { tensor: item.fqn });
    seen.add(item.fqn);
  }
  for (const item of items) {
    if (item.kind === "bytes") {
      sdm.push([item.fqn, instance(C.bytes, [])]);
      storage.push([index(item.fqn, undefined, undefined), storageInfo(item.storage)]);
      continue;
    }
    const chunks = item.chunks.map((c) =>
      instance(C.chunk, [
        ["offsets", size(c.offsets)],
        ["sizes", size(c.sizes)],
      ]),
    );
    sdm.push([
      item.fqn,
      instance(C.tensor, [
        ["properties", properties(item.dtype)],
        ["size", size(item.shape)],
        ["chunks", new PyList(chunks)],
      ]),
    ]);
    // torch's global plan rewrites each write item's index hint to the chunk's position (rewrite_index_hints).
    item.chunks.forEach((c, i) => storage.push([index(item.fqn, c.offsets, i), storageInfo(c.storage)]));
  }
  const planner =
    (options.plannerData ?? "flat") === "flat" ? new PyDict(items.map((it) => [it.fqn, new PyTuple([it.fqn])] as [PyValue, PyValue])) : null;
  const root = instance(C.metadata, [
    ["state_dict_metadata", new PyDict(sdm)],
    ["planner_data", planner],
    ["storage_data", new PyDict(storage)],
    ["storage_meta", null],
    ["version", DCP_VERSION],
  ]);
  return pickleValue(root, { allowGlobals: DCP_GLOBALS });
}
