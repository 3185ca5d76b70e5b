import { formatError } from "../../errors.js";
import { byteSize, dtypeFromStorageClass, dtypeFromTorchName, DTYPES, type Dtype } from "../../tensors/dtypes.js";
import { unvettedGlobals } from "./safe-globals.js";
import { PyGlobal, PyTuple, TorchStorage, TorchTensor, type PyValue } from "./values.js";

export interface GlobalsReport {
  /** Globals not on the allow-list (safe-globals.ts): torch.load would import them and may run them. */
  unknown: string[];
  /** The same list: an allow-list cannot tell harmless unknowns from code-running ones, so all are reported. */
  dangerous: string[];
}

export function classifyGlobals(globals: readonly string[]): GlobalsReport {
  const unknown = unvettedGlobals(globals);
  return { unknown, dangerous: [...unknown] };
}

/** Reads ("storage", <class>, key, location, numel) — the persistent id of the zip format. */
export function storageFromPid(pid: PyValue, file: string): TorchStorage {
  if (!(pid instanceof PyTuple) || pid.items.length < 5 || pid.items[0] !== "storage") {
    throw formatError("persistent id is not a ('storage', class, key, location, numel) tuple", { file });
  }
  const [, cls, key, location, n] = pid.items;
  if (!(cls instanceof PyGlobal) || typeof key !== "string" || typeof location !== "string" || !isCount(n)) {
    throw formatError("malformed storage persistent id", { file });
  }
  return makeStorage(cls, key, location, n, file);
}

export function makeStorage(cls: PyGlobal, key: string, location: string, n: number, file: string): TorchStorage {
  if (cls.module === "torch" && cls.name === "UntypedStorage") {
    // Untyped storages count bytes; the tensor that uses them (rebuild_tensor_v3) names the dtype.
    return new TorchStorage(key, "U8", location, n, cls);
  }
  const dtype = cls.module === "torch" ? dtypeFromStorageClass(cls.name) : undefined;
  if (!dtype) {
    throw formatError(`unknown storage class ${cls.qualified}`, { file });
  }
  return new TorchStorage(key, dtype, location, n, cls);
}

function isCount(v: PyValue | undefined): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function intTuple(v: PyValue | undefined, what: string, file: string): number[] {
  if (!(v instanceof PyTuple) || !v.items.every(isCount)) {
    throw formatError(`${what} must be a tuple of non-negative integers`, { file });
  }
  return v.items as number[];
}

/** The hook that turns torch's rebuild calls into tensor descriptors and leaves every other call inert. */
export function rebuildHook(file: string): (fn: PyGlobal, args: PyTuple) => PyValue | undefined {
  return (fn, args) => {
    if (fn.module !== "torch._utils") {
      return undefined;
    }
    const a = args.items;
    switch (fn.name) {
      case "_rebuild_tensor":
      case "_rebuild_tensor_v2":
      case "_rebuild_tensor_v3": {
        let storage = a[0];
        if (!(storage instanceof TorchStorage)) {
          throw formatError(`${fn.name}: first argument is not a storage`, { file });
        }
        const offset = a[1];
        if (!isCount(offset)) {
          throw formatError(`${fn.name}: storage offset must be a non-negative integer`, { file });
        }
        const shape = intTuple(a[2], "tensor size", file);
        const stride = intTuple(a[3], "tensor stride", file);
        if (fn.name === "_rebuild_tensor_v3") {
          storage = retype(storage, a[6], file);
        }
        return makeTensor(storage, offset, shape, stride, a[4] === true, false, file);
      }
      case "_rebuild_parameter":
      case "_rebuild_parameter_with_state": {
        const t = a[0];
        if (!(t instanceof TorchTensor)) {
          throw formatError(`${fn.name}: data is not a tensor`, { file });
        }
        return new TorchTensor(t.storage, t.storageOffset, t.shape, t.stride, a[1] === true, true);
      }
      default:
        return undefined;
    }
  };
}

function retype(storage: TorchStorage, dtypeArg: PyValue | undefined, file: string): TorchStorage {
  const dtype: Dtype | undefined =
    dtypeArg instanceof PyGlobal && dtypeArg.module === "torch" ? dtypeFromTorchName(dtypeArg.name) : undefined;
  if (!dtype) {
    throw formatError("_rebuild_tensor_v3: unknown dtype argument", { file });
  }
  const size = DTYPES[dtype].bytes;
  if (storage.numel % size !== 0) {
    throw formatError(`untyped storage of ${storage.numel} bytes is not a whole number of ${dtype} elements`, { file });
  }
  return new TorchStorage(storage.key, dtype, storage.location, storage.numel / size, storage.storageClass);
}

export function makeTensor(
  storage: TorchStorage,
  offset: number,
  shape: number[],
  stride: number[],
  requiresGrad: boolean,
  isParameter: boolean,
  file: string,
): TorchTensor {
  if (shape.length !== stride.length) {
    throw formatError(`tensor has ${shape.length} sizes but ${stride.length} strides`, { file });
  }
  byteSize(storage.dtype, shape); // throws on overflow
  let last = offset;
  let empty = false;
  for (let i = 0; i < shape.length; i++) {
    const dim = shape[i] as number;
    if (dim === 0) empty = true;
    last += (dim - 1) * (stride[i] as number);
  }
  if (!empty && last >= storage.numel) {
    throw formatError(
      `tensor [${shape.join(", ")}] at offset ${offset} with strides [${stride.join(", ")}] reaches element ${last} of a ${storage.numel}-element storage`,
      { file },
    );
  }
  return new TorchTensor(storage, offset, shape, stride, requiresGrad, isParameter);
}
