/**
 * What a pickle becomes in megahub: plain data plus inert records. Nothing here can run code; a global is only a
 * (module, name) pair, and a call to it is only a record of the call, kept so it can be written back unchanged.
 */
import { MegahubError } from "../../errors.js";
import type { Dtype } from "../../tensors/dtypes.js";

/** How deep walkers follow nested containers before refusing (a typed error, not a stack overflow). */
export const MAX_WALK_DEPTH = 1000;

export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | PyFloat
  | Uint8Array
  | PyList
  | PyTuple
  | PyDict
  | PySet
  | PyGlobal
  | PyCall
  | TorchStorage
  | TorchTensor;

/** A Python float whose value happens to be integral (3.0) must stay a float when written back. */
export class PyFloat {
  constructor(readonly value: number) {}
}

export class PyList {
  constructor(readonly items: PyValue[] = []) {}
}

export class PyTuple {
  constructor(readonly items: readonly PyValue[]) {}
}

export class PySet {
  constructor(
    readonly items: PyValue[] = [],
    readonly frozen = false,
  ) {}
}

/**
 * dict and collections.OrderedDict; entries keep their insertion order. Keys are compared by identity (=== for
 * strings and numbers), through an index so that a pickle's n SETITEMs cost O(n), not O(n²).
 */
export class PyDict {
  /** Key → first position in `entries`; rebuilt when `entries` was changed from outside (its length no longer matches). */
  private index: Map<PyValue, number> | undefined;
  private indexedLength = 0;

  constructor(
    readonly entries: [PyValue, PyValue][] = [],
    readonly ordered = false,
  ) {}

  private lookup(): Map<PyValue, number> {
    if (this.index === undefined || this.indexedLength !== this.entries.length) {
      const index = new Map<PyValue, number>();
      this.entries.forEach(([k], i) => {
        if (!index.has(k)) index.set(k, i);
      });
      this.index = index;
      this.indexedLength = this.entries.length;
    }
    return this.index;
  }

  get(key: string): PyValue | undefined {
    const i = this.lookup().get(key);
    return i === undefined ? undefined : (this.entries[i] as [PyValue, PyValue])[1];
  }

  set(key: PyValue, value: PyValue): void {
    const index = this.lookup();
    const i = index.get(key);
    if (i !== undefined && this.entries[i]?.[0] === key) {
      this.entries[i] = [key, value];
    } else {
      index.set(key, this.entries.length);
      this.entries.push([key, value]);
      this.indexedLength = this.entries.length;
    }
  }

  has(key: string): boolean {
    return this.lookup().has(key);
  }
}

export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}

  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/**
 * An inert record of `callable(*args)` (REDUCE), `cls.__new__(cls, *args)` (NEWOBJ) or an old-style INST/OBJ,
 * with the BUILD state and appended items that followed it. argparse.Namespace, enums, numpy arrays and any
 * hostile call alike end up here.
 */
export class PyCall {
  state: PyValue | undefined = undefined;
  readonly listItems: PyValue[] = [];
  readonly dictItems: [PyValue, PyValue][] = [];

  constructor(
    readonly callable: PyValue,
    readonly args: PyTuple,
    readonly kind: "reduce" | "newobj" = "reduce",
  ) {}

  get global(): PyGlobal | undefined {
    return this.callable instanceof PyGlobal ? this.callable : undefined;
  }

  /** argparse.Namespace fields (its BUILD state is the instance __dict__). */
  field(name: string): PyValue | undefined {
    return this.state instanceof PyDict ? this.state.get(name) : undefined;
  }
}

/** A storage named by a persistent id: ("storage", <storage class>, key, location, numel). */
export class TorchStorage {
  constructor(
    readonly key: string,
    readonly dtype: Dtype,
    readonly location: string,
    /** Elements of `dtype` (torch counts bytes for UntypedStorage; the reader converts). */
    readonly numel: number,
    /** How the storage type was spelled, so a writer can reproduce it. */
    readonly storageClass: PyGlobal,
  ) {}
}

export class TorchTensor {
  constructor(
    readonly storage: TorchStorage,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
    readonly requiresGrad: boolean,
    readonly isParameter: boolean,
  ) {}

  get dtype(): Dtype {
    return this.storage.dtype;
  }

  /** True when the elements are a dense C-order block (the common case: the executor reads one byte range). */
  get contiguous(): boolean {
    let expected = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      const dim = this.shape[i] as number;
      if (dim !== 1 && this.stride[i] !== expected) {
        return false;
      }
      expected *= dim;
    }
    return true;
  }
}

/** Walks a value tree and yields every tensor with its dotted path (dict keys, list indices). Cycles are skipped. */
export function* walkTensors(value: PyValue, prefix = "", seen = new Set<object>(), depth = 0): Generator<[string, TorchTensor]> {
  if (value instanceof TorchTensor) {
    yield [prefix, value];
    return;
  }
  if (typeof value !== "object" || value === null || seen.has(value)) {
    return;
  }
  // Recursion must stay bounded for hostile nesting; real state dicts are a handful of levels deep.
  if (depth > MAX_WALK_DEPTH) throw new MegahubError("FORMAT", `value tree nests deeper than ${MAX_WALK_DEPTH} levels`);
  seen.add(value);
  const join = (k: string) => (prefix === "" ? k : `${prefix}.${k}`);
  if (value instanceof PyDict) {
    for (const [k, v] of value.entries) {
      yield* walkTensors(v, join(typeof k === "string" || typeof k === "number" ? String(k) : "?"), seen, depth + 1);
    }
  } else if (value instanceof PyList || value instanceof PyTuple) {
    for (const [i, v] of value.items.entries()) {
      yield* walkTensors(v, join(String(i)), seen, depth + 1);
    }
  }
}
