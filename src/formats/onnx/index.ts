export * from "./proto.js";
export * from "./graph-builder.js";
