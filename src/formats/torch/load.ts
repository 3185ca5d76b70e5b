import { formatError, MegahubError } from "../../errors.js";
import { readInto, subSource, type ByteSource } from "../../io/byte-source.js";
import { DTYPES } from "../../tensors/dtypes.js";
import { indexTar, looksLikeTar } from "../tar/index.js";
import { unpickle } from "./pickle-read.js";
import { classifyGlobals, makeStorage, makeTensor, rebuildHook, storageFromPid, type GlobalsReport } from "./rebuild.js";
import { PyGlobal, PyTuple, TorchStorage, TorchTensor, type PyValue } from "./values.js";
import { readZip } from "./zip.js";

/** data.pkl of a large checkpoint with optimizer state is a few MB; anything past this is not a checkpoint. */
export const MAX_PICKLE_BYTES = 1 << 30;

export interface TorchFile {
  readonly name: string;
  readonly format: "zip" | "legacy-stream" | "legacy-tar";
  readonly root: PyValue;
  readonly globals: readonly string[];
  readonly report: GlobalsReport;
  /** The record folder of a zip checkpoint ("model_optim_rng" when saved to a path, "archive" from a stream). */
  readonly prefix?: string;
  /** The bytes of a storage, in little-endian order whatever the file's byteorder. */
  storageSource(storage: TorchStorage): ByteSource;
}

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;

/** Detects the format (zip, pre-1.6 tar, pre-1.6 stream) and reads the object tree; tensor bytes stay on disk. */
export async function loadTorch(source: ByteSource): Promise<TorchFile> {
  const head = await source.read(0, Math.min(4, source.size));
  if (head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04) {
    return loadZip(source);
  }
  if (await looksLikeTar(source)) {
    return loadLegacyTar(source);
  }
  return loadLegacyStream(source);
}

async function readAll(src: ByteSource): Promise<Uint8Array> {
  if (src.size > MAX_PICKLE_BYTES) {
    throw formatError(`pickle of ${src.size} bytes exceeds the ${MAX_PICKLE_BYTES}-byte limit`, { file: src.name });
  }
  return src.read(0, src.size);
}

async function loadZip(source: ByteSource): Promise<TorchFile> {
  const file = source.name;
  const zip = await readZip(source);
  const first = zip.entries.keys().next();
  if (first.done) {
    throw formatError("zip archive has no records", { file });
  }
  const slash = first.value.indexOf("/");
  const prefix = slash >= 0 ? first.value.slice(0, slash) : "";
  const rec = (n: string) => (prefix ? `${prefix}/${n}` : n);
  if (zip.entries.has(rec("constants.pkl"))) {
    throw new MegahubError("UNSUPPORTED", "a TorchScript archive, not a torch.save checkpoint", { file });
  }
  if (!zip.entries.has(rec("data.pkl"))) {
    throw formatError(`no ${rec("data.pkl")} record: not a torch.save archive`, { file });
  }
  let bigEndian = false;
  if (zip.entries.has(rec("byteorder"))) {
    const bo = new TextDecoder().decode(await readAll(await zip.open(rec("byteorder")))).trim();
    if (bo !== "little" && bo !== "big") {
      throw formatError(`byteorder record says "${bo.slice(0, 20)}", expected "little" or "big"`, { file });
    }
    bigEndian = bo === "big";
  }
  const pkl = await readAll(await zip.open(rec("data.pkl")));
  const { value, globals } = unpickle(pkl, `${file}#data.pkl`, {
    persistentLoad: (pid) => storageFromPid(pid, file),
    reduce: rebuildHook(file),
  });
  const sources = new Map<string, ByteSource>();
  return {
    name: file,
    format: "zip",
    root: value,
    globals,
    report: classifyGlobals(globals),
    prefix,
    storageSource(storage) {
      const cached = sources.get(storage.key);
      if (cached) {
        return cached;
      }
      const entry = zip.entries.get(rec(`data/${storage.key}`));
      if (!entry) {
        throw formatError(`storage record data/${storage.key} is missing`, { file });
      }
      const bytes = storage.numel * DTYPES[storage.dtype].bytes;
      if (entry.size < bytes) {
        throw formatError(`storage data/${storage.key} holds ${entry.size} bytes, expected ${bytes}`, { file });
      }
      const src = lazyRecord(() => zip.open(rec(`data/${storage.key}`)), bytes, `${file}#data/${storage.key}`);
      const out = bigEndian ? byteSwapped(src, DTYPES[storage.dtype].bytes) : src;
      sources.set(storage.key, out);
      return out;
    },
  };
}

/** Resolves a zip record's data offset on first read (one local-header read per storage, not per file open). */
function lazyRecord(open: () => Promise<ByteSource>, size: number, name: string): ByteSource {
  let pending: Promise<ByteSource> | undefined;
  return {
    name,
    size,
    async read(offset, length) {
      pending ??= open();
      const src = await pending;
      if (offset + length > size) {
        throw formatError(`read [${offset}, +${length}) past the ${size}-byte storage`, { file: name });
      }
      return src.read(offset, length);
    },
    async readInto(target, offset) {
      pending ??= open();
      const src = await pending;
      if (offset + target.byteLength > size) {
        throw formatError(`read [${offset}, +${target.byteLength}) past the ${size}-byte storage`, { file: name });
      }
      return readInto(src, target, offset);
    },
  };
}

function byteSwapped(src: ByteSource, width: number): ByteSource {
  return {
    name: src.name,
    size: src.size,
    async read(offset, length) {
      const lo = offset - (offset % width);
      const hi = Math.ceil((offset + length) / width) * width;
      const raw = (await src.read(lo, hi - lo)).slice();
      for (let i = 0; i < raw.length; i += width) raw.subarray(i, i + width).reverse();
      return raw.subarray(offset - lo, offset - lo + length);
    },
  };
}

async function loadLegacyStream(source: ByteSource): Promise<TorchFile> {
  const file = source.name;
  const bytes = await readAll(source);
  const magic = unpickle(bytes, file);
  if (magic.value !== LEGACY_MAGIC && BigInt(typeof magic.value === "number" ? magic.value : -1) !== LEGACY_MAGIC) {
    throw formatError("not a torch checkpoint: no zip signature, no tar header, no legacy magic number", { file });
  }
  const proto = unpickle(bytes, file, {}, magic.end);
  if (proto.value !== 1001) {
    throw formatError(`legacy protocol version ${String(proto.value)}, expected 1001`, { file });
  }
  const sysInfo = unpickle(bytes, file, {}, proto.end);
  const roots = new Map<string, TorchStorage>();
  const views: { storage: TorchStorage; root: string; offset: number }[] = [];
  const main = unpickle(
    bytes,
    file,
    {
      persistentLoad: (pid) => {
        // ("storage", class, root_key, location, numel, view_metadata)
        if (!(pid instanceof PyTuple) || pid.items[0] !== "storage" || pid.items.length < 6) {
          if (pid instanceof PyTuple && pid.items[0] === "module") {
            return pid.items[1] ?? null;
          }
          throw formatError("unknown legacy persistent id", { file });
        }
        const root = storageFromPid(new PyTuple(pid.items.slice(0, 5)), file);
        const known = roots.get(root.key) ?? root;
        roots.set(root.key, known);
        const view = pid.items[5];
        if (view instanceof PyTuple) {
          const [vkey, voff, vsize] = view.items;
          if (typeof vkey !== "string" || typeof voff !== "number" || typeof vsize !== "number") {
            throw formatError("malformed storage view metadata", { file });
          }
          const s = new TorchStorage(vkey, known.dtype, known.location, vsize, known.storageClass);
          views.push({ storage: s, root: known.key, offset: voff });
          return s;
        }
        return known;
      },
      reduce: rebuildHook(file),
    },
    sysInfo.end,
  );
  const keysPickle = unpickle(bytes, file, {}, main.end);
  const keys = keysPickle.value;
  if (!(keys instanceof Object) || !("items" in keys) || !Array.isArray(keys.items)) {
    throw formatError("legacy storage key list is missing", { file });
  }
  const sources = new Map<string, ByteSource>();
  let pos = keysPickle.end;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (const key of keys.items as PyValue[]) {
    const storage = typeof key === "string" ? roots.get(key) : undefined;
    if (!storage) {
      throw formatError(`legacy storage key ${String(key)} was never referenced`, { file });
    }
    if (pos + 8 > bytes.length) {
      throw formatError(`storage ${storage.key} header is truncated`, { file, offset: pos });
    }
    const count = Number(dv.getBigInt64(pos, true));
    const n = count * DTYPES[storage.dtype].bytes;
    if (count < 0 || count !== storage.numel || pos + 8 + n > bytes.length) {
      throw formatError(`storage ${storage.key}: ${count} elements recorded, ${storage.numel} expected`, {
        file,
        offset: pos,
      });
    }
    sources.set(storage.key, subSource(source, pos + 8, n, `${file}#storage/${storage.key}`));
    pos += 8 + n;
  }
  for (const v of views) {
    const root = sources.get(v.root);
    const w = DTYPES[v.storage.dtype].bytes;
    if (root) sources.set(v.storage.key, subSource(root, v.offset * w, v.storage.numel * w));
  }
  return legacyFile(file, "legacy-stream", main.value, [...magic.globals, ...main.globals], sources);
}

function legacyFile(
  name: string,
  format: TorchFile["format"],
  root: PyValue,
  globals: string[],
  sources: Map<string, ByteSource>,
): TorchFile {
  return {
    name,
    format,
    root,
    globals,
    report: classifyGlobals(globals),
    storageSource(storage) {
      const s = sources.get(storage.key);
      if (!s) {
        throw formatError(`storage ${storage.key} has no data`, { file: name });
      }
      return s;
    },
  };
}

/** The pre-0.4 tar layout: members "storages", "tensors" and "pickle" (torch/serialization.py legacy_load). */
async function loadLegacyTar(source: ByteSource): Promise<TorchFile> {
  const file = source.name;
  const members = new Map((await indexTar(source)).map((m) => [m.name, m]));
  const member = async (n: string) => {
    const m = members.get(n);
    if (!m) {
      throw formatError(`tar checkpoint has no "${n}" member`, { file });
    }
    return { bytes: await readAll(m.source), src: m.source };
  };
  const storages = new Map<string, TorchStorage>();
  const sources = new Map<string, ByteSource>();
  const st = await member("storages");
  const dv = new DataView(st.bytes.buffer, st.bytes.byteOffset, st.bytes.byteLength);
  let r = unpickle(st.bytes, file);
  const count = r.value;
  if (typeof count !== "number" || count < 0) {
    throw formatError("storages member does not start with a count", { file });
  }
  for (let i = 0; i < count; i++) {
    r = unpickle(st.bytes, file, {}, r.end);
    const rec = r.value;
    const [rawKey, location, cls] = rec instanceof PyTuple ? rec.items : [];
    const key = legacyKey(rawKey);
    if (key === undefined || typeof location !== "string" || !(cls instanceof PyGlobal)) {
      throw formatError(`storage record ${i} is not (key, location, storage_type)`, { file });
    }
    if (r.end + 8 > st.bytes.length) {
      throw formatError(`storage ${key} is truncated`, { file });
    }
    const n = Number(dv.getBigInt64(r.end, true));
    const storage = makeStorage(cls, key, location, Math.max(n, 0), file);
    const len = storage.numel * DTYPES[storage.dtype].bytes;
    if (n < 0 || r.end + 8 + len > st.bytes.length) {
      throw formatError(`storage ${key} claims ${n} elements past the member's end`, { file });
    }
    storages.set(key, storage);
    sources.set(key, subSource(st.src, r.end + 8, len, `${file}#storages/${key}`));
    r = { ...r, end: r.end + 8 + len };
  }
  const viewList = unpickle(st.bytes, file, {}, r.end).value;
  for (const v of viewList instanceof Object && "items" in viewList && Array.isArray(viewList.items) ? viewList.items : []) {
    const [rawTarget, rawRoot, offset, numel] = v instanceof PyTuple ? v.items : [];
    const target = legacyKey(rawTarget);
    const root = legacyKey(rawRoot);
    const base = root === undefined ? undefined : storages.get(root);
    const baseSrc = root === undefined ? undefined : sources.get(root);
    if (target === undefined || !base || !baseSrc || typeof offset !== "number" || typeof numel !== "number") {
      throw formatError("malformed storage view record", { file });
    }
    const w = DTYPES[base.dtype].bytes;
    storages.set(target, new TorchStorage(target, base.dtype, base.location, numel, base.storageClass));
    sources.set(target, subSource(baseSrc, offset * w, numel * w));
  }
  const tensors = new Map<string, TorchTensor>();
  const tn = await member("tensors");
  const tdv = new DataView(tn.bytes.buffer, tn.bytes.byteOffset, tn.bytes.byteLength);
  r = unpickle(tn.bytes, file);
  const nt = typeof r.value === "number" ? r.value : -1;
  for (let i = 0; i < nt; i++) {
    r = unpickle(tn.bytes, file, {}, r.end);
    const [rawKey, sid] = r.value instanceof PyTuple ? r.value.items : [];
    const key = legacyKey(rawKey);
    const sidKey = legacyKey(sid);
    const storage = sidKey === undefined ? undefined : storages.get(sidKey);
    if (key === undefined || !storage) {
      throw formatError(`tensor record ${i} names an unknown storage`, { file });
    }
    let p = r.end;
    const need = (k: number) => {
      if (p + k > tn.bytes.length) throw formatError(`tensor ${key} record is truncated`, { file });
    };
    need(8);
    const ndim = tdv.getInt32(p, true);
    p += 8;
    if (ndim < 0 || ndim > 64) throw formatError(`tensor ${key} has ${ndim} dims`, { file });
    need(16 * ndim + 8);
    const read = () => {
      const v = Number(tdv.getBigInt64(p, true));
      p += 8;
      return v;
    };
    const shape = Array.from({ length: ndim }, read);
    const stride = Array.from({ length: ndim }, read);
    const offset = read();
    if (shape.some((d) => d < 0) || stride.some((d) => d < 0) || offset < 0) {
      throw formatError(`tensor ${key} has negative sizes`, { file });
    }
    tensors.set(key, makeTensor(storage, offset, shape, stride, false, false, file));
    r = { ...r, end: p };
  }
  const pk = await member("pickle");
  const main = unpickle(pk.bytes, file, {
    persistentLoad: (pid) => {
      if (pid instanceof PyTuple) return pid.items[0] ?? null; // ("module", …) source records
      const k = legacyKey(pid);
      const t = k === undefined ? undefined : (tensors.get(k) ?? storages.get(k));
      if (!t) throw formatError(`persistent id ${String(k)} is not a saved tensor or storage`, { file });
      return t;
    },
    reduce: rebuildHook(file),
  });
  return legacyFile(file, "legacy-tar", main.value, main.globals, sources);
}

/** The tar format keyed objects by their C pointers (ints); the pickle names them as decimal strings. */
function legacyKey(v: PyValue | undefined): string | undefined {
  if (typeof v === "string") return /^\d+$/.test(v) ? String(BigInt(v)) : v;
  if (typeof v === "number" || typeof v === "bigint") return String(v);
  return undefined;
}
