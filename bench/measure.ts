import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

export interface Measurement {
  name: string;
  seconds: number;
  /** Peak resident set size in bytes (from GNU time), or NaN when /usr/bin/time is missing. */
  peakRss: number;
  /**
   * User + system CPU seconds of the command and every process it waited for (GNU time), NaN without it. On a
   * shared machine wall time swings with other tenants' load; CPU time much less, so tables show both.
   */
  cpu: number;
}

const GNU_TIME = "/usr/bin/time";
/** Runs per case; the median is reported (one run on a shared VM swings by 2× with disk writeback). */
export const REPEAT = Number(process.env.MEGAHUB_BENCH_REPEAT ?? 3);

/**
 * Runs a command REPEAT times under GNU time, each after a `sync` (so no case pays for the previous one's dirty
 * pages), and returns the median wall time and the largest peak RSS; throws when the command fails. `prepare`
 * runs before each run, untimed (to clear the previous run's output).
 */
export function measure(name: string, cmd: string, args: string[], prepare: () => void = () => undefined): Measurement {
  const runs: Measurement[] = [];
  for (let i = 0; i < REPEAT; i++) {
    prepare();
    spawnSync("sync");
    runs.push(measureOnce(name, cmd, args));
  }
  runs.sort((a, b) => a.seconds - b.seconds);
  const median = runs[Math.floor(runs.length / 2)] as Measurement;
  const cpus = runs.map((r) => r.cpu).sort((a, b) => a - b);
  return { ...median, peakRss: Math.max(...runs.map((r) => r.peakRss)), cpu: cpus[Math.floor(cpus.length / 2)] as number };
}

function measureOnce(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Measurement {
  const timed = existsSync(GNU_TIME);
  const t0 = performance.now();
  const r = timed
    ? spawnSync(GNU_TIME, ["-f", "__TIME__ %e %M %U %S", cmd, ...args], { encoding: "utf8", env, maxBuffer: 1 << 26 })
    : spawnSync(cmd, args, { encoding: "utf8", env, maxBuffer: 1 << 26 });
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) {
    throw new Error(`${name} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  }
  const m = /__TIME__ ([\d.]+) (\d+) ([\d.]+) ([\d.]+)/.exec(r.stderr);
  return { name, seconds: m ? Number(m[1]) : wall, peakRss: m ? Number(m[2]) * 1024 : NaN, cpu: m ? Number(m[3]) + Number(m[4]) : NaN };
}

export function hasTorch(): boolean {
  try {
    execFileSync("/usr/bin/python3", ["-c", "import torch"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

export function mb(n: number): string {
  return Number.isNaN(n) ? "n/a" : `${(n / 1e6).toFixed(0)} MB`;
}

/** Prints measurements as a table with ratios against a baseline row (cp) and the torch row. */
export function printTable(title: string, rows: Measurement[], baseline: string, torch?: string): void {
  const base = rows.find((r) => r.name === baseline);
  const ref = torch ? rows.find((r) => r.name === torch) : undefined;
  const header = ["case", "wall s", "cpu s", "peak RSS", `× ${baseline}`, ...(ref ? [`${torch} ÷ case`] : [])];
  const body = rows.map((r) => [
    r.name,
    r.seconds.toFixed(2),
    r.cpu.toFixed(2),
    mb(r.peakRss),
    base ? (r.seconds / base.seconds).toFixed(2) : "",
    ...(ref ? [(ref.seconds / r.seconds).toFixed(2)] : []),
  ]);
  const widths = header.map((_, i) => Math.max(...[header, ...body].map((row) => (row[i] ?? "").length)));
  const line = (row: string[]) => `| ${row.map((c, i) => c.padEnd(widths[i] as number)).join(" | ")} |`;
  process.stdout.write(`\n${title}\n${line(header)}\n|${widths.map((w) => "-".repeat(w + 2)).join("|")}|\n${body.map(line).join("\n")}\n`);
}
