/**
 * Publishing to and from the Hugging Face Hub: push and pull (resumable, retried, verified), the model card, and
 * a local Hub-compatible server for tests, the demo and offline rehearsals.
 */
export * from "./config.js";
export * from "./hub-fetch.js";
export * from "./model-card.js";
export * from "./plan-commits.js";
export * from "./pull-repo.js";
export * from "./push-folder.js";
export * from "./redact.js";
export * from "./repo-path.js";
export * from "./retry.js";
export * from "./server/index.js";
