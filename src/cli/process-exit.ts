/**
 * How the CLI ends when the world ends it: Ctrl-C and SIGTERM remove the staging folders of this run and exit
 * 130/143 (128 + signal, as shells report); a reader that went away (`megahub inspect … | head`) is EPIPE, which
 * is a quiet exit 0 as for other Unix tools, not a stack trace.
 */
import { rmSync } from "node:fs";
import { activeStagingPaths } from "../io/atomic.js";

function removeStaging(): number {
  const paths = activeStagingPaths();
  for (const p of paths) rmSync(p, { recursive: true, force: true });
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
