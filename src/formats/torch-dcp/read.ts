/**
 * Reading a PyTorch distributed checkpoint (DCP) directory — what Megatron-Core's `torch_dist`, `torch_dcp` and
 * `fsdp_dtensor` formats and torch's own `dcp.save` write — without torch.
 *
 * API (for src/checkpoints/ readers):
 *
 *   const dcp = await openDcp(dirOrTree);           // reads `.metadata` and stats the data files, nothing else
 *   dcp.tensors.get(fqn)  → { fqn, dtype, shape, chunks, recipe, box(offsets, sizes, drop?) }
 *       recipe:  the global tensor, a recipe of read/concat/select over the chunk byte ranges (built lazily, once)
 *       box():   any sub-box, e.g. layer l of a stacked `decoder.layers.<param>` [L, …]:
 *                box([l, 0, 0], [1, R, C], [0]) → a [R, C] recipe reading only that layer's chunks
 *   dcp.bytes.get(fqn)    → ByteSource of a byte item's exact range (`_extra_state/shard_…`, `rng_state/…`,
 *                           `optimizer…/shard_…`: each a torch.save of a list; parse with loadTorch if needed)
 *   dcp.metadata          → the parsed `.metadata` (metadata.ts): version, planner_data kind, mcore_data, globals…
 *   dcp.verifyChunks()    → reads every chunk's zip directory and pickle (no tensor data) for an early, typed error
 *   dcp.close()
 *
 * Each chunk is a complete torch.save zip embedded at [offset, offset + length) of an `__R_N.distcp` file; it is
 * opened on the first read of its bytes (zip directory + data.pkl, a few KB), so building recipes reads nothing and
 * executing one reads exactly the chunks it needs. Coverage (every element in exactly one chunk), missing files and
 * ranges past the end of a file are checked at open.
 */
import { formatError, MegahubError } from "../../errors.js";
import { subSource, type ByteSource } from "../../io/byte-source.js";
import { fsTree, type Tree } from "../../io/tree.js";
import { materializeRows, rowBytes } from "../../plan/materialize.js";
import { readTensor, type Recipe, type StridedRecipe } from "../../plan/recipe.js";
import { byteSize, DTYPES, type Dtype } from "../../tensors/dtypes.js";
import { loadTorch } from "../torch/load.js";
import { TorchTensor } from "../torch/values.js";
import { assembleBox, checkCoverage, type Piece } from "./assemble.js";
import { parseDcpMetadata, type DcpChunk, type DcpMetadata, type DcpStorageInfo } from "./metadata.js";

export const METADATA_FILE = ".metadata";

export interface DcpTensor {
  readonly fqn: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly chunks: readonly DcpChunk[];
  /** The whole global tensor. */
  readonly recipe: Recipe;
  /** A box of the global tensor; `drop` removes axes of size 1 (the layer axis of a stacked key). */
  box(offsets: readonly number[], sizes: readonly number[], drop?: readonly number[]): Recipe;
}

export interface DcpCheckpoint {
  readonly name: string;
  readonly metadata: DcpMetadata;
  readonly tensors: ReadonlyMap<string, DcpTensor>;
  /** Byte items: their exact stored bytes. */
  readonly bytes: ReadonlyMap<string, ByteSource>;
  /** Data files named by the metadata, with their sizes. */
  readonly files: ReadonlyMap<string, number>;
  verifyChunks(): Promise<void>;
  close(): Promise<void>;
}

export async function openDcp(where: string | Tree): Promise<DcpCheckpoint> {
  const tree = typeof where === "string" ? fsTree(where) : where;
  const own = typeof where === "string";
  try {
    return await openTree(tree, own);
  } catch (e) {
    if (own) await tree.close();
    throw e;
  }
}

async function openTree(tree: Tree, own: boolean): Promise<DcpCheckpoint> {
  const metaPath = tree.display(METADATA_FILE);
  if (!(await tree.isFile(METADATA_FILE))) {
    throw new MegahubError("LAYOUT", "no .metadata file: not a PyTorch distributed checkpoint directory", { file: tree.display("") });
  }
  const metaSource = await tree.open(METADATA_FILE);
  const metadata = parseDcpMetadata(await metaSource.read(0, metaSource.size), metaPath);
  const files = new Map<string, ByteSource>();
  for (const { fqn, info } of metadata.storageEntries) {
    if (!files.has(info.relativePath)) {
      if (!(await tree.isFile(info.relativePath))) {
        throw new MegahubError("LAYOUT", `data file ${info.relativePath} named by .metadata is missing`, { file: tree.display(info.relativePath), tensor: fqn });
      }
      files.set(info.relativePath, await tree.open(info.relativePath));
    }
    const file = files.get(info.relativePath) as ByteSource;
    if (info.offset + info.length > file.size) {
      throw formatError(`stored range [${info.offset}, ${info.offset + info.length}) lies past the end of the ${file.size}-byte file`, {
        file: file.name,
        tensor: fqn,
      });
    }
    if (info.transforms.length > 0) {
      throw new MegahubError("UNSUPPORTED", `stored with stream transforms ${info.transforms.join(", ")}`, { file: file.name, tensor: fqn });
    }
  }
  const rangeOf = (fqn: string, offsets?: readonly number[]): { file: ByteSource; info: DcpStorageInfo } => {
    const info = metadata.storage(fqn, offsets) as DcpStorageInfo; // presence checked by parseDcpMetadata
    return { file: files.get(info.relativePath) as ByteSource, info };
  };
  const tensors = new Map<string, DcpTensor>();
  const bytes = new Map<string, ByteSource>();
  const chunkSources: ChunkSource[] = [];
  for (const item of metadata.items.values()) {
    if (item.kind === "bytes") {
      const { file, info } = rangeOf(item.fqn);
      bytes.set(item.fqn, subSource(file, info.offset, info.length, `${file.name}@${info.offset}`));
      continue;
    }
    checkCoverage(item.fqn, item.shape, item.chunks, metaPath);
    const pieces: Piece[] = item.chunks.map((c) => {
      const { file, info } = rangeOf(item.fqn, c.offsets);
      const need = byteSize(item.dtype, c.sizes);
      if (info.length < need) {
        throw formatError(`chunk [${c.offsets.join(", ")}] is stored in ${info.length} bytes, fewer than its ${need} bytes of data`, {
          file: file.name,
          tensor: item.fqn,
        });
      }
      const src = new ChunkSource(file, info, item.fqn, item.dtype, c);
      chunkSources.push(src);
      return { ...c, recipe: readTensor(src, 0, item.dtype, c.sizes, src.name) };
    });
    const { fqn, dtype, shape, chunks } = item;
    let whole: Recipe | undefined;
    tensors.set(fqn, {
      fqn,
      dtype,
      shape,
      chunks,
      get recipe() {
        whole ??= assembleBox(fqn, dtype, pieces, { offsets: shape.map(() => 0), sizes: shape });
        return whole;
      },
      box(offsets, sizes, drop = []) {
        if (offsets.length !== shape.length || sizes.length !== shape.length) {
          throw new MegahubError("USAGE", `box of rank ${offsets.length} for a [${shape.join(", ")}] tensor`, { tensor: fqn });
        }
        for (let d = 0; d < shape.length; d++) {
          const o = offsets[d] as number;
          const s = sizes[d] as number;
          if (!Number.isSafeInteger(o) || !Number.isSafeInteger(s) || o < 0 || s < 0 || o + s > (shape[d] as number)) {
            throw new MegahubError("USAGE", `box [${offsets.join(", ")}] + [${sizes.join(", ")}] lies outside [${shape.join(", ")}]`, { tensor: fqn });
          }
        }
        return assembleBox(fqn, dtype, pieces, { offsets, sizes }, drop);
      },
    });
  }
  return {
    name: tree.display(""),
    metadata,
    tensors,
    bytes,
    files: new Map([...files].map(([k, f]) => [k, f.size])),
    async verifyChunks() {
      for (const c of chunkSources) await c.resolve();
    },
    close: () => (own ? tree.close() : Promise.resolve()),
  };
}

/**
 * The data bytes of one chunk, C-order, resolved on first read: the embedded torch.save zip is opened (directory and
 * data.pkl only) and must hold exactly one tensor of the chunk's dtype and sizes.
 */
class ChunkSource implements ByteSource {
  readonly name: string;
  readonly size: number;
  private pending: Promise<ByteSource> | undefined;

  constructor(
    private readonly file: ByteSource,
    private readonly info: DcpStorageInfo,
    private readonly fqn: string,
    private readonly dtype: Dtype,
    private readonly chunk: DcpChunk,
  ) {
    this.name = `${file.name}@${info.offset}:${fqn}[${chunk.offsets.join(",")}]`;
    this.size = byteSize(dtype, chunk.sizes);
  }

  resolve(): Promise<ByteSource> {
    this.pending ??= this.open();
    return this.pending;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw formatError(`read [${offset}, +${length}) past the ${this.size}-byte chunk`, { file: this.name });
    }
    return (await this.resolve()).read(offset, length);
  }

  private async open(): Promise<ByteSource> {
    const where = { file: `${this.file.name}@${this.info.offset}`, tensor: this.fqn };
    const zip = subSource(this.file, this.info.offset, this.info.length, where.file);
    const head = await zip.read(0, Math.min(4, zip.size));
    if (head.length < 4 || head[0] !== 0x50 || head[1] !== 0x4b || head[2] !== 0x03 || head[3] !== 0x04) {
      throw formatError("chunk is not a torch.save zip (DCP's optional safetensors serialization is not supported)", where);
    }
    const torch = await loadTorch(zip);
    if (torch.report.dangerous.length > 0) {
      throw formatError(`chunk pickle names code-running global ${torch.report.dangerous.join(", ")}`, where);
    }
    const t = torch.root;
    if (!(t instanceof TorchTensor)) throw formatError("chunk pickle does not hold a tensor", where);
    if (t.dtype !== this.dtype || t.shape.length !== this.chunk.sizes.length || t.shape.some((d, i) => d !== this.chunk.sizes[i])) {
      throw formatError(
        `chunk holds a [${t.shape.join(", ")}] ${t.dtype} tensor, .metadata says [${this.chunk.sizes.join(", ")}] ${this.dtype}`,
        where,
      );
    }
    const storage = torch.storageSource(t.storage);
    const w = DTYPES[t.dtype].bytes;
    if (t.contiguous) return subSource(storage, t.storageOffset * w, this.size, this.name);
    const strided: StridedRecipe = { kind: "strided", source: storage, storageOffset: t.storageOffset, stride: t.stride, dtype: t.dtype, shape: t.shape, label: this.name };
    return gathered(strided, this.name);
  }
}

/** A dense-but-permuted chunk (torch.save keeps strides) presented as C-order bytes, gathered row block by row block. */
function gathered(r: StridedRecipe, name: string): ByteSource {
  const rb = Math.max(1, rowBytes(r));
  const stats = { overflows: 0 };
  return {
    name,
    size: byteSize(r.dtype, r.shape),
    async read(offset, length) {
      if (length === 0) return new Uint8Array(0);
      const first = Math.floor(offset / rb);
      const last = Math.ceil((offset + length) / rb);
      const rows = await materializeRows(r, first, last, stats);
      return rows.subarray(offset - first * rb, offset - first * rb + length);
    },
  };
}
