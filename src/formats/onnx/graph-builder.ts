import { DTYPES } from "../../tensors/dtypes.js";
import type {
  OnnxAttributeValue,
  OnnxDataType,
  OnnxDim,
  OnnxExternalData,
  OnnxGraph,
  OnnxNode,
  OnnxTensor,
  OnnxValueInfo,
} from "./proto.js";

/** Attribute constructors, so an int 1 and a float 1.0 cannot be confused. */
export const attr = {
  int: (value: number): OnnxAttributeValue => ({ kind: "int", value }),
  ints: (value: readonly number[]): OnnxAttributeValue => ({ kind: "ints", value }),
  float: (value: number): OnnxAttributeValue => ({ kind: "float", value }),
  string: (value: string): OnnxAttributeValue => ({ kind: "string", value }),
};

export type Attributes = Readonly<Record<string, OnnxAttributeValue>>;

/**
 * Builds a GraphProto one node at a time. Every value gets a unique name from a scope prefix, so block-building
 * helpers can be called once per layer without coordinating names.
 *
 * @example
 * const g = new GraphBuilder("tiny");
 * const x = g.input("x", DTYPES.F32.onnx, ["batch", 4]);
 * g.output(g.op("Relu", [x]), "y", DTYPES.F32.onnx, ["batch", 4]);
 */
export class GraphBuilder {
  private readonly nodes: OnnxNode[] = [];
  private readonly initializers: OnnxTensor[] = [];
  private readonly inputs: OnnxValueInfo[] = [];
  private readonly outputs: OnnxValueInfo[] = [];
  private readonly used = new Set<string>();
  private readonly constCache = new Map<string, string>();
  private counter = 0;
  private scopePrefix = "";

  constructor(readonly name: string) {}

  /** Runs `body` with value names prefixed by `prefix/` (e.g. "encoder.0/"), for readable graphs in Netron. */
  scope<T>(prefix: string, body: () => T): T {
    const saved = this.scopePrefix;
    this.scopePrefix = `${saved}${prefix}/`;
    try {
      return body();
    } finally {
      this.scopePrefix = saved;
    }
  }

  /** A fresh value name. */
  fresh(hint: string): string {
    let name: string;
    do {
      name = `${this.scopePrefix}${hint}_${this.counter++}`;
    } while (this.used.has(name));
    this.used.add(name);
    return name;
  }

  input(name: string, elemType: OnnxDataType, shape: readonly OnnxDim[]): string {
    this.claim(name);
    this.inputs.push({ name, elemType, shape });
    return name;
  }

  /** Declares `value` as a graph output named `name` (adding an Identity when the names differ). */
  output(value: string, name: string, elemType: OnnxDataType, shape: readonly OnnxDim[]): void {
    if (value !== name) {
      this.claim(name);
      this.nodes.push({ opType: "Identity", inputs: [value], outputs: [name] });
    }
    this.outputs.push({ name, elemType, shape });
  }

  /** Adds a node with one output and returns that output's name. */
  op(opType: string, inputs: readonly string[], attributes?: Attributes): string {
    const [out] = this.opN(opType, inputs, 1, attributes);
    return out as string;
  }

  /** Adds a node with `n` outputs. An empty input name means "optional input omitted", as in ONNX. */
  opN(opType: string, inputs: readonly string[], n: number, attributes?: Attributes): string[] {
    const outputs = Array.from({ length: n }, () => this.fresh(opType));
    this.nodes.push({
      opType,
      inputs,
      outputs,
      name: this.fresh(`${opType}_node`),
      ...(attributes ? { attributes } : {}),
    });
    return outputs;
  }

  /** An int64 constant initializer (shapes, axes, indices). Identical constants are shared. */
  constI64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const bytes = new Uint8Array(values.length * 8);
    const view = new DataView(bytes.buffer);
    values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
    return this.inlineConst("i64", DTYPES.I64.onnx, dims, bytes);
  }

  /** A float32 constant initializer. Identical constants are shared. */
  constF32(values: ArrayLike<number>, dims: readonly number[] = [values.length]): string {
    const f = Float32Array.from(values as ArrayLike<number>);
    return this.inlineConst("f32", DTYPES.F32.onnx, dims, new Uint8Array(f.buffer));
  }

  /** A scalar float32 constant (scales, mask fill values). */
  scalarF32(value: number): string {
    return this.constF32([value], []);
  }

  /** An initializer whose bytes live in another file (external data); nothing is copied. */
  external(name: string, dataType: OnnxDataType, dims: readonly number[], external: OnnxExternalData): string {
    this.claim(name);
    this.initializers.push({ name, dataType, dims, external });
    return name;
  }

  /** An initializer with inline bytes. */
  inline(name: string, dataType: OnnxDataType, dims: readonly number[], raw: Uint8Array): string {
    this.claim(name);
    this.initializers.push({ name, dataType, dims, raw });
    return name;
  }

  build(): OnnxGraph {
    return {
      name: this.name,
      nodes: this.nodes,
      initializers: this.initializers,
      inputs: this.inputs,
      outputs: this.outputs,
    };
  }

  private inlineConst(kind: string, dataType: OnnxDataType, dims: readonly number[], raw: Uint8Array): string {
    const key = `${kind}:${dims.join("x")}:${Buffer.from(raw).toString("base64")}`;
    const hit = this.constCache.get(key);
    if (hit !== undefined) return hit;
    // Constants are global: no scope prefix, so sharing across scopes keeps sensible names.
    const saved = this.scopePrefix;
    this.scopePrefix = "";
    const name = this.fresh(`const_${kind}`);
    this.scopePrefix = saved;
    this.initializers.push({ name, dataType, dims, raw });
    this.constCache.set(key, name);
    return name;
  }

  private claim(name: string): void {
    if (this.used.has(name)) {
      throw new TypeError(`graph "${this.name}": value name "${name}" is already used`);
    }
    this.used.add(name);
  }
}
