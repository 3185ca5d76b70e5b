import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";

/**
 * The subset of onnx.proto that megahub writes, as plain TypeScript values, and its protobuf encoding.
 *
 * Why hand-written field numbers instead of generated code: we write six message types and read none, the field
 * numbers of onnx.proto have been frozen since IR 3, and a generated schema for all of onnx.proto would be ~3k lines
 * of code we never call. @bufbuild/protobuf's BinaryWriter does the wire encoding (varints, length-delimited forks),
 * so nothing here touches bytes directly. Field numbers are from onnx/onnx.proto (ONNX 1.18).
 */

/** onnx.TensorProto.DataType values we use; the full table lives in src/tensors/dtypes.ts. */
export type OnnxDataType = number;

export interface OnnxExternalData {
  /** Path of the data file, relative to the directory of the .onnx file (ORT rejects absolute paths). */
  location: string;
  offset: number;
  length: number;
}

export interface OnnxTensor {
  name: string;
  dataType: OnnxDataType;
  dims: readonly number[];
  /** Little-endian bytes, inlined in the model. Exactly one of raw and external is set. */
  raw?: Uint8Array;
  external?: OnnxExternalData;
}

/** A dimension: a fixed size or a symbolic name ("batch"), which makes the graph accept any size there. */
export type OnnxDim = number | string;

export interface OnnxValueInfo {
  name: string;
  elemType: OnnxDataType;
  shape: readonly OnnxDim[];
}

export type OnnxAttributeValue =
  | { kind: "float"; value: number }
  | { kind: "int"; value: number }
  | { kind: "string"; value: string }
  | { kind: "tensor"; value: OnnxTensor }
  | { kind: "floats"; value: readonly number[] }
  | { kind: "ints"; value: readonly number[] };

export interface OnnxNode {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name?: string;
  domain?: string;
  attributes?: Readonly<Record<string, OnnxAttributeValue>>;
}

export interface OnnxGraph {
  name: string;
  nodes: readonly OnnxNode[];
  initializers: readonly OnnxTensor[];
  inputs: readonly OnnxValueInfo[];
  outputs: readonly OnnxValueInfo[];
}

export interface OnnxModel {
  irVersion: number;
  opsets: readonly { domain: string; version: number }[];
  producerName: string;
  producerVersion: string;
  graph: OnnxGraph;
  docString?: string;
  metadata?: Readonly<Record<string, string>>;
}

/** AttributeProto.AttributeType. */
const ATTR_TYPE = { float: 1, int: 2, string: 3, tensor: 4, floats: 6, ints: 7 } as const;

/** TensorProto.DataLocation.EXTERNAL. */
const DATA_LOCATION_EXTERNAL = 1;

/** Serialises a model to the bytes of a .onnx file. */
export function encodeModel(model: OnnxModel): Uint8Array {
  const w = new BinaryWriter();
  // ModelProto: ir_version=1, producer_name=2, producer_version=3, doc_string=6, graph=7, opset_import=8,
  // metadata_props=14.
  w.tag(1, WireType.Varint).int64(model.irVersion);
  w.tag(2, WireType.LengthDelimited).string(model.producerName);
  w.tag(3, WireType.LengthDelimited).string(model.producerVersion);
  if (model.docString !== undefined) {
    w.tag(6, WireType.LengthDelimited).string(model.docString);
  }
  w.tag(7, WireType.LengthDelimited).fork();
  writeGraph(w, model.graph);
  w.join();
  for (const opset of model.opsets) {
    // OperatorSetIdProto: domain=1, version=2.
    w.tag(8, WireType.LengthDelimited).fork();
    w.tag(1, WireType.LengthDelimited).string(opset.domain);
    w.tag(2, WireType.Varint).int64(opset.version);
    w.join();
  }
  for (const [key, value] of Object.entries(model.metadata ?? {})) {
    writeStringEntry(w, 14, key, value);
  }
  return w.finish();
}

function writeGraph(w: BinaryWriter, g: OnnxGraph): void {
  // GraphProto: node=1, name=2, initializer=5, input=11, output=12.
  for (const node of g.nodes) {
    w.tag(1, WireType.LengthDelimited).fork();
    writeNode(w, node);
    w.join();
  }
  w.tag(2, WireType.LengthDelimited).string(g.name);
  for (const t of g.initializers) {
    w.tag(5, WireType.LengthDelimited).fork();
    writeTensor(w, t);
    w.join();
  }
  for (const v of g.inputs) {
    w.tag(11, WireType.LengthDelimited).fork();
    writeValueInfo(w, v);
    w.join();
  }
  for (const v of g.outputs) {
    w.tag(12, WireType.LengthDelimited).fork();
    writeValueInfo(w, v);
    w.join();
  }
}

function writeNode(w: BinaryWriter, n: OnnxNode): void {
  // NodeProto: input=1, output=2, name=3, op_type=4, attribute=5, domain=7.
  for (const i of n.inputs) {
    w.tag(1, WireType.LengthDelimited).string(i);
  }
  for (const o of n.outputs) {
    w.tag(2, WireType.LengthDelimited).string(o);
  }
  if (n.name !== undefined) {
    w.tag(3, WireType.LengthDelimited).string(n.name);
  }
  w.tag(4, WireType.LengthDelimited).string(n.opType);
  for (const [name, attr] of Object.entries(n.attributes ?? {})) {
    w.tag(5, WireType.LengthDelimited).fork();
    writeAttribute(w, name, attr);
    w.join();
  }
  if (n.domain !== undefined && n.domain !== "") {
    w.tag(7, WireType.LengthDelimited).string(n.domain);
  }
}

function writeAttribute(w: BinaryWriter, name: string, a: OnnxAttributeValue): void {
  // AttributeProto: name=1, f=2, i=3, s=4, t=5, floats=7, ints=8, type=20.
  w.tag(1, WireType.LengthDelimited).string(name);
  switch (a.kind) {
    case "float":
      w.tag(2, WireType.Bit32).float(a.value);
      break;
    case "int":
      w.tag(3, WireType.Varint).int64(a.value);
      break;
    case "string":
      w.tag(4, WireType.LengthDelimited).bytes(new TextEncoder().encode(a.value));
      break;
    case "tensor":
      w.tag(5, WireType.LengthDelimited).fork();
      writeTensor(w, a.value);
      w.join();
      break;
    case "floats":
      // Packed encoding is valid for repeated scalars in proto2 parsers too.
      w.tag(7, WireType.LengthDelimited).fork();
      for (const f of a.value) w.float(f);
      w.join();
      break;
    case "ints":
      w.tag(8, WireType.LengthDelimited).fork();
      for (const i of a.value) w.int64(i);
      w.join();
      break;
  }
  w.tag(20, WireType.Varint).int32(ATTR_TYPE[a.kind]);
}

function writeTensor(w: BinaryWriter, t: OnnxTensor): void {
  // TensorProto: dims=1, data_type=2, name=8, raw_data=9, external_data=13, data_location=14.
  if (t.dims.length > 0) {
    w.tag(1, WireType.LengthDelimited).fork();
    for (const d of t.dims) w.int64(d);
    w.join();
  }
  w.tag(2, WireType.Varint).int32(t.dataType);
  w.tag(8, WireType.LengthDelimited).string(t.name);
  if ((t.raw === undefined) === (t.external === undefined)) {
    throw new TypeError(`tensor "${t.name}": exactly one of raw and external must be set`);
  }
  if (t.raw !== undefined) {
    w.tag(9, WireType.LengthDelimited).bytes(t.raw);
  }
  if (t.external !== undefined) {
    writeStringEntry(w, 13, "location", t.external.location);
    writeStringEntry(w, 13, "offset", String(t.external.offset));
    writeStringEntry(w, 13, "length", String(t.external.length));
    w.tag(14, WireType.Varint).int32(DATA_LOCATION_EXTERNAL);
  }
}

function writeValueInfo(w: BinaryWriter, v: OnnxValueInfo): void {
  // ValueInfoProto: name=1, type=2 → TypeProto.tensor_type=1 → {elem_type=1, shape=2 → dim=1 → {value=1|param=2}}.
  w.tag(1, WireType.LengthDelimited).string(v.name);
  w.tag(2, WireType.LengthDelimited).fork();
  w.tag(1, WireType.LengthDelimited).fork();
  w.tag(1, WireType.Varint).int32(v.elemType);
  w.tag(2, WireType.LengthDelimited).fork();
  for (const d of v.shape) {
    w.tag(1, WireType.LengthDelimited).fork();
    if (typeof d === "number") {
      w.tag(1, WireType.Varint).int64(d);
    } else {
      w.tag(2, WireType.LengthDelimited).string(d);
    }
    w.join();
  }
  w.join();
  w.join();
  w.join();
}

/** StringStringEntryProto: key=1, value=2. */
function writeStringEntry(w: BinaryWriter, field: number, key: string, value: string): void {
  w.tag(field, WireType.LengthDelimited).fork();
  w.tag(1, WireType.LengthDelimited).string(key);
  w.tag(2, WireType.LengthDelimited).string(value);
  w.join();
}
