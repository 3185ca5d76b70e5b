import { createHash, timingSafeEqual } from "node:crypto";
import { MegahubError } from "../../errors.js";
import { HttpError, type RequestContext } from "./http-util.js";

/**
 * Who may do what on the local hub, as on the Hub: a token belongs to a user (and the user's organisations), is
 * `read` or `write`, writes only repos of its own namespaces, and sees private repos only in those namespaces —
 * another user's private repo answers 404 exactly like a missing one. A token the server does not know answers
 * 401 on every route, as the Hub's "Invalid credentials in Authorization header" does.
 */

/** One accepted token. */
export interface TokenGrant {
  readonly token: string;
  /** The user name, which is also the user's own namespace. */
  readonly user: string;
  /** @default "write" */
  readonly role?: "read" | "write" | undefined;
  /** Organisations the user belongs to: namespaces the token may also write and see private repos in. */
  readonly orgs?: readonly string[] | undefined;
}

/** The user behind a request's token. */
export interface Principal {
  readonly user: string;
  readonly role: "read" | "write";
  readonly orgs: readonly string[];
}

const NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_-])?$/;

/** Validates grants once at start: `hf_` tokens (the clients refuse others), Hub-like names, no duplicates. */
export function checkGrants(grants: readonly TokenGrant[]): TokenGrant[] {
  const seen = new Set<string>();
  for (const g of grants) {
    if (!/^hf_[A-Za-z0-9_-]+$/.test(g.token)) {
      throw new MegahubError("USAGE", 'a local hub token must look like "hf_…" (the Hub clients refuse others)');
    }
    for (const n of [g.user, ...(g.orgs ?? [])]) {
      if (!NAME.test(n)) throw new MegahubError("USAGE", `local hub user or org name ${JSON.stringify(n)} is not a valid namespace`);
    }
    if (seen.has(g.token)) throw new MegahubError("USAGE", "the same local hub token is given twice");
    seen.add(g.token);
  }
  return [...grants];
}

/** The grant of `given`, compared in constant time so timing does not reveal how much of a token matched. */
export function findGrant(given: string | undefined, grants: readonly TokenGrant[]): Principal | undefined {
  if (given === undefined) return undefined;
  const g = createHash("sha256").update(given).digest();
  let found: TokenGrant | undefined;
  for (const t of grants) {
    if (timingSafeEqual(g, createHash("sha256").update(t.token).digest())) found = t;
  }
  return found === undefined ? undefined : { user: found.user, role: found.role ?? "write", orgs: found.orgs ?? [] };
}

/** True when `p` may see private repos of, and (with a write token) write to, namespace `ns`. */
export function ownsNamespace(p: Principal | undefined, ns: string): boolean {
  return p !== undefined && (p.user === ns || p.orgs.includes(ns));
}

/** Requires a write token for namespace `ns` (401 without a token, 403 for a read token or another's namespace). */
export function requireWrite(ctx: RequestContext, ns: string): void {
  const p = ctx.principal;
  if (p === undefined) {
    throw new HttpError(401, "Invalid username or password. This operation needs a token (Authorization: Bearer hf_…).");
  }
  if (p.role !== "write") throw new HttpError(403, "This token has read access only; a write token is needed.");
  if (!ownsNamespace(p, ns)) {
    throw new HttpError(403, `You don't have the rights to write to the namespace "${ns.slice(0, 100)}".`);
  }
}

/** Requires any valid token (whoami). */
export function requireToken(ctx: RequestContext): void {
  if (ctx.principal === undefined) throw new HttpError(401, "Invalid credentials in Authorization header");
}
