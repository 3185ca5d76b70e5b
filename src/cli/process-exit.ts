/**
 * How the CLI ends when the world ends it: Ctrl-C and SIGTERM remove the staging folders of this run and exit
 * 130/143 (128 + signal, as shells report); a reader that went away (`megahub inspect … | head`) is EPIPE, which
 * is a quiet exit 0 as for other Unix tools, not a stack trace.
 */
import { existsSync, rmSync } from "node:fs";
import { activeStagingPaths } from "../io/atomic.js";

/**
 * Removes this run's staging folders. File operations already queued on libuv's thread pool (a recursive mkdir, an
 * open) keep running while the main thread handles the signal and can recreate a folder just removed, so removal
 * repeats until every path has stayed absent for a few short waits (at most about 0.3 s).
 */
function removeStaging(): number {
  const paths = activeStagingPaths();
  if (paths.length === 0) return 0;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (let round = 0, quiet = 0; round < 30 && quiet < 3; round++) {
    for (const p of paths) rmSync(p, { recursive: true, force: true, maxRetries: 2 });
    Atomics.wait(nap, 0, 0, 10);
    quiet = paths.some((p) => existsSync(p)) ? 0 : quiet + 1;
  }
  return paths.length;
}

let installed = false;

export function installExitHandlers(): void {
  if (installed) return;
  installed = true;
  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]] as const) {
    process.once(signal, () => {
      const n = removeStaging();
      try {
        process.stderr.write(`\nmegahub: interrupted (${signal})${n > 0 ? `; removed ${n} unfinished output${n === 1 ? "" : "s"}` : ""}\n`);
      } catch {
        // stderr may be gone too
      }
      process.exit(code);
    });
  }
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code !== "EPIPE") throw e;
      removeStaging();
      process.exit(0);
    });
  }
}
