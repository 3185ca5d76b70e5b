/**
 * Every failure megahub reports is a MegahubError: a string code for programs, and a one-line message for people
 * that names the file, the tensor and what was expected.
 */
export type ErrorCode =
  | "FORMAT" // bytes on disk do not follow the format (zip, pickle, safetensors, sentencepiece …)
  | "UNSUPPORTED" // a valid file this version cannot handle yet
  | "LAYOUT" // a checkpoint directory is incomplete or inconsistent
  | "MODEL" // tensors do not fit the model spec
  | "USAGE" // bad command-line arguments or options
  | "OUTPUT" // the output location cannot be written safely
  | "VERIFY" // verification ran and failed
  | "HUB" // the Hub answered with an error
  | "DEVICE"; // an execution provider is unavailable

export interface ErrorContext {
  file?: string | undefined;
  tensor?: string | undefined;
  offset?: number | undefined;
}

export class MegahubError extends Error {
  override readonly name: string = "MegahubError";
  readonly file: string | undefined;
  readonly tensor: string | undefined;
  readonly offset: number | undefined;

  constructor(
    readonly code: ErrorCode,
    detail: string,
    context: ErrorContext = {},
  ) {
    super(formatMessage(detail, context));
    this.file = context.file;
    this.tensor = context.tensor;
    this.offset = context.offset;
  }
}

function formatMessage(detail: string, { file, tensor, offset }: ErrorContext): string {
  const where: string[] = [];
  if (file !== undefined) {
    where.push(file);
  }
  if (tensor !== undefined) {
    where.push(`tensor "${tensor}"`);
  }
  if (offset !== undefined) {
    where.push(`at byte ${offset}`);
  }
  return where.length > 0 ? `${where.join(", ")}: ${detail}` : detail;
}

export function isMegahubError(e: unknown): e is MegahubError {
  return e instanceof Error && e.name === "MegahubError" && typeof (e as Partial<MegahubError>).code === "string";
}

/** Shorthand for the most common error: the bytes are not what the format promises. */
export function formatError(detail: string, context: ErrorContext = {}): MegahubError {
  return new MegahubError("FORMAT", detail, context);
}
