import { attr, GraphBuilder } from "../formats/onnx/graph-builder.js";
import type { OnnxExternalData, OnnxModel } from "../formats/onnx/proto.js";
import { DTYPES } from "../tensors/dtypes.js";
import type { OpenBADims, TensorRef } from "../models/openba/hf-dir.js";
import { concatShape, futureKeys, GraphWeights, rotaryTables, rotate, swiglu, type Rope } from "../models/onnx-blocks.js";

/**
 * Opset 17, explicit ops. Why not the fused Attention / RotaryEmbedding / RMSNormalization of opset 23:
 * - OpenBA masks by *replacing* scores with −10000 (masked_fill), not by adding a mask; `Where` reproduces that
 *   exactly, including rows where every key is masked, which an additive or boolean Attention-23 mask does not.
 * - ORT's CPU Attention-23 has no bf16 kernel and the issue asks for CPU everywhere; explicit fp32 ops run anywhere.
 * - OpenBA uses LayerNorm with bias, which is exactly LayerNormalization-17; nothing newer is needed, and opset 17
 *   (IR 8, ONNX 1.12) loads in every onnxruntime since 1.13, so an exported model works with older runtimes too.
 */
export const OPSET = 17;
export const IR_VERSION = 8;

/** Which graph to build: the whole teacher-forced model, the encoder alone, or the decoder fed encoder states. */
export type GraphPart = "seq2seq" | "encoder" | "decoder";

export interface OpenBAGraphOptions {
  part: GraphPart;
  /** "last": logits of the last decoder position only ([B,1,V]), for generation. @default "all" */
  logits?: "all" | "last";
  /** Where each weight's bytes are, relative to the .onnx file. */
  locate(ref: TensorRef): OnnxExternalData;
}

/** Graph input and output names, shared by the runner, export and generation. */
export const IO = {
  inputIds: "input_ids",
  attentionMask: "attention_mask",
  decoderInputIds: "decoder_input_ids",
  encoderHidden: "encoder_hidden_states",
  logits: "logits",
} as const;

const LN_EPS = 1e-5;
const MASK_VALUE = -10000;
const ROPE_BASE = 10000;

/**
 * Builds OpenBA (openba-format §2.4) as an ONNX model. Compute is fp32 throughout: F16/BF16 weights stay in their
 * file as external data and a Cast to fp32 follows each one (ORT folds those casts once at session start), so a
 * bf16 model runs on CPU, where ORT has no bf16 MatMul, without a converted side file.
 *
 * The residual stream is kept 2-D ([B·S, h]) so every projection is one Gemm with transB=1 on the [out, in] weight
 * as stored, with no transposed copy; only attention reshapes to [B, n, S, d].
 */
export function buildOpenBAGraph(
  dims: OpenBADims,
  tensors: ReadonlyMap<string, TensorRef>,
  options: OpenBAGraphOptions,
): OnnxModel {
  const b = new Blocks(new GraphBuilder(`openba_${options.part}`), dims, tensors, options.locate);
  const g = b.g;
  const I64 = DTYPES.I64.onnx;
  const F32 = DTYPES.F32.onnx;
  const mask = g.input(IO.attentionMask, I64, ["batch", "encoder_length"]);
  let encoderOut: string;
  if (options.part === "decoder") {
    const states = g.input(IO.encoderHidden, F32, ["batch", "encoder_length", dims.hidden]);
    encoderOut = g.op("Reshape", [states, g.constI64([-1, dims.hidden])]);
  } else {
    const ids = g.input(IO.inputIds, I64, ["batch", "encoder_length"]);
    encoderOut = b.encoder(ids, mask);
    if (options.part === "encoder") {
      const shape = g.op("Concat", [g.op("Shape", [ids]), g.constI64([dims.hidden])], { axis: attr.int(0) });
      g.output(g.op("Reshape", [encoderOut, shape]), IO.encoderHidden, F32, ["batch", "encoder_length", dims.hidden]);
      return wrap(g, options.part);
    }
  }
  const decIds = g.input(IO.decoderInputIds, I64, ["batch", "decoder_length"]);
  const decOut = b.decoder(decIds, encoderOut, mask);
  const logits = b.lmHead(decOut, decIds, options.logits ?? "all");
  g.output(logits, IO.logits, F32, ["batch", options.logits === "last" ? 1 : "decoder_length", dims.vocab]);
  return wrap(g, options.part);
}

function wrap(g: GraphBuilder, part: GraphPart): OnnxModel {
  return {
    irVersion: IR_VERSION,
    opsets: [{ domain: "", version: OPSET }],
    producerName: "megahub",
    producerVersion: "0.1.0",
    docString: `OpenBA ${part} graph (fp32 compute), built by megahub from the model's safetensors`,
    graph: g.build(),
  };
}

/** The building blocks, one method per sub-layer of §2.4. */
class Blocks {
  private readonly w: GraphWeights<TensorRef>;
  readonly g: GraphBuilder;

  constructor(
    g: GraphBuilder,
    private readonly d: OpenBADims,
    tensors: ReadonlyMap<string, TensorRef>,
    locate: (ref: TensorRef) => OnnxExternalData,
  ) {
    this.g = g;
    this.w = new GraphWeights(g, tensors, locate);
  }

  /** Runs the encoder stack; returns its final-LN output, 2-D [B·S, h]. */
  encoder(ids: string, mask: string): string {
    const g = this.g;
    const shapeBS = g.op("Shape", [ids]);
    const keyPad = this.keyPadding(mask);
    const rope = this.rotaryTables(ids);
    let x = this.w.embed("shared_embedding.weight", ids, this.d.hidden);
    for (let i = 0; i < this.d.encoderLayers; i++) {
      const p = `encoder.block.${i}`;
      x = g.scope(p, () => {
        const a = this.selfAttention(this.layerNorm(x, `${p}.input_layernorm`), p, shapeBS, keyPad, rope);
        const h1 = g.op("Add", [x, a]);
        return g.op("Add", [h1, this.mlp(this.layerNorm(h1, `${p}.post_attn_layernorm`), p)]);
      });
    }
    return this.layerNorm(x, "encoder.final_layernorm");
  }

  /** Runs the decoder stack over teacher-forced ids; returns its final-LN output, 2-D [B·T, h]. */
  decoder(ids: string, encoderOut: string, encoderMask: string): string {
    const g = this.g;
    const shapeBT = g.op("Shape", [ids]);
    const shapeBS = g.op("Shape", [encoderMask]);
    const causal = futureKeys(g, ids).blocked;
    const crossPad = this.keyPadding(encoderMask);
    const rope = this.rotaryTables(ids);
    let x = this.w.embed("shared_embedding.weight", ids, this.d.hidden);
    for (let i = 0; i < this.d.decoderLayers; i++) {
      const p = `decoder.block.${i}`;
      x = g.scope(p, () => {
        const a = this.selfAttention(this.layerNorm(x, `${p}.input_layernorm`), p, shapeBT, causal, rope);
        const h1 = g.op("Add", [x, a]);
        const c = this.crossAttention(this.layerNorm(h1, `${p}.post_attn_layernorm`), encoderOut, p, shapeBT, shapeBS, crossPad);
        const h2 = g.op("Add", [h1, c]);
        return g.op("Add", [h2, this.mlp(this.layerNorm(h2, `${p}.post_inter_attn_layernorm`), p)]);
      });
    }
    return this.layerNorm(x, "decoder.final_layernorm");
  }

  /** logits = dec·Wᵀ + b, no scaling (untied head); [B, T, V] or the last position only. */
  lmHead(dec2d: string, ids: string, which: "all" | "last"): string {
    const g = this.g;
    const h = this.d.hidden;
    let x = dec2d;
    let outShape = g.op("Concat", [g.op("Shape", [ids]), g.constI64([this.d.vocab])], { axis: attr.int(0) });
    if (which === "last") {
      const x3 = g.op("Reshape", [dec2d, g.op("Concat", [g.op("Shape", [ids]), g.constI64([h])], { axis: attr.int(0) })]);
      const last = g.op("Slice", [x3, g.constI64([-1]), g.constI64([Number.MAX_SAFE_INTEGER]), g.constI64([1])]);
      x = g.op("Reshape", [last, g.constI64([-1, h])]);
      outShape = g.constI64([-1, 1, this.d.vocab]);
    }
    return g.op("Reshape", [this.linear(x, "lm_head"), outShape]);
  }

  private layerNorm(x: string, prefix: string): string {
    return this.g.op("LayerNormalization", [x, this.w.weight(`${prefix}.weight`), this.w.weight(`${prefix}.bias`)], {
      axis: attr.int(-1),
      epsilon: attr.float(LN_EPS),
    });
  }

  /** x·Wᵀ (+ b when the checkpoint has the bias). */
  private linear(x: string, prefix: string): string {
    return this.w.linear(x, prefix);
  }

  /** Rows are grouped per head as [n, 3, d] (§1.4): view as [B, S, n, 3d], split the last axis into q | k | v. */
  private selfAttention(x: string, p: string, shapeBS: string, mask: string, rope: Rope): string {
    const g = this.g;
    const { heads: n, kvChannels: dh } = this.d;
    const qkv = g.op("Reshape", [this.linear(x, `${p}.self_attn.qkv`), this.concatShape(shapeBS, [n, 3 * dh])]);
    const [q, k, v] = g.opN("Split", [qkv, g.constI64([dh, dh, dh])], 3, { axis: attr.int(-1) }) as [string, string, string];
    const ctx = this.attend(this.rotate(this.heads(q), rope), this.rotate(this.heads(k), rope), this.heads(v), mask);
    return this.linear(this.merge(ctx), `${p}.self_attn.o`);
  }

  /** Cross-attention: q from the decoder, k|v from the encoder output (rows per head [n, 2, d]); no rotary. */
  private crossAttention(x: string, enc: string, p: string, shapeBT: string, shapeBS: string, mask: string): string {
    const g = this.g;
    const { heads: n, kvChannels: dh } = this.d;
    const q = g.op("Reshape", [this.linear(x, `${p}.inter_attn.q`), this.concatShape(shapeBT, [n, dh])]);
    const kv = g.op("Reshape", [this.linear(enc, `${p}.inter_attn.kv`), this.concatShape(shapeBS, [n, 2 * dh])]);
    const [k, v] = g.opN("Split", [kv, g.constI64([dh, dh])], 2, { axis: attr.int(-1) }) as [string, string];
    const ctx = this.attend(this.heads(q), this.heads(k), this.heads(v), mask);
    return this.linear(this.merge(ctx), `${p}.inter_attn.o`);
  }

  /** softmax(where(mask, −10000, q·kᵀ/√d))·v, all fp32. */
  private attend(q: string, k: string, v: string, mask: string): string {
    const g = this.g;
    const scores = g.op("Div", [
      g.op("MatMul", [q, g.op("Transpose", [k], { perm: attr.ints([0, 1, 3, 2]) })]),
      g.scalarF32(Math.sqrt(this.d.kvChannels)),
    ]);
    const masked = g.op("Where", [mask, g.scalarF32(MASK_VALUE), scores]);
    return g.op("MatMul", [g.op("Softmax", [masked], { axis: attr.int(-1) }), v]);
  }

  /** [B, S, n, d] → [B, n, S, d]. */
  private heads(x: string): string {
    return this.g.op("Transpose", [x], { perm: attr.ints([0, 2, 1, 3]) });
  }

  /** [B, n, S, d] → [B·S, P]. */
  private merge(ctx: string): string {
    const g = this.g;
    return g.op("Reshape", [g.op("Transpose", [ctx], { perm: attr.ints([0, 2, 1, 3]) }), g.constI64([-1, this.d.projection])]);
  }

  /** fc_out(silu(a) · b) with a = rows 0..F−1 (w1, gate) and b = rows F..2F−1 (w3, up) of fc_in's output. */
  private mlp(x: string, p: string): string {
    const g = this.g;
    const F = this.d.ffn;
    const [a, b] = g.opN("Split", [this.linear(x, `${p}.mlp.fc_in`), g.constI64([F, F])], 2, { axis: attr.int(-1) }) as [
      string,
      string,
    ];
    return this.linear(swiglu(g, a, b), `${p}.mlp.fc_out`);
  }

  /** cos/sin [S, d] for positions 0..S−1: inv_freq = 10000^(−2j/d) in fp32, emb = [freqs | freqs]. */
  private rotaryTables(ids: string): Rope {
    const dh = this.d.kvChannels;
    return rotaryTables(this.g, ids, Array.from({ length: dh / 2 }, (_, j) => Math.fround(1 / Math.pow(ROPE_BASE, (2 * j) / dh))));
  }

  private rotate(x: string, rope: Rope): string {
    return rotate(this.g, x, rope, this.d.kvChannels);
  }

  /** attention_mask [B, S] (1 = token, 0 = pad) → bool [B, 1, 1, S], true where the key is padding. */
  private keyPadding(mask: string): string {
    const g = this.g;
    return g.op("Unsqueeze", [g.op("Equal", [mask, g.constI64([0], [])]), g.constI64([1, 2])]);
  }

  private concatShape(shapeBS: string, tail: number[]): string {
    return concatShape(this.g, shapeBS, tail);
  }
}
