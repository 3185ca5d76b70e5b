/**
 * The one dtype table. Canonical names are safetensors' spellings; every other spelling (torch storage classes,
 * torch dtype names, ONNX TensorProto enums) is looked up here so no other file carries its own table.
 */
export interface DtypeInfo {
  readonly bytes: number;
  /** torch.<name> and the legacy typed storage class name (absent for dtypes torch saves as UntypedStorage). */
  readonly torch: string;
  readonly storage?: string;
  /** onnx.TensorProto.DataType value. */
  readonly onnx: number;
  readonly float: boolean;
}

export const DTYPES = {
  F64: { bytes: 8, torch: "float64", storage: "DoubleStorage", onnx: 11, float: true },
  F32: { bytes: 4, torch: "float32", storage: "FloatStorage", onnx: 1, float: true },
  F16: { bytes: 2, torch: "float16", storage: "HalfStorage", onnx: 10, float: true },
  BF16: { bytes: 2, torch: "bfloat16", storage: "BFloat16Storage", onnx: 16, float: true },
  I64: { bytes: 8, torch: "int64", storage: "LongStorage", onnx: 7, float: false },
  I32: { bytes: 4, torch: "int32", storage: "IntStorage", onnx: 6, float: false },
  I16: { bytes: 2, torch: "int16", storage: "ShortStorage", onnx: 5, float: false },
  I8: { bytes: 1, torch: "int8", storage: "CharStorage", onnx: 3, float: false },
  U8: { bytes: 1, torch: "uint8", storage: "ByteStorage", onnx: 2, float: false },
  BOOL: { bytes: 1, torch: "bool", storage: "BoolStorage", onnx: 9, float: false },
  C64: { bytes: 8, torch: "complex64", storage: "ComplexFloatStorage", onnx: 14, float: false },
  C128: { bytes: 16, torch: "complex128", storage: "ComplexDoubleStorage", onnx: 15, float: false },
  U16: { bytes: 2, torch: "uint16", onnx: 4, float: false },
  U32: { bytes: 4, torch: "uint32", onnx: 12, float: false },
  U64: { bytes: 8, torch: "uint64", onnx: 13, float: false },
  F8_E4M3: { bytes: 1, torch: "float8_e4m3fn", onnx: 17, float: true },
  F8_E5M2: { bytes: 1, torch: "float8_e5m2", onnx: 19, float: true },
} as const satisfies Record<string, DtypeInfo>;

export type Dtype = keyof typeof DTYPES;

export function isDtype(name: string): name is Dtype {
  return Object.hasOwn(DTYPES, name);
}

export function dtypeInfo(dtype: Dtype): DtypeInfo {
  return DTYPES[dtype];
}

export function dtypeFromStorageClass(storageClass: string): Dtype | undefined {
  return (Object.keys(DTYPES) as Dtype[]).find((d) => (DTYPES[d] as DtypeInfo).storage === storageClass);
}

export function dtypeFromTorchName(name: string): Dtype | undefined {
  return (Object.keys(DTYPES) as Dtype[]).find((d) => DTYPES[d].torch === name);
}

/** Number of elements of a shape; throws when the product is not a safe integer (hostile headers). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const dim of shape) {
    if (!Number.isSafeInteger(dim) || dim < 0) {
      throw new RangeError(`shape dimension ${String(dim)} is not a non-negative integer`);
    }
    n *= dim;
    if (!Number.isSafeInteger(n)) {
      throw new RangeError(`shape [${shape.join(", ")}] has more elements than can be addressed`);
    }
  }
  return n;
}

export function byteSize(dtype: Dtype, shape: readonly number[]): number {
  const n = numel(shape) * DTYPES[dtype].bytes;
  if (!Number.isSafeInteger(n)) {
    throw new RangeError(`shape [${shape.join(", ")}] of ${dtype} is too large`);
  }
  return n;
}
