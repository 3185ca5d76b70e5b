import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { ROOT } from "./fixtures.js";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  json<T = Record<string, unknown>>(): T;
}

/** Runs the built CLI (bin/megahub.js → dist/) exactly as a user does. `npm test` builds first. */
export function megahub(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): CliResult {
  const r = spawnSync(process.execPath, [join(ROOT, "bin", "megahub.js"), ...args], {
    encoding: "utf8",
    cwd: options.cwd ?? ROOT,
    env: { ...process.env, ...options.env },
    timeout: options.timeout ?? 120_000,
    maxBuffer: 1 << 26,
  });
  return {
    code: r.status ?? -1,
    stdout: r.stdout,
    stderr: r.stderr,
    json<T>() {
      return JSON.parse(r.stdout) as T;
    },
  };
}
