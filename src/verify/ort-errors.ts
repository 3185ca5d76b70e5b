/**
 * What ONNX Runtime actually said when its CUDA execution provider could not be used, out of its noisy messages.
 *
 * - A provider library that cannot be dlopen'ed: the JS exception says only "OrtSessionOptionsAppendExecutionProvider_
 *   Cuda: Failed to load shared library"; the cause ("Failed to load library X with error: Y") goes to the native
 *   logger on stderr, which is why the probe (ort-probe.ts) runs in a child process and hands its stderr here.
 * - A provider that loads but cannot start CUDA: the exception holds two source-location preambles with C++ template
 *   signatures, then "CUDA failure N: <cudaGetErrorString> ; GPU=… ; hostname=… ; file=… ; line=… ; expr=<call>;".
 */
export type OrtFailure =
  | { kind: "load"; library?: string; error?: string; text: string }
  | { kind: "cuda"; library: string; code: number; name?: string; message: string; expr?: string; text: string }
  | { kind: "other"; text: string };

/** cudaError_t values a provider start-up meets, with what they mean for the user. */
export const CUDA_ERRORS: Readonly<Record<number, { name: string; hint: string }>> = {
  2: { name: "cudaErrorMemoryAllocation", hint: "the GPU is out of memory (another process may hold it)" },
  3: { name: "cudaErrorInitializationError", hint: "the CUDA driver failed to initialise (check nvidia-smi)" },
  34: { name: "cudaErrorStubLibrary", hint: "libcuda.so.1 is the toolkit's stub, not the NVIDIA driver's: put the driver's libcuda first" },
  35: { name: "cudaErrorInsufficientDriver", hint: "the NVIDIA driver is older than CUDA 13 needs (driver ≥ 580): update the driver" },
  46: { name: "cudaErrorDevicesUnavailable", hint: "every GPU is busy or in exclusive mode" },
  100: { name: "cudaErrorNoDevice", hint: "no GPU is visible to this process (check nvidia-smi and CUDA_VISIBLE_DEVICES)" },
  101: { name: "cudaErrorInvalidDevice", hint: "the device id does not exist on this machine" },
  209: { name: "cudaErrorNoKernelImageForDevice", hint: "the provider has no kernels for this GPU's architecture (a trimmed provider? reinstall the full one)" },
  222: { name: "cudaErrorUnsupportedPtxVersion", hint: "the driver is too old for the provider's PTX: update the driver" },
  999: { name: "cudaErrorUnknown", hint: "CUDA reported an unknown error (often a driver/runtime mismatch; check dmesg and nvidia-smi)" },
};

// ANSI colour codes the native logger wraps its lines in.
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** Picks the cause out of an exception message and, where there is one, the native logger's stderr. */
export function parseOrtError(message: string, stderr = ""): OrtFailure {
  const all = `${message}\n${stderr}`.replace(ANSI, "");
  const lib = /(CUDA|CUBLAS|CUDNN|CURAND|CUFFT) failure (-?\d+): ([^\n]*?)\s*; GPU=[^\n]*?expr=([^;\n]*)/.exec(all) ??
    /(CUDA|CUBLAS|CUDNN|CURAND|CUFFT) failure (-?\d+): ([^;\n]*)/.exec(all);
  if (lib) {
    const [, library = "CUDA", codeText = "0", msg = "", expr] = lib;
    const code = Number(codeText);
    const name = library === "CUDA" ? CUDA_ERRORS[code]?.name : undefined;
    const message = msg.trim();
    const at = expr !== undefined ? ` at ${expr.trim()}` : "";
    return {
      kind: "cuda",
      library,
      code,
      ...(name !== undefined ? { name } : {}),
      message,
      ...(expr !== undefined ? { expr: expr.trim() } : {}),
      text: `${library} failure ${code}${name ? ` (${name})` : ""}${at}: ${message}`,
    };
  }
  const load = /Failed to load library (\S+) with error: ([^\n]*)/.exec(all);
  if (load) {
    const [, library = "", error = ""] = load;
    return { kind: "load", library, error: error.trim(), text: `Failed to load library ${library} with error: ${error.trim()}` };
  }
  if (/Failed to load shared library/.test(all)) return { kind: "load", text: "Failed to load shared library" };
  return { kind: "other", text: causeLine(all) };
}

/** The message without ORT's "file:line signature [ONNXRuntimeError] : N : CODE :" preambles. */
function causeLine(text: string): string {
  const tagged = /\[ONNXRuntimeError\] : \d+ : \w+ : ([^\n]*)/.exec(text);
  if (tagged?.[1]) return tagged[1].trim();
  const lines = text.split("\n").map((l) => l.trim()).filter(Boolean);
  return lines.find((l) => !l.startsWith("/onnxruntime_src/")) ?? lines[0] ?? "unknown error";
}
