#!/usr/bin/env node
// gpu-bench-model.mjs — writes an HF OpenBA model dir at OpenBA-v2's widths (hidden 2560, 20 heads × 128, FFN 6912,
// vocab 250240) with 2+2 layers and fp16 weights drawn from a fixed pseudo-random sequence, for timing `megahub verify`
// on a machine that has neither torch nor the bench cache (the GPU device check). Uses megahub's own spec (dist/), so
// the tensor names and shapes are the ones verify reads. ~2.7 GB, streamed.
//   node scripts/gpu-bench-model.mjs <out-dir> [--enc 2] [--dec 2] [--vocab 250240]
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { once } from "node:events";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { OPENBA_GLOBAL_PARAMS, OPENBA_LAYER_PARAMS } = await import(join(ROOT, "dist/models/openba.js"));
const { expectedShape } = await import(join(ROOT, "dist/models/openba-dims.js"));

const args = process.argv.slice(2);
const out = args[0];
const opt = (n, d) => (args.includes(`--${n}`) ? Number(args[args.indexOf(`--${n}`) + 1]) : d);
if (!out || existsSync(out)) {
  console.error("usage: gpu-bench-model.mjs <new-out-dir> [--enc N] [--dec N]");
  process.exit(2);
}
const dims = { hidden: 2560, heads: 20, kvChannels: 128, ffn: 6912, encoderLayers: opt("enc", 2), decoderLayers: opt("dec", 2), vocab: opt("vocab", 250240) };

// name → shape, in spec order; fused params (fc_in = w1 ‖ w3) appear once with their full row count.
const tensors = new Map();
const add = (name, p) => {
  const shape = expectedShape(p, dims);
  if ("fuse" in p) shape[0] *= p.fuse.of;
  if (!tensors.has(name)) tensors.set(name, shape);
};
for (const stack of ["encoder", "decoder"]) {
  const n = stack === "encoder" ? dims.encoderLayers : dims.decoderLayers;
  for (let l = 0; l < n; l++) for (const p of OPENBA_LAYER_PARAMS) if (p.hf && p.stacks.includes(stack)) add(`${stack}.block.${l}.${p.hf}`, p);
}
for (const p of OPENBA_GLOBAL_PARAMS) for (const name of p.hf) add(name, p);

// fp16 values: norms' weights 1 and biases 0 (so activations stay in range), everything else uniform in ±0.02.
const f16 = (x) => {
  const f = new Float32Array([x]);
  const b = new Uint32Array(f.buffer)[0];
  const s = (b >>> 16) & 0x8000, e = ((b >>> 23) & 0xff) - 112, m = b & 0x7fffff;
  if (e <= 0) return s; // the few values this small become ±0
  return s | (e << 10) | ((m + 0x1000) >>> 13);
};
let seed = 12345;
const table = new Uint16Array(1 << 16).map(() => {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return f16((seed / 2 ** 32 - 0.5) * 0.04);
});
const header = {};
let offset = 0;
for (const [name, shape] of tensors) {
  const bytes = shape.reduce((a, b) => a * b, 1) * 2;
  header[name] = { dtype: "F16", shape, data_offsets: [offset, offset + bytes] };
  offset += bytes;
}
let json = JSON.stringify(header);
json += " ".repeat((8 - (json.length % 8)) % 8);
mkdirSync(out, { recursive: true });
const tmp = join(out, ".model.safetensors.tmp");
const w = createWriteStream(tmp);
const len = Buffer.alloc(8);
len.writeBigUInt64LE(BigInt(json.length));
w.write(len);
w.write(json);
const chunk = Buffer.alloc(1 << 24);
for (const [name, shape] of tensors) {
  let left = shape.reduce((a, b) => a * b, 1);
  const norm = /layernorm\.(weight|bias)$/.test(name);
  const fill = name.endsWith("layernorm.weight") ? 0x3c00 : 0;
  while (left > 0) {
    const n = Math.min(left, chunk.length / 2);
    const view = new Uint16Array(chunk.buffer, chunk.byteOffset, n);
    if (norm) view.fill(fill);
    else for (let i = 0; i < n; i++) view[i] = table[(i * 40503 + left) & 0xffff];
    if (!w.write(Buffer.from(chunk.subarray(0, n * 2)))) await once(w, "drain");
    left -= n;
  }
}
w.end();
await once(w, "finish");
renameSync(tmp, join(out, "model.safetensors"));
const config = JSON.parse(readFileSync(join(ROOT, "fixtures/megatron/fp16-tp2/expected-hf.json"), "utf8")).config ?? {};
writeFileSync(
  join(out, "config.json"),
  JSON.stringify({
    ...config,
    architectures: ["OpenBAForConditionalGeneration"],
    model_type: "openba",
    vocab_size: dims.vocab,
    hidden_size: dims.hidden,
    kv_channels: dims.kvChannels,
    ffn_hidden_size: dims.ffn,
    num_layers: dims.encoderLayers,
    num_decoder_layers: dims.decoderLayers,
    num_heads: dims.heads,
    is_encoder_decoder: true,
    pad_token_id: 0,
    eos_token_id: 1,
    decoder_start_token_id: 0,
    add_qkv_bias: true,
    add_ffn_bias: false,
    add_lm_head_bias: true,
    tie_word_embeddings: false,
    torch_dtype: "float16",
  }, null, 2),
);
console.log(`wrote ${out}: ${tensors.size} tensors, ${(offset / 1e9).toFixed(2)} GB`);
