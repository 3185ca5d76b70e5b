/**
 * The allow-list of pickle globals megahub vets: what torch.load needs to rebuild tensors, the plain containers
 * and the Megatron/numpy classes Megatron's own `weights_only` list accepts (megatron/core/safe_globals.py). Every
 * other global is unvetted: reading keeps it as an inert record, and writing drops it (see sanitize.ts), because
 * torch.load of a file that names it would import and call it.
 */
import { dtypeFromStorageClass, dtypeFromTorchName } from "../../tensors/dtypes.js";

/** Classes and functions a pickle may call (or name) without running code beyond building data. */
const CALLABLE = [
  "torch._utils._rebuild_tensor",
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_tensor_v3",
  "torch._utils._rebuild_parameter",
  "torch._utils._rebuild_parameter_with_state",
  "torch.Size",
  "torch.device",
  "torch._C.Generator",
  "collections.OrderedDict",
  "argparse.Namespace",
  "types.SimpleNamespace",
  "pathlib.PosixPath",
  "io.BytesIO",
  "_codecs.encode",
  "builtins.set",
  "builtins.frozenset",
  "builtins.bytearray",
  "builtins.bytes",
  "builtins.slice",
  "builtins.complex",
  "__builtin__.set",
  "__builtin__.frozenset",
  "__builtin__.bytearray",
  "__builtin__.bytes",
  "__builtin__.slice",
  "__builtin__.complex",
  "numpy.core.multiarray._reconstruct",
  "numpy._core.multiarray._reconstruct",
  "numpy.core.multiarray.scalar",
  "numpy._core.multiarray.scalar",
  "numpy.ndarray",
  "numpy.dtype",
  "numpy.dtypes.UInt32DType",
  "signal.Signals",
] as const;

/** Enum and config classes: called with plain values (Enum(value)) or named through getattr(Enum, "MEMBER"). */
export const MEGATRON_CLASSES = [
  "megatron.core.enums.ModelType",
  "megatron.core.transformer.enums.ModelType",
  "megatron.core.transformer.enums.AttnBackend",
  "megatron.core.transformer.enums.AttnMaskType",
  "megatron.core.transformer.enums.AttnType",
  "megatron.core.transformer.enums.LayerType",
  "megatron.core.transformer.enums.CudaGraphScope",
  "megatron.core.optimizer.optimizer_config.OptimizerConfig",
  "megatron.core.rerun_state_machine.RerunDiagnostic",
  "megatron.core.rerun_state_machine.RerunMode",
  "megatron.core.rerun_state_machine.RerunState",
  // Pre-core Megatron-LM (OpenBA's lineage) kept its enums here.
  "megatron.model.enums.ModelType",
  "megatron.model.enums.AttnMaskType",
  "megatron.model.enums.AttnType",
  "megatron.model.enums.LayerType",
  "megatron.model.enums.PositionEmbeddingType",
  "megatron.enums.ModelType",
  "signal.Signals",
] as const;

/** Calls whose callable is safe only with arguments of a given shape (checked by sanitize.ts). */
export const SHAPED_CALLS = new Set([
  // getattr(EnumClass, "MEMBER"): how some enums pickle; getattr on anything else can reach any function.
  "builtins.getattr",
  "__builtin__.getattr",
  // Protocol 0/1 objects: copyreg._reconstructor(cls, object, None) is object.__new__(cls).
  "copyreg._reconstructor",
  "copy_reg._reconstructor",
  // Protocol 2 NEWOBJ spelled out: copyreg.__newobj__(cls, *args) is cls.__new__(cls, *args).
  "copyreg.__newobj__",
  "copy_reg.__newobj__",
]);

/** Globals that may appear as plain values only (never called): `object` as the base of _reconstructor. */
const VALUE_ONLY = ["builtins.object", "__builtin__.object"] as const;

const SAFE = new Set<string>([...CALLABLE, ...MEGATRON_CLASSES]);
const CLASSES = new Set<string>([...MEGATRON_CLASSES, "argparse.Namespace", "types.SimpleNamespace", "collections.OrderedDict"]);

/** True for a global torch and Megatron need and that builds data only (dtypes and storage classes included). */
export function isSafeGlobal(qualified: string): boolean {
  if (SAFE.has(qualified) || (VALUE_ONLY as readonly string[]).includes(qualified) || SHAPED_CALLS.has(qualified)) return true;
  if (!qualified.startsWith("torch.") || qualified.indexOf(".", 6) >= 0) return false;
  const name = qualified.slice(6);
  return name === "UntypedStorage" || dtypeFromStorageClass(name) !== undefined || dtypeFromTorchName(name) !== undefined;
}

/** Classes a shaped call may construct or name a member of. */
export function isSafeClass(qualified: string): boolean {
  return CLASSES.has(qualified);
}

/** True when the global may be the callable of a REDUCE/NEWOBJ (dtypes and `object` may not). */
export function isSafeCallable(qualified: string): boolean {
  if (SAFE.has(qualified) || SHAPED_CALLS.has(qualified)) return true;
  return qualified.startsWith("torch.") && qualified.indexOf(".", 6) < 0 && (qualified === "torch.UntypedStorage" || dtypeFromStorageClass(qualified.slice(6)) !== undefined);
}

/** The names, of those given, that are not on the allow-list: what a loader would import and may call. */
export function unvettedGlobals(globals: readonly string[]): string[] {
  return globals.filter((g) => !isSafeGlobal(g));
}
