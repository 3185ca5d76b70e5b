/**
 * Writing a PyTorch distributed checkpoint (DCP) that torch's own reader loads (`dcp.load(..., no_dist=True)`,
 * `dcp_to_torch_save`) and that Megatron-Core's `torch_dist` loader reads through it.
 *
 * API:
 *
 *   planDcp(spec, dir?) → PlannedFile[]     // for a Plan: the data files (kind "custom") and `.metadata` (kind "text")
 *   writeDcp(outDir, spec) → ExecuteResult  // the same, executed into a staged directory renamed into place
 *
 *   spec.tensors: [{ fqn, recipe (the global tensor), chunks?: [{ offsets, sizes, file?, recipe? }] }]
 *       chunks default to one chunk holding the whole tensor; they must tile the global shape exactly; `file`
 *       indexes spec.files; a chunk's bytes come from `recipe` if given, else from a slice of the global recipe.
 *       A chunk recipe may leave out size-1 axes (one layer of a stacked `decoder.layers.<param>` [L, …] is the
 *       layer's own [R, C] tensor: the same C-order bytes). Instead of a global recipe, a tensor may give
 *       `dtype` and `shape` when every chunk has its own recipe (a stacked key built from per-layer tensors).
 *   spec.bytes:   [{ fqn, data: Uint8Array | ByteSource, file? }]  — written verbatim (torch.load must read them)
 *   spec.files:   data file names, default ["__0_0.distcp"]; use `__<rank>_<n>.distcp` to look like a real save.
 *
 * Layout per data file, as torch's FileSystemWriter lays it out: byte items first, then each tensor chunk as a
 * self-contained torch.save zip (record folder "archive", as torch.save to a stream names it), back to back. Every
 * size is known from shapes alone, so the plan is sized before a byte is read.
 */
import { join } from "node:path";
import { MegahubError } from "../../errors.js";
import { StagedDir } from "../../io/atomic.js";
import type { ByteSource } from "../../io/byte-source.js";
import { executePlan, type ExecuteOptions, type ExecuteResult } from "../../plan/execute.js";
import type { CustomFile, PlannedFile, PlannedTensor, TextFile } from "../../plan/plan.js";
import type { Recipe } from "../../plan/recipe.js";
import { byteSize, type Dtype } from "../../tensors/dtypes.js";
import { pickleValue } from "../torch/pickle-write.js";
import { newTensor } from "../torch/save.js";
import { torchRecords, torchZipSize, writeZipTo } from "../torch/zip-write.js";
import { checkCoverage, sliceBox } from "./assemble.js";
import { dcpMetadataBytes, type MetadataBytes, type MetadataOptions, type MetadataTensor } from "./metadata-write.js";
import type { DcpStorageInfo } from "./metadata.js";
import { METADATA_FILE } from "./read.js";

export interface DcpOutChunk {
  readonly offsets: readonly number[];
  readonly sizes: readonly number[];
  readonly file?: number;
  readonly recipe?: Recipe;
}

export type DcpOutTensor =
  | { readonly fqn: string; readonly recipe: Recipe; readonly chunks?: readonly DcpOutChunk[] }
  | { readonly fqn: string; readonly recipe?: undefined; readonly dtype: Dtype; readonly shape: readonly number[]; readonly chunks: readonly DcpOutChunk[] };

export interface DcpOutBytes {
  readonly fqn: string;
  readonly data: Uint8Array | ByteSource;
  readonly file?: number;
}

export interface DcpWriteSpec extends MetadataOptions {
  readonly tensors: readonly DcpOutTensor[];
  readonly bytes?: readonly DcpOutBytes[];
  readonly files?: readonly string[];
}

type Entry =
  | { kind: "bytes"; fqn: string; data: Uint8Array | ByteSource; bytes: number }
  | { kind: "chunk"; name: string; recipe: Recipe; pickle: Uint8Array; data: number; bytes: number };

const CHUNK_PREFIX = "archive";

/** The plan entries of a DCP directory `dir` (relative to the plan's output root). */
export function planDcp(spec: DcpWriteSpec, dir = ""): PlannedFile[] {
  const names = spec.files ?? ["__0_0.distcp"];
  for (const n of names) {
    if (!/^[A-Za-z0-9_.-]+$/.test(n) || n === METADATA_FILE || n.startsWith(".")) {
      throw new MegahubError("USAGE", `DCP data file name ${JSON.stringify(n)} must be a plain name such as __0_0.distcp`);
    }
  }
  if (new Set(names).size !== names.length) throw new MegahubError("USAGE", "DCP data file names repeat");
  /** Where an entry lands; offsets are filled in once every entry is placed (byte items first in each file). */
  interface Slot {
    readonly file: number;
    readonly entry: Entry;
    offset: number;
  }
  const perFile = names.map(() => ({ bytes: [] as Slot[], chunks: [] as Slot[] }));
  const place = (i: number | undefined, entry: Entry, fqn: string): Slot => {
    const file = i ?? 0;
    if (!Number.isInteger(file) || file < 0 || file >= names.length) {
      throw new MegahubError("USAGE", `data file index ${file} is not one of the ${names.length} files`, { tensor: fqn });
    }
    const slot: Slot = { file, entry, offset: -1 };
    const f = perFile[file] as (typeof perFile)[number];
    (entry.kind === "bytes" ? f.bytes : f.chunks).push(slot);
    return slot;
  };
  type Pending =
    | { kind: "bytes"; fqn: string; slot: Slot }
    | { kind: "tensor"; fqn: string; dtype: Dtype; shape: readonly number[]; chunks: { offsets: readonly number[]; sizes: readonly number[]; slot: Slot }[] };
  const pending: Pending[] = [];
  for (const b of spec.bytes ?? []) {
    const bytes = b.data instanceof Uint8Array ? b.data.byteLength : b.data.size;
    pending.push({ kind: "bytes", fqn: b.fqn, slot: place(b.file, { kind: "bytes", fqn: b.fqn, data: b.data, bytes }, b.fqn) });
  }
  const pickles = new Map<string, Uint8Array>();
  for (const t of spec.tensors) {
    const shape = t.recipe === undefined ? t.shape : t.recipe.shape;
    const dtype = t.recipe === undefined ? t.dtype : t.recipe.dtype;
    const chunks = t.chunks ?? [{ offsets: shape.map(() => 0), sizes: shape }];
    checkCoverage(t.fqn, shape, chunks, "DCP output");
    const placed = chunks.map((c) => {
      const recipe = c.recipe ?? (t.recipe ? sliceBox(t.recipe, c.offsets, c.sizes) : undefined);
      if (!recipe) throw new MegahubError("USAGE", `chunk [${c.offsets.join(", ")}] has no recipe and the tensor no global one`, { tensor: t.fqn });
      if (recipe.dtype !== dtype || !sameBlock(recipe.shape, c.sizes)) {
        throw new MegahubError("USAGE", `chunk recipe is [${recipe.shape.join(", ")}] ${recipe.dtype}, the chunk [${c.sizes.join(", ")}] ${dtype}`, { tensor: t.fqn });
      }
      const pickle = chunkPickle(pickles, recipe.dtype, c.sizes);
      const data = byteSize(recipe.dtype, c.sizes);
      const bytes = torchZipSize({ prefix: CHUNK_PREFIX, pickleBytes: pickle.byteLength, storages: [{ key: "0", bytes: data }] });
      const entry: Entry = { kind: "chunk", name: `${t.fqn}@[${c.offsets.join(",")}]`, recipe, pickle, data, bytes };
      return { offsets: c.offsets, sizes: c.sizes, slot: place(c.file, entry, t.fqn) };
    });
    pending.push({ kind: "tensor", fqn: t.fqn, dtype, shape, chunks: placed });
  }
  const sizes = perFile.map((f) => {
    let size = 0;
    for (const slot of [...f.bytes, ...f.chunks]) {
      slot.offset = size;
      size += slot.entry.bytes;
    }
    return size;
  });
  const info = (s: Slot): DcpStorageInfo => ({ relativePath: names[s.file] as string, offset: s.offset, length: s.entry.bytes, transforms: [] });
  const items: (MetadataTensor | MetadataBytes)[] = pending.map((p) =>
    p.kind === "bytes"
      ? { kind: "bytes", fqn: p.fqn, storage: info(p.slot) }
      : { kind: "tensor", fqn: p.fqn, dtype: p.dtype, shape: p.shape, chunks: p.chunks.map((c) => ({ offsets: c.offsets, sizes: c.sizes, storage: info(c.slot) })) },
  );
  const files: PlannedFile[] = perFile.map((f, i) =>
    dataFile(join(dir, names[i] as string), [...f.bytes, ...f.chunks].map((s) => s.entry), sizes[i] as number),
  );
  const metadata: TextFile = { kind: "text", path: join(dir, METADATA_FILE), content: dcpMetadataBytes(items, spec) };
  return [...files, metadata];
}

/** Equal shapes once size-1 axes are left out: the same C-order block of bytes. */
function sameBlock(a: readonly number[], b: readonly number[]): boolean {
  if (a.length === b.length) return a.every((d, i) => d === b[i]);
  const squeeze = (s: readonly number[]) => s.filter((d) => d !== 1).join(",");
  return !a.includes(0) && !b.includes(0) && squeeze(a) === squeeze(b);
}

function chunkPickle(cache: Map<string, Uint8Array>, dtype: Dtype, sizes: readonly number[]): Uint8Array {
  const key = `${dtype}:${sizes.join(",")}`;
  let p = cache.get(key);
  if (!p) {
    p = pickleValue(newTensor(dtype, sizes, "0"));
    cache.set(key, p);
  }
  return p;
}

function dataFile(path: string, entries: readonly Entry[], size: number): CustomFile {
  const tensors: PlannedTensor[] = entries.flatMap((e) => (e.kind === "chunk" ? [{ name: e.name, recipe: e.recipe }] : []));
  return {
    kind: "custom",
    path,
    bytes: size,
    tensors,
    async write(sink, emit) {
      let pos = 0;
      for (const e of entries) {
        if (e.kind === "bytes") {
          for await (const block of byteBlocks(e.data)) {
            await sink.append(block);
            pos += block.byteLength;
          }
          continue;
        }
        const records = torchRecords({ prefix: CHUNK_PREFIX, pickle: e.pickle, storages: [{ key: "0", bytes: e.data, data: lazy(() => emit(e.recipe)) }] });
        pos += await writeZipTo(sink, records, {}, path);
      }
      if (pos !== size) throw new MegahubError("OUTPUT", `wrote ${pos} bytes, planned ${size}`, { file: path });
    },
  };
}

function lazy(make: () => AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  return { [Symbol.asyncIterator]: () => make()[Symbol.asyncIterator]() };
}

async function* byteBlocks(data: Uint8Array | ByteSource, block = 16 << 20): AsyncGenerator<Uint8Array> {
  if (data instanceof Uint8Array) {
    yield data;
    return;
  }
  for (let off = 0; off < data.size; off += block) yield await data.read(off, Math.min(block, data.size - off));
}

/** Writes a DCP directory at `outDir` (staged, renamed into place when complete; an existing non-empty one is refused). */
export async function writeDcp(outDir: string, spec: DcpWriteSpec, options: ExecuteOptions = {}): Promise<ExecuteResult> {
  const files = planDcp(spec);
  const staged = await StagedDir.create(outDir);
  try {
    const result = await executePlan({ files, notes: [] }, staged.path, options);
    await staged.commit();
    return result;
  } catch (e) {
    await staged.abort();
    throw e;
  }
}
