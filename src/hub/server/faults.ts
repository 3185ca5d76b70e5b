/**
 * Fault injection for the local Hub: the failures users meet on the real one (dropped connections, 5xx, 429
 * with Retry-After, downloads cut short), on chosen requests, a chosen number of times. Tests use it to prove
 * that push and pull recover; users can use it to rehearse a flaky network offline.
 */

/** One injected failure. */
export type Fault =
  /** Answer this status (the request body is drained first), optionally with `Retry-After` in seconds. */
  | { kind: "status"; status: number; retryAfter?: number }
  /** Destroy the connection before reading the request. */
  | { kind: "drop" }
  /** Process the request fully, then destroy the connection instead of answering (a lost response). */
  | { kind: "drop-response" }
  /** For file downloads: send this many body bytes, then destroy the connection. */
  | { kind: "truncate"; afterBytes: number }
  /** For uploads: receive (and keep) about this many request-body bytes, then destroy the connection. */
  | { kind: "cut"; afterBytes: number };

/** When to inject a {@link Fault}, and how often. */
export interface FaultRule {
  /** Tested against `"METHOD /raw/path"` (no query), e.g. `/^PUT \/__megahub\/lfs\//`. */
  match: RegExp;
  fault: Fault;
  /** Matching requests to fail; the rule is spent after that. */
  times: number;
  /** Matching requests to let through before failing. @default 0 */
  skip?: number;
}

/** A set of rules, consulted once per request. Rules are checked in order; the first live match applies. */
export class FaultInjector {
  readonly rules: FaultRule[] = [];
  /** Faults applied so far, as `"METHOD /path → kind"`. */
  readonly applied: string[] = [];

  add(...rules: FaultRule[]): void {
    this.rules.push(...rules.map((r) => ({ ...r })));
  }

  clear(): void {
    this.rules.length = 0;
  }

  /** The fault for this request, if a live rule matches; consumes one use of that rule. */
  take(method: string, rawPath: string): Fault | undefined {
    const key = `${method} ${rawPath}`;
    for (const rule of this.rules) {
      if (rule.times <= 0 || !rule.match.test(key)) continue;
      if ((rule.skip ?? 0) > 0) {
        rule.skip = (rule.skip ?? 0) - 1;
        continue;
      }
      rule.times--;
      this.applied.push(`${key.replace(/(\/__megahub\/lfs\/)[0-9a-f]+/, "$1…")} → ${rule.fault.kind}`);
      return rule.fault;
    }
    return undefined;
  }
}
