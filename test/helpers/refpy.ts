/**
 * The modern Python referee: a venv with torch 2.x (DCP), transformers, huggingface_hub + hf_xet and safetensors,
 * built from the machine's local wheel mirror by `scripts/make_ref_venv.sh` (which `.ci/run` calls). Tests that need
 * it use `describe.skipIf(!HAS_REF)`; CI sets MEGAHUB_REQUIRE_REF=1 so that a missing venv fails instead of skipping.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export const REF_PYTHON: string =
  process.env.MEGAHUB_REF_PYTHON ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "megahub", "venv-ref", "bin", "python");

function probe(): boolean {
  if (!existsSync(REF_PYTHON)) return false;
  try {
    execFileSync(REF_PYTHON, ["-c", "import torch, transformers, huggingface_hub, safetensors"], { stdio: "ignore", timeout: 300_000 });
    return true;
  } catch {
    return false;
  }
}

export const HAS_REF: boolean = probe();
if (!HAS_REF && process.env.MEGAHUB_REQUIRE_REF === "1") {
  throw new Error(`MEGAHUB_REQUIRE_REF=1 but ${REF_PYTHON} cannot import torch/transformers/huggingface_hub: run scripts/make_ref_venv.sh`);
}
if (!HAS_REF) {
  process.stderr.write(`note: no reference venv at ${REF_PYTHON} — transformers/huggingface_hub/DCP referee tests skip (scripts/make_ref_venv.sh)\n`);
}

/** Runs `code` with the reference venv's python (`sys.argv[1:]` = args) and returns stdout; failures carry stderr. */
export function runRefPython(code: string, args: string[] = [], options: { env?: NodeJS.ProcessEnv; timeout?: number } = {}): string {
  try {
    return execFileSync(REF_PYTHON, ["-c", code, ...args], {
      encoding: "utf8",
      maxBuffer: 256 << 20,
      timeout: options.timeout ?? 300_000,
      env: { ...process.env, HF_HUB_OFFLINE: "0", HF_HUB_DISABLE_TELEMETRY: "1", TOKENIZERS_PARALLELISM: "false", ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (e) {
    const err = e as { stderr?: string | Buffer; message: string };
    const stderr = err.stderr ? String(err.stderr).trim().split("\n").slice(-20).join("\n") : "";
    throw new Error(`reference python failed: ${err.message.split("\n")[0] ?? ""}\n${stderr}`);
  }
}
