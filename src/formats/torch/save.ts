/**
 * torch.save for megahub: a value tree (read from a checkpoint, edited, or built for a new one) plus a source of
 * bytes per storage becomes an archive torch.load reads. The pickle is built first (it is small), which fixes
 * every record size, so the file's size is known before any tensor byte is read.
 */
import { basename } from "node:path";
import { MegahubError } from "../../errors.js";
import type { ByteSource } from "../../io/byte-source.js";
import type { CustomFile, PlannedTensor } from "../../plan/plan.js";
import { DEFAULT_BLOCK_BYTES } from "../../plan/pool.js";
import { recipeBytes, type Recipe } from "../../plan/recipe.js";
import { DTYPES, numel, type Dtype, type DtypeInfo } from "../../tensors/dtypes.js";
import { pickleValue } from "./pickle-write.js";
import { PyGlobal, TorchStorage, TorchTensor, type PyValue } from "./values.js";
import { torchZipSize, writeTorchZip, type ZipOptions, type ZipSink } from "./zip-write.js";

export interface SaveOptions extends ZipOptions {
  /** Record folder; torch.save uses the file name up to its first dot (see torchArchivePrefix). Default "archive". */
  prefix?: string;
  /**
   * Give storages the keys "0", "1", … in the order the pickle first references them, as torch.save does. By default
   * the keys already on the storages are kept, so a rewritten checkpoint keeps its record names.
   */
  renumber?: boolean;
  /** Write pickle globals that are not on megahub's allow-list (see pickle-write.ts); off by default. */
  keepUnknownGlobals?: boolean;
  /** Write the `byteorder` record (torch ≥ 2.0 does; default true). */
  byteorder?: boolean;
}

/** A storage as it will be written. */
export interface SavedStorage {
  /** The record key in the new file. */
  readonly key: string;
  /** The first storage object the pickle met under this key (views read from one file share a key, not an object). */
  readonly storage: TorchStorage;
  readonly bytes: number;
}

export interface PreparedCheckpoint {
  readonly pickle: Uint8Array;
  /** In record order: keys sorted as strings, as torch sorts them. */
  readonly storages: readonly SavedStorage[];
  readonly prefix: string;
  /** The exact size of the archive. */
  readonly bytes: number;
  readonly options: SaveOptions;
}

/** Bytes of a storage: numel elements of its dtype (untyped storages were retyped by the reader). */
export function storageBytes(s: TorchStorage): number {
  return s.numel * DTYPES[s.dtype].bytes;
}

/** The folder name torch.save gives records when saving to `path`: the base name up to its first dot. */
export function torchArchivePrefix(path: string): string {
  const base = basename(path);
  const dot = base.indexOf(".");
  const stem = dot >= 0 ? base.slice(0, dot) : base;
  return stem === "" ? "archive" : stem;
}

/**
 * Pickles `root` and lays out the archive. A storage is identified by its key: the reader makes a new TorchStorage
 * object per reference, so views of one storage share a key, not an object. Two storages under one key that
 * disagree on dtype, size or location are refused rather than silently merged.
 */
export function prepareTorchCheckpoint(root: PyValue, options: SaveOptions = {}): PreparedCheckpoint {
  const byKey = new Map<string, SavedStorage>();
  const pickle = pickleValue(root, {
    keepUnknownGlobals: options.keepUnknownGlobals === true,
    storageKey: (s) => {
      const known = byKey.get(s.key);
      if (known) {
        const k = known.storage;
        if (k.dtype !== s.dtype || k.numel !== s.numel || k.location !== s.location) {
          throw new MegahubError(
            "USAGE",
            `two different storages share key "${s.key}" (${k.dtype}×${k.numel} on ${k.location} and ${s.dtype}×${s.numel} on ${s.location}); a key names one storage, so give them distinct keys`,
          );
        }
        return known.key;
      }
      const saved = { key: options.renumber ? String(byKey.size) : s.key, storage: s, bytes: storageBytes(s) };
      byKey.set(s.key, saved);
      return saved.key;
    },
  });
  const storages = [...byKey.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const prefix = options.prefix ?? "archive";
  const bytes = torchZipSize({ ...options, prefix, pickleBytes: pickle.byteLength, storages });
  return { pickle, storages, prefix, bytes, options };
}

/** The size saveTorchCheckpoint will write for `root`, without reading any tensor data. */
export function torchFileSize(root: PyValue, options: SaveOptions = {}): number {
  return prepareTorchCheckpoint(root, options).bytes;
}

/**
 * Writes `root` as a torch.save archive at `path` (a temporary name the caller renames into place; an existing
 * file is refused). `storageData` yields each storage's bytes, little-endian, in blocks; it is called once per
 * storage, in record order, and its data is streamed straight to disk.
 */
export async function saveTorchCheckpoint(
  path: string,
  root: PyValue,
  storageData: (storage: TorchStorage) => AsyncIterable<Uint8Array>,
  options: SaveOptions = {},
): Promise<PreparedCheckpoint> {
  const prepared = prepareTorchCheckpoint(root, options);
  await writePrepared(path, prepared, (s) => storageData(s.storage));
  return prepared;
}

async function writePrepared(
  path: string | ZipSink,
  p: PreparedCheckpoint,
  data: (s: SavedStorage) => AsyncIterable<Uint8Array>,
): Promise<void> {
  const written = await writeTorchZip(path, {
    ...p.options,
    prefix: p.prefix,
    pickle: p.pickle,
    // Lazy: a storage's data source starts only when the writer reaches its record.
    storages: p.storages.map((s) => ({ key: s.key, bytes: s.bytes, data: lazy(() => data(s)) })),
  });
  if (written !== p.bytes) {
    throw new MegahubError("OUTPUT", `wrote ${written} bytes, planned ${p.bytes}`, { file: typeof path === "string" ? path : p.prefix });
  }
}

function lazy(make: () => AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  return { [Symbol.asyncIterator]: () => make()[Symbol.asyncIterator]() };
}

/** Streams a ByteSource (a storage of a loaded checkpoint) in blocks, for saveTorchCheckpoint's storageData. */
export async function* byteSourceBlocks(source: ByteSource, blockBytes = DEFAULT_BLOCK_BYTES): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < source.size; off += blockBytes) {
    yield await source.read(off, Math.min(blockBytes, source.size - off));
  }
}

export interface NewTensorOptions {
  /** Pickle as torch.nn.Parameter (_rebuild_parameter), as a module's parameters are. */
  parameter?: boolean;
  requiresGrad?: boolean;
  /** Storage location tag; "cpu" (torch.load maps it with map_location). */
  location?: string;
}

/** C-order strides of a shape. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const stride = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    stride[i] = s;
    s *= Math.max(1, shape[i] as number); // torch gives size-0 dims the stride of size 1
  }
  return stride;
}

/**
 * A contiguous tensor with a storage of its own, for a tensor the plan produces. Dtypes without a typed storage
 * class (float8, uint16…) get torch.UntypedStorage and are written with _rebuild_tensor_v3, as torch ≥ 2.1 does.
 */
export function newTensor(dtype: Dtype, shape: readonly number[], key: string, options: NewTensorOptions = {}): TorchTensor {
  const typed = (DTYPES[dtype] as DtypeInfo).storage;
  const cls = new PyGlobal("torch", typed ?? "UntypedStorage");
  const storage = new TorchStorage(key, dtype, options.location ?? "cpu", numel(shape), cls);
  return new TorchTensor(storage, 0, [...shape], contiguousStrides(shape), options.requiresGrad ?? false, options.parameter ?? false);
}

/** A planned tensor of a torch file: a tensor in the value tree and the recipe that makes its whole storage. */
export interface PlannedTorchTensor {
  readonly name: string;
  readonly tensor: TorchTensor;
  readonly recipe: Recipe;
}

/**
 * A plan entry (kind "custom") that writes `root` as a torch checkpoint at `path`, each storage streamed from the
 * executor through its tensor's recipe. Every storage in `root` needs exactly one recipe producing all of its
 * bytes (newTensor gives each tensor its own storage). The size is computed here, before anything is read.
 */
export function torchFileForPlan(
  path: string,
  root: PyValue,
  tensors: readonly PlannedTorchTensor[],
  options: SaveOptions = {},
): CustomFile {
  const prepared = prepareTorchCheckpoint(root, { ...options, prefix: options.prefix ?? torchArchivePrefix(path) });
  const byOriginalKey = new Map(prepared.storages.map((s) => [s.storage.key, s]));
  const recipes = new Map<SavedStorage, Recipe>();
  for (const t of tensors) {
    const s = byOriginalKey.get(t.tensor.storage.key);
    const where = { file: path, tensor: t.name };
    if (!s) throw new MegahubError("USAGE", `storage "${t.tensor.storage.key}" is not referenced by the value tree`, where);
    if (t.recipe.dtype !== s.storage.dtype || recipeBytes(t.recipe) !== s.bytes) {
      throw new MegahubError(
        "USAGE",
        `recipe makes ${recipeBytes(t.recipe)} bytes of ${t.recipe.dtype}, storage "${s.key}" holds ${s.bytes} bytes of ${s.storage.dtype}`,
        where,
      );
    }
    const other = recipes.get(s);
    if (other && other !== t.recipe) throw new MegahubError("USAGE", `storage "${s.key}" has two recipes`, where);
    recipes.set(s, t.recipe);
  }
  const missing = prepared.storages.filter((s) => !recipes.has(s)).map((s) => s.storage.key);
  if (missing.length > 0) {
    throw new MegahubError("USAGE", `no recipe for storage ${missing.map((k) => `"${k}"`).join(", ")}`, { file: path });
  }
  const planned: PlannedTensor[] = tensors.map((t) => ({ name: t.name, recipe: t.recipe }));
  return {
    kind: "custom",
    path,
    bytes: prepared.bytes,
    tensors: planned,
    write: (out, emit) => writePrepared(out, prepared, (s) => emit(recipes.get(s) as Recipe)),
  };
}
