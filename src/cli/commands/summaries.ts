/**
 * Each command's one-line summary, for `megahub --help` without importing any command module (loading them all cost
 * about 0.3 s of start-up). Each command takes its summary from here.
 */
export const SUMMARIES = {
  inspect: "describe a Megatron checkpoint, an HF model directory, or a torch/safetensors file (headers only)",
  convert: "convert a Megatron checkpoint (OpenBA; Megatron-Core GPT or MoE, legacy or torch_dist) to Hugging Face layout",
  demo: "run the main job on the tiny OpenBA and Llama checkpoints shipped in fixtures/ and show what happened",
  reshard: "re-split a Megatron checkpoint to another TP (× PP × VPP × EP for Megatron-Core models); writes Megatron checkpoints",
  "to-megatron": "convert an HF model (OpenBA, Llama, Mistral, Qwen2/3, Mixtral, Qwen-MoE) back to a Megatron checkpoint (to continue training)",
  verify: "run a converted model in ONNX Runtime and compare its logits with a reference or another model",
  "export-onnx": "write an HF model as ONNX (model.onnx, OpenBA's encoder/decoder graphs, one external data file)",
  generate: "greedy text generation in ONNX Runtime with the model's tokenizer and chat template",
  push: "upload a folder to a Hugging Face Hub model repo (resumable, retried, with a model card)",
  pull: "download every file of a Hub model repo revision, resumably, verifying sha256",
  hub: "run a local Hugging Face Hub-compatible server (to rehearse pushes and pulls offline)",
  pack: "pack a folder into an uncompressed tar with a sha256 manifest (checked by unpack)",
  unpack: "unpack a megahub tar into a new folder, verifying every file against its sha256 manifest",
  prune: "prune layers, hidden size, heads and FFN width to any target (OpenBA-v2's method), or --plan the parameter counts",
  vocab: "count how often a corpus uses each token (exactly as sentencepiece tokenizes), for prune-vocab",
  "prune-vocab": "keep the tokens a corpus uses: new spiece.model, re-indexed embedding/lm_head rows, id map, coverage report",
  doctor: "say which ONNX Runtime execution providers can run here, what CUDA libraries they need and the fix",
  gpu: "install ONNX Runtime's CUDA execution provider beside megahub's ONNX Runtime (gpu install)",
} as const;
