/**
 * What a pickle becomes in megahub: plain data plus inert records. Nothing here can run code; a global is only a
 * (module, name) pair, and a call to it is only a record of the call, kept so it can be written back unchanged.
 */
import type { Dtype } from "../../tensors/dtypes.js";

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

/** dict and collections.OrderedDict; entries keep their insertion order. */
export class PyDict {
  constructor(
    readonly entries: [PyValue, PyValue][] = [],
    readonly ordered = false,
  ) {}

  get(key: string): PyValue | undefined {
    for (const [k, v] of this.entries) {
      if (k === key) return v;
    }
    return undefined;
  }

  set(key: PyValue, value: PyValue): void {
    const i = this.entries.findIndex(([k]) => k === key);
    if (i >= 0) {
      this.entries[i] = [key, value];
    } else {
      this.entries.push([key, value]);
    }
  }

  has(key: string): boolean {
    return this.entries.some(([k]) => k === key);
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
export function* walkTensors(value: PyValue, prefix = "", seen = new Set<object>()): Generator<[string, TorchTensor]> {
  if (value instanceof TorchTensor) {
    yield [prefix, value];
    return;
  }
  if (typeof value !== "object" || value === null || seen.has(value)) {
    return;
  }
  seen.add(value);
  const join = (k: string) => (prefix === "" ? k : `${prefix}.${k}`);
  if (value instanceof PyDict) {
    for (const [k, v] of value.entries) {
      yield* walkTensors(v, join(typeof k === "string" || typeof k === "number" ? String(k) : "?"), seen);
    }
  } else if (value instanceof PyList || value instanceof PyTuple) {
    for (const [i, v] of value.items.entries()) {
      yield* walkTensors(v, join(String(i)), seen);
    }
  }
}
