/**
 * megahub as a library: the same operations the CLI runs, for programs that want them without a shell.
 * Every long operation takes an `onProgress(done, total)` callback and returns a result object.
 */
export { MegahubError, isMegahubError, type ErrorCode } from "./errors.js";
export { VERSION } from "./version.js";

// Formats
export { loadTorch, type TorchFile } from "./formats/torch/load.js";
export { saveTorchCheckpoint, torchFileForPlan, newTensor } from "./formats/torch/save.js";
export { readSafetensors, type SafetensorsFile } from "./formats/safetensors/read.js";
export { planSafetensorsShards } from "./formats/safetensors/write.js";
export { parseSentencePieceModel, serializeSentencePieceModel } from "./formats/sentencepiece/model.js";
export { discoverMegatron, type MegatronLayout } from "./formats/megatron/discover.js";
export { openMegatron, type MegatronCheckpoint } from "./formats/megatron/read.js";
export { FileSource, type ByteSource } from "./io/byte-source.js";
export { DTYPES, type Dtype } from "./tensors/dtypes.js";

// Models and plans
export { OPENBA, OPENBA_LAYER_PARAMS, OPENBA_GLOBAL_PARAMS, OPENBA_CHAT_TEMPLATE } from "./models/openba/spec.js";
export { countParams, type OpenbaDims, type ParamCounts } from "./models/openba/dims.js";
export { paddedVocab } from "./models/vocab-padding.js";
export { executePlan } from "./plan/execute.js";
export { summarizePlan, type Plan } from "./plan/plan.js";
export { readManifest, type Manifest } from "./plan/manifest.js";

// Operations
export { inspectPath, type InspectReport } from "./ops/inspect.js";
export { convertMegatronToHf, type ConvertJob, type ConvertResult } from "./ops/openba/convert.js";
export { reshardMegatron, type ReshardJob } from "./ops/openba/reshard.js";
export { hfToMegatron, type ToMegatronJob } from "./ops/openba/to-megatron.js";
export { megatronGlobalModel, type GlobalModel } from "./ops/openba/global-model.js";
export { openHfModel } from "./ops/openba/hf-global.js";
export { pruneCheckpoint } from "./ops/prune/run.js";
export { verifyModel, generate, exportOnnx, timeForward, diagnoseCuda, cudaVerdict, installCudaProvider } from "./verify/index.js";
export { pushFolder, pullRepo, startLocalHub } from "./hub/index.js";
export { main } from "./cli/main.js";
