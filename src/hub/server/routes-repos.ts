import { ownsNamespace, requireToken, requireWrite } from "./auth.js";
import { repoExtras, validateCard } from "./card-data.js";
import { HttpError, readJson, sendJson, stringField, type RequestContext } from "./http-util.js";
import { repoInfo, repoTypeOf, repoUrlPrefix, type HubState } from "./state.js";
import type { RepoType } from "./storage.js";

/** `GET /api/whoami-v2` (row 1): `auth` is mandatory, the client reads `auth.accessToken.createdAt`. */
export function whoami(ctx: RequestContext): void {
  requireToken(ctx);
  const p = ctx.principal as NonNullable<RequestContext["principal"]>;
  sendJson(ctx, 200, {
    type: "user",
    id: "000000000000000000000001",
    name: p.user,
    fullname: p.user,
    email: null,
    emailVerified: false,
    isPro: false,
    canPay: false,
    avatarUrl: "",
    periodEnd: null,
    billingMode: "postpaid",
    orgs: p.orgs.map((name) => ({ type: "org", name, fullname: name, roleInOrg: p.role === "write" ? "write" : "read" })),
    auth: {
      type: "access_token",
      accessToken: { displayName: "megahub", role: p.role, createdAt: new Date(0).toISOString() },
    },
  });
}

/** `POST /api/repos/create` (row 3): 409 on a duplicate, with the repo URL, as the Hub answers. */
export async function createRepo(ctx: RequestContext, state: HubState): Promise<void> {
  const body = await readJson(ctx.req, undefined, ctx.budget);
  const { type, name } = repoFromBody(body, ctx);
  requireWrite(ctx, name.split("/")[0] as string);
  const isPrivate = body.visibility === "private" || body.private === true;
  const url = `${ctx.baseUrl}/${repoUrlPrefix(type)}${name}`;
  try {
    await state.store.createRepo(type, name, isPrivate);
  } catch (e) {
    if (e instanceof HttpError && e.status === 409) {
      sendJson(ctx, 409, { error: e.message, url }, { "X-Error-Message": e.message });
      return;
    }
    throw e;
  }
  sendJson(ctx, 200, { url, name, id: name });
}

/** `DELETE /api/repos/delete` (row 4). */
export async function deleteRepo(ctx: RequestContext, state: HubState): Promise<void> {
  const { type, name } = repoFromBody(await readJson(ctx.req, undefined, ctx.budget), ctx);
  requireWrite(ctx, name.split("/")[0] as string);
  await state.store.mustGetRepo(type, name, ctx.principal);
  await state.store.deleteRepo(type, name);
  sendJson(ctx, 200, {});
}

/** `PUT /api/{type}s/{ns}/{name}/settings` with `{visibility?}` or `{private?}` (update_repo_settings). */
export async function settingsRoute(ctx: RequestContext, state: HubState, type: RepoType, name: string): Promise<void> {
  const body = await readJson(ctx.req, undefined, ctx.budget);
  requireWrite(ctx, name.split("/")[0] as string);
  await state.store.mustGetRepo(type, name, ctx.principal);
  const v = body.visibility;
  if (v !== undefined && v !== "public" && v !== "private") throw new HttpError(400, '"visibility" must be "public" or "private"');
  if (body.private !== undefined && typeof body.private !== "boolean") throw new HttpError(400, '"private" must be a boolean');
  if (body.gated !== undefined && body.gated !== false) throw new HttpError(400, "the local hub has no gated repos");
  const isPrivate = v !== undefined ? v === "private" : (body.private as boolean | undefined);
  if (isPrivate !== undefined) await state.store.setPrivate(type, name, isPrivate);
  sendJson(ctx, 200, {});
}

/** Fields of `?expand=` / `?expand[]=`, as the Hub reads both spellings. */
function expandOf(q: URLSearchParams): string[] {
  return [...q.getAll("expand"), ...q.getAll("expand[]")];
}

/** `GET /api/{type}s/{ns}/{name}` (row 2) and `…/revision/{rev}` (row 15); `?blobs=true` for file metadata. */
export async function repoInfoRoute(
  ctx: RequestContext,
  state: HubState,
  type: RepoType,
  name: string,
  rev: string,
): Promise<void> {
  const repo = await state.store.mustGetRepo(type, name, ctx.principal);
  const commit = await state.store.getCommit(repo, await state.store.resolveRevision(repo, rev));
  const extras = await repoExtras(state.store, commit);
  const blobs = ctx.query.get("blobs") === "true" || ctx.query.get("blobs") === "True";
  sendJson(ctx, 200, repoInfo(repo, commit, { blobs, expand: expandOf(ctx.query), extras }));
}

/**
 * `GET /api/{type}s?author=&search=&limit=&full=&cardData=` (list_models): the repos the caller may see, newest
 * first as the Hub's default sort, paginated with a `Link` header.
 */
export async function listReposRoute(ctx: RequestContext, state: HubState, type: RepoType): Promise<void> {
  const q = ctx.query;
  const author = q.get("author");
  const search = q.getAll("search").map((s) => s.toLowerCase());
  const limitParam = Number(q.get("limit") ?? "1000");
  const pageSize = Number.isSafeInteger(limitParam) && limitParam > 0 ? Math.min(limitParam, 1000) : 1000;
  const cursor = Number(q.get("cursor") ?? "0");
  const start = Number.isSafeInteger(cursor) && cursor > 0 ? cursor : 0;
  const full = q.get("full") === "true" || q.get("full") === "True";
  const withCard = q.get("cardData") === "true" || q.get("cardData") === "True";
  const visible = (await state.store.listRepos(type)).filter(
    (r) =>
      (!r.private || ownsNamespace(ctx.principal, r.name.split("/")[0] ?? "")) &&
      (author === null || r.name.split("/")[0] === author) &&
      search.every((s) => r.name.toLowerCase().includes(s)),
  );
  visible.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  const page = visible.slice(start, start + pageSize);
  const out: Record<string, unknown>[] = [];
  for (const repo of page) {
    const head = repo.refs.main;
    if (head === undefined) continue;
    const commit = await state.store.getCommit(repo, head);
    const extras = withCard || full ? await repoExtras(state.store, commit) : {};
    const info = repoInfo(repo, commit, { extras });
    const expand = expandOf(q);
    const keys = expand.length > 0 ? expand : full ? Object.keys(info) : ["id", "author", "private", "tags", "pipeline_tag", "library_name", "createdAt", "likes", "downloads", "modelId"];
    const row: Record<string, unknown> = { _id: info._id, id: info.id };
    for (const k of keys) if (Object.hasOwn(info, k)) row[k] = info[k];
    if (withCard && info.cardData !== undefined) row.cardData = info.cardData;
    out.push(row);
  }
  const headers: Record<string, string> = {};
  if (start + pageSize < visible.length) {
    const next = new URLSearchParams(q);
    next.set("cursor", String(start + pageSize));
    headers.Link = `<${ctx.baseUrl}/api/${type}s?${next.toString()}>; rel="next"`;
  }
  sendJson(ctx, 200, out, headers);
}

/** `POST /api/validate-yaml` with `{content, repoType}` (row 16): 400 with `errors` for metadata the Hub refuses. */
export async function validateYamlRoute(ctx: RequestContext): Promise<void> {
  const body = await readJson(ctx.req, undefined, ctx.budget);
  if (typeof body.content !== "string") throw new HttpError(400, '"content" must be a string');
  const result = validateCard(body.content);
  if (result.errors.length > 0) {
    sendJson(ctx, 400, { error: result.errors.map((e) => e.message).join("; "), ...result });
    return;
  }
  sendJson(ctx, 200, result);
}

function repoFromBody(body: Record<string, unknown>, ctx: RequestContext): { type: RepoType; name: string } {
  const given = stringField(body, "name");
  const org = typeof body.organization === "string" && body.organization !== "" ? body.organization : undefined;
  const t = body.type === undefined || body.type === null ? "model" : body.type;
  const type = typeof t === "string" ? repoTypeOf(`${t}s`) : undefined;
  if (type === undefined) throw new HttpError(400, `unknown repo type ${JSON.stringify(t)}`);
  // Python sends `name` alone with the namespace in `organization`, or nothing: then it is the token's user.
  const ns = org ?? ctx.principal?.user;
  if (ns === undefined) throw new HttpError(401, "Invalid username or password.");
  return { type, name: `${ns}/${given}` };
}
