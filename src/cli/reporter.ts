/**
 * Everything the CLI prints goes through a Reporter: human lines and progress bars on stderr/stdout, or a single
 * JSON document on stdout under --json.
 */
export interface Reporter {
  readonly json: boolean;
  /** A line for people (suppressed under --json and --quiet). */
  info(line: string): void;
  /** A notice that matters even when quiet (dropped state, fallbacks). Kept for the JSON result too. */
  warn(line: string): void;
  /** Byte progress of long work; rendered as a bar with ETA on a TTY. */
  progress(label: string, done: number, total: number): void;
  /** The machine-readable result (printed under --json). */
  result(value: unknown): void;
  readonly warnings: readonly string[];
}

export interface ReporterOptions {
  json: boolean;
  quiet: boolean;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WriteStream | NodeJS.WritableStream;
  now?: () => number;
  /** Seconds between progress lines when stderr is not a terminal (CI logs). @default 10 */
  logIntervalSeconds?: number;
}

export function createReporter(opts: ReporterOptions): Reporter {
  const out = opts.out ?? process.stdout;
  const err = opts.err ?? process.stderr;
  const now = opts.now ?? (() => performance.now());
  const tty = "isTTY" in err && err.isTTY === true;
  const warnings: string[] = [];
  let started: { label: string; t0: number; lastDraw: number; lastLog: number } | undefined;
  const logEvery = (opts.logIntervalSeconds ?? 10) * 1000;
  const columns = () => ("columns" in err && typeof err.columns === "number" && err.columns > 0 ? err.columns : 80);
  let barShown = false;
  const clearBar = () => {
    if (barShown) {
      err.write("\r\x1b[2K");
      barShown = false;
    }
  };
  return {
    json: opts.json,
    warnings,
    info(line) {
      if (!opts.json && !opts.quiet) {
        clearBar();
        out.write(`${line}\n`);
      }
    },
    warn(line) {
      warnings.push(line);
      if (!opts.json) {
        clearBar();
        err.write(`warning: ${line}\n`);
      }
    },
    progress(label, done, total) {
      if (opts.json || opts.quiet) return;
      const t = now();
      if (!started || started.label !== label) {
        started = { label, t0: t, lastDraw: 0, lastLog: t };
      }
      const finished = done >= total;
      if (!finished && t - started.lastDraw < 100) return;
      started.lastDraw = t;
      // One column short of the width: a line that fills it wraps on some terminals, and each redraw stacks.
      const line = renderBar(label, done, total, (t - started.t0) / 1000, tty ? columns() - 1 : 120);
      if (tty) {
        err.write(`\r\x1b[2K${line}`);
        barShown = true;
        if (finished) {
          err.write("\n");
          barShown = false;
        }
      } else if (finished || t - started.lastLog >= logEvery) {
        // Not a terminal (CI, a log file): a plain line now and then, so a long run visibly moves.
        started.lastLog = t;
        err.write(`${line}\n`);
      }
    },
    result(value) {
      if (opts.json) {
        out.write(`${JSON.stringify(value, null, 2)}\n`);
      }
    },
  };
}

/** A progress line of at most `maxWidth` characters: the bar shrinks first, then speed and ETA go. */
export function renderBar(label: string, done: number, total: number, seconds: number, maxWidth = 120): string {
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  // Under a tenth of a second there is no meaningful rate: show none rather than "0 B/s".
  const rate = seconds > 0.1 ? done / seconds : 0;
  const speed = rate > 0 ? ` ${formatBytes(rate)}/s` : "";
  const eta = rate > 0 && frac < 1 ? ` ETA ${formatDuration((total - done) / rate)}` : frac >= 1 ? ` in ${formatDuration(seconds)}` : "";
  const pct = `${(frac * 100).toFixed(0).padStart(3)}%`;
  const counts = ` ${formatBytes(done)}/${formatBytes(total)}`;
  for (const tail of [`${counts}${speed}${eta}`, `${counts}${eta}`, counts, ""]) {
    const fixed = label.length + 4 + pct.length + tail.length; // "label [" + "] " + pct + tail
    const width = Math.min(28, maxWidth - fixed);
    if (width >= 8) {
      const filled = Math.round(frac * width);
      return `${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${pct}${tail}`;
    }
  }
  return `${label} ${pct}`.slice(0, Math.max(1, maxWidth));
}

export function formatBytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${Math.round(s % 60)}s` : `${Math.floor(m / 60)}h${m % 60}m`;
}
