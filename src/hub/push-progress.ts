/** The progress events a push emits; a subset of PushEvent. */
export type ProgressEvent = { type: "hashing"; done: number; total: number } | { type: "upload"; done: number; total: number };

/** Bytes hashed and sent per file, folded into running done/total pairs for the progress bar (O(1) per chunk). */
export class ByteProgress {
  private sizes = new Map<string, number>();
  private inFlight = new Map<string, number>();
  private finished = new Set<string>();
  private hashedFrac = new Map<string, number>();
  private total = 0;
  private done = 0;
  private hashTotal = 0;
  private hashDone = 0;
  bytesSent = 0;

  constructor(private readonly emit: (e: ProgressEvent) => void) {}

  start(items: ReadonlyArray<{ path: string; size: number }>): void {
    for (const i of items) this.sizes.set(i.path, i.size);
    this.total = items.reduce((n, i) => n + i.size, 0);
    this.emit({ type: "upload", done: this.done, total: this.total });
  }

  sent(path: string | undefined, delta: number): void {
    this.bytesSent += delta;
    const size = path !== undefined ? this.sizes.get(path) : undefined;
    if (path === undefined || size === undefined) return;
    const before = this.inFlight.get(path) ?? 0;
    this.inFlight.set(path, before + delta);
    if (!this.finished.has(path)) {
      this.done += clamp(before + delta, size) - clamp(before, size);
      this.emit({ type: "upload", done: this.done, total: this.total });
    }
  }

  finish(path: string): void {
    const size = this.sizes.get(path);
    if (size !== undefined && !this.finished.has(path)) {
      this.finished.add(path);
      this.done += size - clamp(this.inFlight.get(path) ?? 0, size);
      this.emit({ type: "upload", done: this.done, total: this.total });
    }
  }

  hashed(path: string, frac: number): void {
    const size = this.sizes.get(path) ?? 0;
    const before = this.hashedFrac.get(path);
    if (before === undefined) this.hashTotal += size;
    this.hashedFrac.set(path, frac);
    this.hashDone += (frac - (before ?? 0)) * size;
    this.emit({ type: "hashing", done: Math.round(this.hashDone), total: this.hashTotal });
  }
}

function clamp(n: number, size: number): number {
  return Math.min(size, Math.max(0, n));
}
