/**
 * A protocol-2 pickler for the value model of values.ts: the writing half of pickle-read.ts. It emits what
 * CPython's pickler (and so torch.save) emits for the same objects, opcode for opcode where the value model
 * allows, so a checkpoint read and written back means the same thing to torch.load.
 */
import { MegahubError } from "../../errors.js";
import { encodeLong } from "./pickle-scalars.js";
import { DTYPES, type DtypeInfo } from "../../tensors/dtypes.js";
import { isSafeGlobal } from "./safe-globals.js";
import { callProblem } from "./sanitize.js";
import { PyCall, PyDict, PyFloat, PyGlobal, PyList, PySet, PyTuple, TorchStorage, TorchTensor, type PyValue } from "./values.js";

export interface PickleOptions {
  /**
   * The record key a storage is written under. Called once per persistent id in pickling order (the order in
   * which torch's persistent_id assigns keys), so a caller can collect and renumber storages here.
   */
  storageKey?: (storage: TorchStorage) => string;
  /**
   * Write globals that are not on the allow-list (safe-globals.ts). Off by default: torch.load of the output would
   * import and may call them, so callers strip them first (sanitize.ts) and this refuses any that slipped through.
   */
  keepUnknownGlobals?: boolean;
  /** Further globals the caller vets for this file (PyTorch DCP's metadata data classes in a `.metadata`). */
  allowGlobals?: ReadonlySet<string>;
}

/** CPython batches APPENDS/SETITEMS in runs of this many items (pickle.py `_BATCHSIZE`). */
const BATCH = 1000;

const op = {
  MARK: 0x28, STOP: 0x2e, POP: 0x30, POP_MARK: 0x31, BINFLOAT: 0x47, BININT: 0x4a, BININT1: 0x4b, BININT2: 0x4d,
  NONE: 0x4e, BINPERSID: 0x51, REDUCE: 0x52, BINUNICODE: 0x58, EMPTY_LIST: 0x5d, APPEND: 0x61, BUILD: 0x62,
  GLOBAL: 0x63, APPENDS: 0x65, BINGET: 0x68, LONG_BINGET: 0x6a, BINPUT: 0x71, LONG_BINPUT: 0x72, SETITEM: 0x73,
  TUPLE: 0x74, SETITEMS: 0x75, EMPTY_DICT: 0x7d, EMPTY_TUPLE: 0x29, PROTO: 0x80, NEWOBJ: 0x81, TUPLE1: 0x85,
  TUPLE2: 0x86, TUPLE3: 0x87, NEWTRUE: 0x88, NEWFALSE: 0x89, LONG1: 0x8a, LONG4: 0x8b,
} as const;

/** Python 3 writes protocol-2 globals under their Python 2 module names (`_compat_pickle.REVERSE_IMPORT_MAPPING`). */
const PY2_MODULES: Readonly<Record<string, string>> = { builtins: "__builtin__", copyreg: "copy_reg" };

const ORDERED_DICT = new PyGlobal("collections", "OrderedDict");
const REBUILD_V2 = new PyGlobal("torch._utils", "_rebuild_tensor_v2");
const REBUILD_V3 = new PyGlobal("torch._utils", "_rebuild_tensor_v3");
const REBUILD_PARAMETER = new PyGlobal("torch._utils", "_rebuild_parameter");

/** Growable output buffer. */
class Out {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;

  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  byte(b: number): void {
    this.ensure(1);
    this.buf[this.length++] = b;
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  u16(v: number): void {
    this.ensure(2);
    this.view.setUint16(this.length, v, true);
    this.length += 2;
  }
  u32(v: number): void {
    this.ensure(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }
  i32(v: number): void {
    this.ensure(4);
    this.view.setInt32(this.length, v, true);
    this.length += 4;
  }
  f64be(v: number): void {
    this.ensure(8);
    this.view.setFloat64(this.length, v, false);
    this.length += 8;
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

/** UTF-8 with lone surrogates encoded as themselves: Python pickles str with "surrogatepass". */
export function utf8SurrogatePass(s: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return Uint8Array.from(out);
}

function fail(detail: string): never {
  throw new MegahubError("UNSUPPORTED", `pickle writer: ${detail}`);
}

/** Serialises `root` as torch.save's data.pkl does: protocol 2, storages as BINPERSID persistent ids. */
export function pickleValue(root: PyValue, options: PickleOptions = {}): Uint8Array {
  const out = new Out();
  /** Objects by identity; strings and globals by value (Python interns both, so torch's pickles share them too). */
  const memo = new Map<object, number>();
  const strMemo = new Map<string, number>();
  const globalMemo = new Map<string, number>();
  let nextMemo = 0;
  /** Objects being written that are not yet memoized, with how often each is on the stack (cycle guard). */
  const active = new Map<object, number>();
  const keyOf = options.storageKey ?? ((s: TorchStorage) => s.key);

  const put = (): number => {
    const i = nextMemo++;
    if (i < 256) {
      out.byte(op.BINPUT);
      out.byte(i);
    } else {
      out.byte(op.LONG_BINPUT);
      out.u32(i);
    }
    return i;
  };
  const get = (i: number): void => {
    if (i < 256) {
      out.byte(op.BINGET);
      out.byte(i);
    } else {
      out.byte(op.LONG_BINGET);
      out.u32(i);
    }
  };
  const memoize = (obj: object): void => {
    memo.set(obj, put());
  };
  /** Runs `body` for an object that is memoized only after its children; a second visit would never end. */
  const guarded = (obj: object, limit: number, body: () => void): void => {
    const n = active.get(obj) ?? 0;
    if (n >= limit) fail(`a ${obj.constructor.name} contains itself without a list, dict or object in between`);
    active.set(obj, n + 1);
    try {
      body();
    } finally {
      if (n === 0) active.delete(obj);
      else active.set(obj, n);
    }
  };

  const int = (v: bigint): void => {
    if (v >= 0n && v <= 0xffn) {
      out.byte(op.BININT1);
      out.byte(Number(v));
    } else if (v >= 0n && v <= 0xffffn) {
      out.byte(op.BININT2);
      out.u16(Number(v));
    } else if (v >= -0x80000000n && v <= 0x7fffffffn) {
      out.byte(op.BININT);
      out.i32(Number(v));
    } else {
      const b = encodeLong(v);
      if (b.length < 256) {
        out.byte(op.LONG1);
        out.byte(b.length);
      } else {
        out.byte(op.LONG4);
        out.u32(b.length);
      }
      out.bytes(b);
    }
  };
  const str = (s: string): void => {
    const m = strMemo.get(s);
    if (m !== undefined) return get(m);
    const b = utf8SurrogatePass(s);
    out.byte(op.BINUNICODE);
    out.u32(b.length);
    out.bytes(b);
    strMemo.set(s, put());
  };
  const global = (g: PyGlobal): void => {
    if (!options.keepUnknownGlobals && !isSafeGlobal(g.qualified) && !options.allowGlobals?.has(g.qualified)) {
      fail(`global ${g.qualified} is not on megahub's allow-list; torch.load would import it (drop it, or pass keepUnknownGlobals)`);
    }
    const module = PY2_MODULES[g.module] ?? g.module;
    if (/[\n\r]/.test(module) || /[\n\r]/.test(g.name)) fail(`global ${JSON.stringify(g.qualified)} has a line break`);
    const k = `${module}\n${g.name}`;
    const m = globalMemo.get(k);
    if (m !== undefined) return get(m);
    out.byte(op.GLOBAL);
    out.bytes(new TextEncoder().encode(`${k}\n`));
    globalMemo.set(k, put());
  };
  const batches = <T>(items: readonly T[], one: (x: T) => void, single: number, many: number): void => {
    for (let i = 0; i < items.length; i += BATCH) {
      const chunk = items.slice(i, i + BATCH);
      if (chunk.length === 1) {
        one(chunk[0] as T);
        out.byte(single);
      } else {
        out.byte(op.MARK);
        for (const x of chunk) one(x);
        out.byte(many);
      }
    }
  };
  const appends = (items: readonly PyValue[]) => batches(items, save, op.APPEND, op.APPENDS);
  const setItems = (entries: readonly (readonly [PyValue, PyValue])[]) =>
    batches(entries, ([k, v]) => (save(k), save(v)), op.SETITEM, op.SETITEMS);

  /** save_tuple, including CPython's answer to a tuple reached again through its own items (POP, then GET). */
  const tuple = (t: PyTuple | readonly PyValue[]): void => {
    const items = t instanceof PyTuple ? t.items : t;
    const n = items.length;
    if (n === 0) return out.byte(op.EMPTY_TUPLE);
    const body = () => {
      if (n > 3) out.byte(op.MARK);
      for (const v of items) save(v);
      const m = memo.get(t);
      if (m !== undefined) {
        if (n > 3) out.byte(op.POP_MARK);
        else for (let i = 0; i < n; i++) out.byte(op.POP);
        return get(m);
      }
      out.byte(n === 1 ? op.TUPLE1 : n === 2 ? op.TUPLE2 : n === 3 ? op.TUPLE3 : op.TUPLE);
      memoize(t);
    };
    // A tuple may be entered twice (CPython does so for a tuple inside a list inside itself), never three times.
    guarded(t, 2, body);
  };
  /** save_reduce: callable, args, REDUCE/NEWOBJ, memo, then appended items, set items and BUILD state. */
  const reduce = (obj: object, fn: PyValue, args: PyTuple | readonly PyValue[], kind: "reduce" | "newobj") => {
    guarded(obj, 1, () => {
      save(fn);
      tuple(args);
      out.byte(kind === "newobj" ? op.NEWOBJ : op.REDUCE);
    });
    memoize(obj);
  };
  const emptyOrderedDict = () => {
    global(ORDERED_DICT);
    out.byte(op.EMPTY_TUPLE);
    out.byte(op.REDUCE);
    put(); // a fresh OrderedDict() per tensor, as torch builds one per __reduce_ex__ call
  };
  const persistentId = (s: TorchStorage): void => {
    const info: DtypeInfo = DTYPES[s.dtype];
    const untyped = isUntyped(s);
    // The class follows the dtype (the reader derives the dtype from the class, so they agree for read values).
    const cls = new PyGlobal("torch", untyped ? "UntypedStorage" : (info.storage as string));
    const key = keyOf(s);
    // A fresh tuple per reference, as torch's persistent_id returns one per call; its parts are memoized.
    tuple(["storage", cls, key, s.location, untyped ? s.numel * info.bytes : s.numel]);
    out.byte(op.BINPERSID);
  };
  const tensor = (t: TorchTensor): void => {
    const data = (requiresGrad: boolean) => {
      const untyped = isUntyped(t.storage);
      global(untyped ? REBUILD_V3 : REBUILD_V2);
      out.byte(op.MARK);
      persistentId(t.storage);
      int(BigInt(t.storageOffset));
      tuple(new PyTuple(t.shape));
      tuple(new PyTuple(t.stride));
      out.byte(requiresGrad ? op.NEWTRUE : op.NEWFALSE);
      emptyOrderedDict();
      if (untyped) global(new PyGlobal("torch", DTYPES[t.dtype].torch));
      out.byte(op.TUPLE);
      put();
      out.byte(op.REDUCE);
    };
    if (t.isParameter) {
      // Parameter.__reduce_ex__: _rebuild_parameter(self.data, self.requires_grad, OrderedDict()); `.data` is detached.
      global(REBUILD_PARAMETER);
      data(false);
      put();
      out.byte(t.requiresGrad ? op.NEWTRUE : op.NEWFALSE);
      emptyOrderedDict();
      out.byte(op.TUPLE3);
      put();
      out.byte(op.REDUCE);
    } else {
      data(t.requiresGrad);
    }
    memoize(t);
  };

  function save(v: PyValue): void {
    if (v === null) return out.byte(op.NONE);
    switch (typeof v) {
      case "boolean":
        return out.byte(v ? op.NEWTRUE : op.NEWFALSE);
      case "bigint":
        return int(v);
      case "number":
        if (Number.isInteger(v)) return int(BigInt(v));
        out.byte(op.BINFLOAT);
        return out.f64be(v);
      case "string":
        return str(v);
      default:
        break;
    }
    if (v instanceof PyFloat) {
      out.byte(op.BINFLOAT);
      return out.f64be(v.value);
    }
    if (v instanceof PyGlobal) return global(v);
    if (v instanceof TorchStorage) return persistentId(v); // storages are never memoized: each reference is a pid
    const m = memo.get(v);
    if (m !== undefined) return get(m);
    if (v instanceof PyTuple) return tuple(v);
    if (v instanceof PyList) {
      out.byte(op.EMPTY_LIST);
      memoize(v);
      return appends(v.items);
    }
    if (v instanceof PyDict) {
      if (v.ordered) {
        // OrderedDict.__reduce__ → (OrderedDict, (), None, None, iter(items)): REDUCE, then SETITEMS.
        global(ORDERED_DICT);
        out.byte(op.EMPTY_TUPLE);
        out.byte(op.REDUCE);
      } else {
        out.byte(op.EMPTY_DICT);
      }
      memoize(v);
      return setItems(v.entries);
    }
    if (v instanceof PySet) {
      // Protocol < 4: save_reduce(set, (list(obj),)).
      return reduce(v, new PyGlobal("builtins", v.frozen ? "frozenset" : "set"), [new PyList([...v.items])], "reduce");
    }
    if (v instanceof Uint8Array) {
      // Protocol 2 has no bytes opcode: Python 3 writes bytes(b"") or _codecs.encode(latin1 text, "latin1").
      if (v.length === 0) return reduce(v, new PyGlobal("builtins", "bytes"), [], "reduce");
      return reduce(v, new PyGlobal("_codecs", "encode"), [latin1(v), "latin1"], "reduce");
    }
    if (v instanceof TorchTensor) return tensor(v);
    if (v instanceof PyCall) {
      const found = options.keepUnknownGlobals ? undefined : callProblem(v);
      const problem = found !== undefined && options.allowGlobals?.has(found) ? undefined : found;
      if (problem !== undefined) fail(`a call to ${problem} is not on megahub's allow-list; torch.load would run it`);
      reduce(v, v.callable, v.args, v.kind);
      if (v.listItems.length > 0) appends(v.listItems);
      if (v.dictItems.length > 0) setItems(v.dictItems);
      if (v.state !== undefined) {
        save(v.state);
        out.byte(op.BUILD);
      }
      return;
    }
    return fail(`cannot pickle ${Object.prototype.toString.call(v)}`);
  }

  out.byte(op.PROTO);
  out.byte(2);
  save(root);
  out.byte(op.STOP);
  return out.result();
}

/** A storage saved as torch.UntypedStorage (numel in bytes in its id, dtype named by _rebuild_tensor_v3). */
export function isUntyped(s: TorchStorage): boolean {
  const typed = (DTYPES[s.dtype] as DtypeInfo).storage;
  return (s.storageClass.module === "torch" && s.storageClass.name === "UntypedStorage") || typed === undefined;
}

function latin1(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode(...b.subarray(i, i + 8192));
  return s;
}
