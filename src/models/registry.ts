import { MegahubError } from "../errors.js";

/**
 * The architectures megahub knows, each recognised from tensor names alone (args go stale; names do not). OpenBA's
 * tables live in models/openba*.ts, Megatron-Core GPT's in models/gpt/.
 */
export const ARCHS = {
  openba: {
    title: "OpenBA (encoder-decoder)",
    megatron: /^language_model\.(encoder|decoder)\.layers\.\d+\./,
    hf: /^(encoder|decoder)\.block\.\d+\./,
  },
  gpt: {
    title: "Megatron-Core GPT (Llama / Mistral / Qwen2 / Qwen3; MoE: Mixtral / Qwen2-MoE / Qwen3-MoE)",
    megatron: /^decoder\.layers\.\d+\.self_attention\.linear_qkv\./,
    hf: /^model\.layers\.\d+\.self_attn\.q_proj\./,
  },
} as const satisfies Record<string, { title: string; megatron: RegExp; hf: RegExp }>;
export type ArchId = keyof typeof ARCHS;

/** Which architecture names belong to; when none, every reason at once. */
export function detectArch(names: Iterable<string>, side: "megatron" | "hf", where: string): ArchId {
  const list = [...names];
  for (const [id, a] of Object.entries(ARCHS) as [ArchId, (typeof ARCHS)[ArchId]][]) {
    if (list.some((n) => a[side].test(n))) return id;
  }
  const reasons = (Object.values(ARCHS) as (typeof ARCHS)[ArchId][]).map((a) => `${a.title}: no name matches ${a[side].source}`);
  const sample = list.slice(0, 3).join(", ") || "no tensors";
  const moe = list.some((n) => /\.mlp\.(experts|router)\./.test(n)) ? " (mixture-of-experts names, but no attention megahub knows)" : "";
  throw new MegahubError("MODEL", `not a known architecture${moe} — ${reasons.join("; ")}; found e.g. ${sample}`, { file: where });
}

/** The architecture a Megatron checkpoint's names call for; OpenBA when nothing else matches, so its own errors explain. */
export function megatronArchOf(names: Iterable<string>): ArchId {
  for (const n of names) if (ARCHS.gpt.megatron.test(n)) return "gpt";
  return "openba";
}
