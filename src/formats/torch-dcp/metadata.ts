/**
 * `.metadata` of a PyTorch distributed checkpoint (DCP): a plain pickle of
 * `torch.distributed.checkpoint.metadata.Metadata` (torch/distributed/checkpoint/metadata.py, filesystem.py).
 * It is read with megahub's inert unpickler and then interpreted field by field; nothing in it runs. Only the
 * classes listed in DCP_GLOBALS are interpreted (or knowingly ignored, as Megatron's cached save plans are); a
 * code-running global anywhere in the file is refused, and any other global is reported and stays an inert record.
 *
 * Variants accepted (torch 2.0 … 2.13, Megatron-Core 0.8 … HEAD): Metadata with or without `storage_meta` / `version`;
 * `_StorageInfo` with or without `transform_descriptors`; TensorProperties under `torch.distributed.checkpoint.metadata`
 * (its memory format pickled as `_MEM_FORMAT_ENCODING`) or, in torch ≤ 2.2, under
 * `torch.distributed._shard.sharded_tensor.metadata` (`MEM_FORMAT_ENCODING`), its state a tuple (`__getstate__`) or
 * a dict; sizes as `torch.Size` or plain tuples; protocol 2–5; Megatron's `MCoreMetadata` subclass with `mcore_data`
 * and its `all_local_plans` attribute (kept as inert data; `planner_data` may be None as Megatron writes it).
 */
import { formatError, MegahubError } from "../../errors.js";
import { dtypeFromTorchName, numel, type Dtype } from "../../tensors/dtypes.js";
import { unpickle } from "../torch/pickle-read.js";
import { classifyGlobals } from "../torch/rebuild.js";
import { PyCall, PyDict, PyGlobal, PyList, PyTuple, type PyValue } from "../torch/values.js";

const M = "torch.distributed.checkpoint.metadata";
const SHARD_M = "torch.distributed._shard.sharded_tensor.metadata";
const MCORE = "megatron.core.dist_checkpointing.strategies.torch";

/** Qualified class names, by the role they play. */
export const DCP_CLASSES = {
  metadata: [`${M}.Metadata`, `${MCORE}.MCoreMetadata`],
  tensor: [`${M}.TensorStorageMetadata`],
  bytes: [`${M}.BytesStorageMetadata`],
  chunk: [`${M}.ChunkStorageMetadata`],
  properties: [`${M}.TensorProperties`, `${SHARD_M}.TensorProperties`],
  memFormat: [`${M}._MEM_FORMAT_ENCODING`, `${SHARD_M}.MEM_FORMAT_ENCODING`],
  index: [`${M}.MetadataIndex`],
  storageInfo: ["torch.distributed.checkpoint.filesystem._StorageInfo"],
  storageMeta: [`${M}.StorageMeta`],
} as const;

/**
 * Every global a DCP `.metadata` may name: the classes above, what their fields pickle as (torch.Size, dtypes via
 * rebuild.ts's table, torch.strided), the save-plan classes Megatron caches in `all_local_plans`, and the path
 * classes a `StorageMeta.checkpoint_id` may hold.
 */
export const DCP_GLOBALS: ReadonlySet<string> = new Set([
  ...Object.values(DCP_CLASSES).flat(),
  "torch.serialization._get_layout",
  "torch.Size",
  "torch.distributed.checkpoint.filesystem._StoragePrefix",
  "torch.distributed.checkpoint.planner.SavePlan",
  "torch.distributed.checkpoint.planner.WriteItem",
  "torch.distributed.checkpoint.planner.WriteItemType",
  "torch.distributed.checkpoint.planner.TensorWriteData",
  `${MCORE}.MCoreSavePlan`,
  "pathlib.PosixPath",
  "pathlib.PurePosixPath",
  "pathlib.WindowsPath",
  "pathlib._local.PosixPath",
  "pathlib._local.WindowsPath",
]);

export interface DcpChunk {
  readonly offsets: readonly number[];
  readonly sizes: readonly number[];
}

export interface DcpTensorMeta {
  readonly kind: "tensor";
  readonly fqn: string;
  readonly dtype: Dtype;
  /** The global shape. */
  readonly shape: readonly number[];
  readonly chunks: readonly DcpChunk[];
}

export interface DcpBytesMeta {
  readonly kind: "bytes";
  readonly fqn: string;
}

export type DcpItemMeta = DcpTensorMeta | DcpBytesMeta;

/** Where one chunk or byte item lies: `length` bytes at `offset` of `relativePath` (a file of the checkpoint). */
export interface DcpStorageInfo {
  readonly relativePath: string;
  readonly offset: number;
  readonly length: number;
  /** Stream transforms (compression extensions); empty for everything torch and Megatron write by default. */
  readonly transforms: readonly string[];
}

export interface DcpStorageMeta {
  readonly checkpointId?: string;
  readonly saveId?: string;
  readonly loadId?: string;
  readonly modules: readonly string[];
}

export interface DcpMetadata {
  readonly file: string;
  /** The pickled class: torch's Metadata, or Megatron's MCoreMetadata in older mcore files. */
  readonly className: string;
  /** state_dict_metadata, in file order. */
  readonly items: ReadonlyMap<string, DcpItemMeta>;
  /** The storage of a chunk (its offsets) or of a byte item (offsets undefined). */
  storage(fqn: string, offsets?: readonly number[]): DcpStorageInfo | undefined;
  /** Every storage_data entry, in file order. */
  readonly storageEntries: readonly { readonly fqn: string; readonly offsets: readonly number[] | undefined; readonly info: DcpStorageInfo }[];
  /** "none" when planner_data is None (Megatron), "mapping" for torch's flattening map, "other" otherwise. */
  readonly plannerData: "none" | "mapping" | "other";
  readonly version: string | undefined;
  readonly storageMeta: DcpStorageMeta | undefined;
  /** Megatron < 0.14: per-key facts such as `nd_reformulated_orig_global_shape` (kept as pickled). */
  readonly mcoreData: PyValue | undefined;
  /** Attributes beyond Metadata's fields (Megatron's `all_local_plans`): present, not interpreted. */
  readonly extraFields: readonly string[];
  readonly globals: readonly string[];
  /** Globals outside DCP_GLOBALS (inert records; a dangerous one would have been refused). */
  readonly unknownGlobals: readonly string[];
}

/** A `.metadata` pickle of a large checkpoint is tens of MB at most; past this it is not a DCP metadata file. */
export const MAX_DCP_METADATA_BYTES = 1 << 30;

export function storageKey(fqn: string, offsets: readonly number[] | undefined): string {
  return offsets === undefined ? `${fqn}\0-` : `${fqn}\0${offsets.join(",")}`;
}

/** Parses the bytes of a `.metadata` file. `file` names it in errors. */
export function parseDcpMetadata(bytes: Uint8Array, file: string): DcpMetadata {
  if (bytes.byteLength > MAX_DCP_METADATA_BYTES) {
    throw formatError(`${bytes.byteLength} bytes exceeds the ${MAX_DCP_METADATA_BYTES}-byte limit for DCP metadata`, { file });
  }
  const { value, globals } = unpickle(bytes, file);
  const report = classifyGlobals(globals);
  // DCP's own data classes are vetted here (interpreted field by field, never called); anything else unvetted is refused.
  const dangerous = report.dangerous.filter((g) => !DCP_GLOBALS.has(g));
  if (dangerous.length > 0) {
    throw formatError(`names code-running global ${dangerous.join(", ")}; a DCP .metadata holds only data classes, refusing it`, { file });
  }
  const unknownGlobals = globals.filter((g) => !DCP_GLOBALS.has(g) && report.unknown.includes(g));
  const p = new Parser(file);
  const root = p.object(value, DCP_CLASSES.metadata, "the top-level object");
  const fields = p.fields(root.state, "Metadata");
  const sdm = fields.get("state_dict_metadata");
  if (!(sdm instanceof PyDict)) throw formatError("state_dict_metadata is not a dict", { file });
  const items = new Map<string, DcpItemMeta>();
  for (const [k, v] of sdm.entries) {
    if (typeof k !== "string") throw formatError("state_dict_metadata has a key that is not a string", { file });
    if (items.has(k)) throw formatError(`state_dict_metadata names "${k}" twice`, { file, tensor: k });
    items.set(k, p.item(k, v));
  }
  const sd = fields.get("storage_data");
  if (!(sd instanceof PyDict)) {
    throw new MegahubError("UNSUPPORTED", `storage_data is ${describe(sd)}, not the dict torch's FileSystemWriter writes`, { file });
  }
  const storage = new Map<string, DcpStorageInfo>();
  const storageEntries: DcpMetadata["storageEntries"][number][] = [];
  for (const [k, v] of sd.entries) {
    const index = p.object(k, DCP_CLASSES.index, "a storage_data key");
    const f = p.fields(index.state, "MetadataIndex");
    const fqn = f.get("fqn");
    if (typeof fqn !== "string") throw formatError("a storage_data key has no string fqn", { file });
    const rawOffset = f.get("offset");
    const offsets = rawOffset === undefined || rawOffset === null ? undefined : p.size(rawOffset, `storage offset of "${fqn}"`);
    const info = p.storageInfo(v, fqn);
    const key = storageKey(fqn, offsets);
    if (storage.has(key)) throw formatError(`storage_data names chunk [${offsets?.join(", ") ?? "bytes"}] twice`, { file, tensor: fqn });
    storage.set(key, info);
    storageEntries.push({ fqn, offsets, info });
  }
  checkStorageCoversItems(items, storage, file);
  const planner = fields.get("planner_data");
  const known = new Set(["state_dict_metadata", "planner_data", "storage_data", "storage_meta", "version", "mcore_data"]);
  const version = fields.get("version");
  return {
    file,
    className: (root.callable as PyGlobal).qualified,
    items,
    storage: (fqn, offsets) => storage.get(storageKey(fqn, offsets)),
    storageEntries,
    plannerData: planner === undefined || planner === null ? "none" : planner instanceof PyDict ? "mapping" : "other",
    version: typeof version === "string" ? version : undefined,
    storageMeta: p.storageMeta(fields.get("storage_meta")),
    mcoreData: fields.get("mcore_data") ?? undefined,
    extraFields: [...fields.keys()].filter((k) => !known.has(k)),
    globals,
    unknownGlobals,
  };
}

function checkStorageCoversItems(items: ReadonlyMap<string, DcpItemMeta>, storage: ReadonlyMap<string, DcpStorageInfo>, file: string): void {
  for (const item of items.values()) {
    if (item.kind === "bytes") {
      if (!storage.has(storageKey(item.fqn, undefined))) {
        throw formatError("byte item has no storage_data entry", { file, tensor: item.fqn });
      }
      continue;
    }
    for (const c of item.chunks) {
      if (!storage.has(storageKey(item.fqn, c.offsets))) {
        throw formatError(`chunk at [${c.offsets.join(", ")}] has no storage_data entry`, { file, tensor: item.fqn });
      }
    }
  }
}

function describe(v: PyValue | undefined): string {
  if (v === undefined) return "missing";
  if (v === null) return "None";
  if (v instanceof PyCall) return `a ${v.global?.qualified ?? "call"} object`;
  return typeof v === "object" ? `a ${v.constructor.name}` : `a ${typeof v}`;
}

class Parser {
  constructor(private readonly file: string) {}

  fail(detail: string, tensor?: string): never {
    throw formatError(detail, { file: this.file, tensor });
  }

  /** An instance of one of `classes` (NEWOBJ or REDUCE of the class global). */
  object(v: PyValue | undefined, classes: readonly string[], what: string, tensor?: string): PyCall {
    const g = v instanceof PyCall ? v.global : undefined;
    if (!g || !classes.includes(g.qualified)) {
      this.fail(`${what} is ${describe(v)}, expected ${classes[0] ?? "?"}`, tensor);
    }
    return v as PyCall;
  }

  /** A dataclass's fields: its pickled __dict__ (or the (dict, slots) pair of a slotted class). */
  fields(state: PyValue | undefined, what: string): Map<string, PyValue> {
    const out = new Map<string, PyValue>();
    const add = (d: PyValue | undefined) => {
      if (d === null || d === undefined) return;
      if (!(d instanceof PyDict)) this.fail(`${what} state is ${describe(d)}, expected a dict of fields`);
      for (const [k, v] of d.entries) if (typeof k === "string") out.set(k, v);
    };
    if (state instanceof PyTuple && state.items.length === 2) {
      add(state.items[0]);
      add(state.items[1]);
    } else {
      add(state);
    }
    return out;
  }

  /** torch.Size(tuple), or a plain tuple/list, of non-negative safe integers. */
  size(v: PyValue | undefined, what: string, tensor?: string): number[] {
    let t = v;
    if (v instanceof PyCall && v.global?.qualified === "torch.Size") t = v.args.items[0];
    if (!(t instanceof PyTuple) && !(t instanceof PyList)) this.fail(`${what} is ${describe(v)}, expected a torch.Size`, tensor);
    const items = (t as PyTuple | PyList).items;
    if (!items.every((x) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0)) {
      this.fail(`${what} holds something other than non-negative integers`, tensor);
    }
    return items as number[];
  }

  item(fqn: string, v: PyValue): DcpItemMeta {
    const cls = v instanceof PyCall ? v.global?.qualified : undefined;
    if (cls !== undefined && (DCP_CLASSES.bytes as readonly string[]).includes(cls)) return { kind: "bytes", fqn };
    const t = this.object(v, [...DCP_CLASSES.tensor, ...DCP_CLASSES.bytes], "a state_dict_metadata value", fqn);
    const f = this.fields(t.state, "TensorStorageMetadata");
    const shape = this.size(f.get("size"), "size", fqn);
    try {
      numel(shape);
    } catch {
      this.fail(`global shape [${shape.join(", ")}] is too large`, fqn);
    }
    const dtype = this.dtype(f.get("properties"), fqn);
    const chunksValue = f.get("chunks");
    if (!(chunksValue instanceof PyList) && !(chunksValue instanceof PyTuple)) this.fail("chunks is not a list", fqn);
    const chunks = (chunksValue as PyList).items.map((c, i): DcpChunk => {
      const cf = this.fields(this.object(c, DCP_CLASSES.chunk, `chunk ${i}`, fqn).state, "ChunkStorageMetadata");
      const offsets = this.size(cf.get("offsets"), `chunk ${i} offsets`, fqn);
      const sizes = this.size(cf.get("sizes"), `chunk ${i} sizes`, fqn);
      if (offsets.length !== shape.length || sizes.length !== shape.length) {
        this.fail(`chunk ${i} has ${offsets.length} offsets and ${sizes.length} sizes for a ${shape.length}-d tensor`, fqn);
      }
      for (let d = 0; d < shape.length; d++) {
        if ((offsets[d] as number) + (sizes[d] as number) > (shape[d] as number)) {
          this.fail(`chunk ${i} [${offsets.join(", ")}] + [${sizes.join(", ")}] reaches past the global shape [${shape.join(", ")}]`, fqn);
        }
      }
      return { offsets, sizes };
    });
    return { kind: "tensor", fqn, dtype, shape, chunks };
  }

  dtype(props: PyValue | undefined, fqn: string): Dtype {
    const p = this.object(props, DCP_CLASSES.properties, "properties", fqn);
    // __getstate__ gives (dtype, layout, requires_grad, memory format encoding, pin_memory); older pickles a dict.
    const raw = p.state instanceof PyTuple ? p.state.items[0] : this.fields(p.state, "TensorProperties").get("dtype");
    const name = raw instanceof PyGlobal && raw.module === "torch" ? raw.name : undefined;
    const dtype = name === undefined ? undefined : dtypeFromTorchName(name);
    if (!dtype) {
      if (name !== undefined) throw new MegahubError("UNSUPPORTED", `dtype torch.${name} is not supported`, { file: this.file, tensor: fqn });
      this.fail(`properties.dtype is ${describe(raw)}, expected a torch dtype`, fqn);
    }
    return dtype as Dtype;
  }

  storageInfo(v: PyValue, fqn: string): DcpStorageInfo {
    const f = this.fields(this.object(v, DCP_CLASSES.storageInfo, "a storage_data value", fqn).state, "_StorageInfo");
    const relativePath = f.get("relative_path");
    const offset = f.get("offset");
    const length = f.get("length");
    if (typeof relativePath !== "string" || !isSafePath(relativePath)) {
      this.fail(`relative_path ${JSON.stringify(relativePath ?? null)} is not a file name inside the checkpoint`, fqn);
    }
    const count = (x: PyValue | undefined) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
    if (!count(offset) || !count(length)) this.fail("storage offset/length are not non-negative integers", fqn);
    const t = f.get("transform_descriptors");
    let transforms: string[] = [];
    if (t instanceof PyList || t instanceof PyTuple) {
      if (!t.items.every((x) => typeof x === "string")) this.fail("transform_descriptors are not strings", fqn);
      transforms = t.items as string[];
    } else if (t !== undefined && t !== null) {
      this.fail(`transform_descriptors is ${describe(t)}`, fqn);
    }
    return { relativePath: relativePath as string, offset: offset as number, length: length as number, transforms };
  }

  storageMeta(v: PyValue | undefined): DcpStorageMeta | undefined {
    if (v === undefined || v === null) return undefined;
    const f = this.fields(this.object(v, DCP_CLASSES.storageMeta, "storage_meta").state, "StorageMeta");
    const str = (x: PyValue | undefined) => (typeof x === "string" ? x : pathString(x));
    const modules = f.get("modules");
    const out: { -readonly [K in keyof DcpStorageMeta]: DcpStorageMeta[K] } = {
      modules: modules instanceof PyList ? modules.items.filter((m): m is string => typeof m === "string") : [],
    };
    const id = str(f.get("checkpoint_id"));
    const save = str(f.get("save_id"));
    const load = str(f.get("load_id"));
    if (id !== undefined) out.checkpointId = id;
    if (save !== undefined) out.saveId = save;
    if (load !== undefined) out.loadId = load;
    return out;
  }
}

/** A pathlib path pickles as (class, parts): its display string, for reports only. */
function pathString(v: PyValue | undefined): string | undefined {
  if (!(v instanceof PyCall) || !v.global?.module.startsWith("pathlib")) return undefined;
  const parts = v.args.items.filter((x): x is string => typeof x === "string");
  return parts.join("/").replace(/\/{2,}/g, "/");
}

/** torch joins relative_path to the checkpoint directory: refuse anything that would leave it. */
function isSafePath(p: string): boolean {
  return p.length > 0 && !p.startsWith("/") && !/[\\\0]/.test(p) && !p.split("/").some((s) => s === ".." || s === "" || s === ".");
}
