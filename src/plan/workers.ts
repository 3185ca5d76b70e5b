import { spawn } from "node:child_process";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { MegahubError } from "../errors.js";
import { safetensorsHeader } from "../formats/safetensors/write.js";
import { isPartWork, stagingDir } from "./parts.js";
import { fileBytes, type Plan } from "./plan.js";

/** How to start the same command for one part: the CLI gives its own command line with `--part i/N` added. */
export type Relaunch = (part: string) => { command: string; args: string[] };

/**
 * Runs parts 1…N of a plan as N local processes (a fat node: each has its own main thread, I/O queue and hash
 * workers) and waits for all. Progress is the bytes on disk in the staging area, polled. A failed worker is named
 * with its last error line; the others finish, so re-running resumes from what they wrote.
 */
export async function runWorkers(plan: Plan, out: string, count: number, relaunch: Relaunch, onProgress?: (done: number, total: number) => void): Promise<void> {
  const staging = stagingDir(out);
  const work = plan.files.filter(isPartWork);
  const total = work.reduce((a, f) => a + fileBytes(f, (t) => safetensorsHeader(t).byteLength), 0);
  let polling = false;
  const poll = async () => {
    if (polling || !onProgress) return;
    polling = true;
    const sizes = await Promise.all(work.map((f) => stat(join(staging, f.path)).then((s) => s.size, () => 0)));
    onProgress(sizes.reduce((a, b) => a + b, 0), total);
    polling = false;
  };
  const timer = setInterval(() => void poll(), 1000);
  try {
    const results = await Promise.all(
      Array.from({ length: count }, (_, i) => {
        const part = `${i + 1}/${count}`;
        const { command, args } = relaunch(part);
        return new Promise<{ part: string; code: number | null; tail: string }>((resolve) => {
          const child = spawn(command, args, { stdio: ["ignore", "ignore", "pipe"] });
          let tail = "";
          child.stderr.on("data", (d: Buffer) => (tail = (tail + d.toString("utf8")).slice(-4000)));
          child.on("error", (e) => resolve({ part, code: -1, tail: e.message }));
          child.on("close", (code) => resolve({ part, code, tail }));
        });
      }),
    );
    const failed = results.filter((r) => r.code !== 0);
    if (failed.length > 0) {
      const lines = failed.map((r) => `part ${r.part} exited ${r.code ?? "by signal"}: ${r.tail.trim().split("\n").at(-1) ?? ""}`);
      throw new MegahubError("OUTPUT", `${lines.join("; ")}; run the same command again to resume (finished files are kept)`, { file: out });
    }
  } finally {
    clearInterval(timer);
  }
  await poll();
}
