import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { MegahubError } from "../errors.js";

/** The public Hub, used when neither `--hub-url` nor `HF_ENDPOINT` says otherwise. */
export const DEFAULT_HUB_URL = "https://huggingface.co";

/** A token and where it came from — the source is printed, the token never is. */
export interface ResolvedToken {
  readonly token: string;
  /** `"--token"`, `"HF_TOKEN"` or `"token file <path>"`. */
  readonly source: string;
}

/** Where {@link resolveToken} looks, injectable so tests never read the real home directory. */
export interface TokenLookup {
  /** The `--token` value, which wins over everything else. */
  explicit?: string | undefined;
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
  /** @default os.homedir() */
  home?: string;
}

/**
 * Resolves the Hub base URL: `--hub-url`, then `HF_ENDPOINT`, then huggingface.co. The trailing slash is removed
 * because @huggingface/hub builds URLs as `${hubUrl}/api/...` and a double slash breaks routing on some servers.
 */
export function resolveHubUrl(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const raw = explicit ?? (env.HF_ENDPOINT !== undefined && env.HF_ENDPOINT !== "" ? env.HF_ENDPOINT : DEFAULT_HUB_URL);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new MegahubError("USAGE", `hub URL ${JSON.stringify(raw)} is not a valid URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new MegahubError("USAGE", `hub URL must be http or https, got ${url.protocol}`);
  }
  if (url.username !== "" || url.password !== "") {
    // Credentials in a URL end up in logs and error messages; tokens go through --token or HF_TOKEN instead.
    throw new MegahubError("USAGE", "hub URL must not contain credentials; pass the token with --token or HF_TOKEN");
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
}

/**
 * The token file huggingface_hub writes on `hf auth login`: `HF_TOKEN_PATH`, else `$HF_HOME/token`, else
 * `$XDG_CACHE_HOME/huggingface/token`, else `~/.cache/huggingface/token`.
 */
export function tokenFilePath(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string {
  if (env.HF_TOKEN_PATH) return env.HF_TOKEN_PATH;
  if (env.HF_HOME) return join(env.HF_HOME, "token");
  const cache = env.XDG_CACHE_HOME ? env.XDG_CACHE_HOME : join(home, ".cache");
  return join(cache, "huggingface", "token");
}

/**
 * Finds the Hub token the way huggingface_hub does: `--token`, then `HF_TOKEN` (or the legacy
 * `HUGGING_FACE_HUB_TOKEN`), then the token file. Returns undefined when there is none (reads of public repos
 * need none). A token that does not start with `hf_` is refused here, with its source but without its value,
 * because @huggingface/hub would throw a bare TypeError for it.
 */
export async function resolveToken(lookup: TokenLookup = {}): Promise<ResolvedToken | undefined> {
  const env = lookup.env ?? process.env;
  const candidates: Array<[string | undefined, string]> = [
    [lookup.explicit, "--token"],
    [env.HF_TOKEN, "HF_TOKEN"],
    [env.HUGGING_FACE_HUB_TOKEN, "HUGGING_FACE_HUB_TOKEN"],
  ];
  for (const [value, source] of candidates) {
    if (value !== undefined && value.trim() !== "") {
      return checked(value.trim(), source);
    }
  }
  const file = tokenFilePath(env, lookup.home ?? homedir());
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw new MegahubError("USAGE", `cannot read the token file (${code ?? "error"})`, { file });
  }
  const token = text.trim();
  return token === "" ? undefined : checked(token, `token file ${file}`);
}

function checked(token: string, source: string): ResolvedToken {
  if (!/^hf_[A-Za-z0-9_-]+$/.test(token)) {
    throw new MegahubError("USAGE", `the token from ${source} is not a Hugging Face token (expected "hf_…")`);
  }
  return { token, source };
}
