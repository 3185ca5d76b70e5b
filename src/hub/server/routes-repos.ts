import { HttpError, requireAuth, sendJson, stringField, type RequestContext, readJson } from "./http-util.js";
import { REPO_TYPES, repoInfo, repoUrlPrefix, type HubState } from "./state.js";
import type { RepoType } from "./storage.js";

/** `GET /api/whoami-v2` (row 1): `auth` is mandatory, the client reads `auth.accessToken.createdAt`. */
export function whoami(ctx: RequestContext): void {
  if (!ctx.authed) throw new HttpError(401, "Invalid credentials in Authorization header");
  sendJson(ctx, 200, {
    type: "user",
    id: "000000000000000000000001",
    name: "local",
    fullname: "megahub local hub",
    email: null,
    emailVerified: false,
    isPro: false,
    canPay: false,
    avatarUrl: "",
    periodEnd: null,
    billingMode: "postpaid",
    orgs: [],
    auth: {
      type: "access_token",
      accessToken: { displayName: "megahub", role: "write", createdAt: new Date(0).toISOString() },
    },
  });
}

/** `POST /api/repos/create` (row 3): 409 on a duplicate, with the repo URL, as the Hub answers. */
export async function createRepo(ctx: RequestContext, state: HubState): Promise<void> {
  requireAuth(ctx);
  const body = await readJson(ctx.req);
  const { type, name } = repoFromBody(body);
  const isPrivate = body.visibility === "private" || body.private === true;
  const url = `${ctx.baseUrl}/${repoUrlPrefix(type)}${name}`;
  try {
    await state.store.createRepo(type, name, isPrivate);
  } catch (e) {
    if (e instanceof HttpError && e.status === 409) {
      sendJson(ctx, 409, { error: e.message, url });
      return;
    }
    throw e;
  }
  sendJson(ctx, 200, { url, name, id: name });
}

/** `DELETE /api/repos/delete` (row 4). */
export async function deleteRepo(ctx: RequestContext, state: HubState): Promise<void> {
  requireAuth(ctx);
  const { type, name } = repoFromBody(await readJson(ctx.req));
  await state.store.deleteRepo(type, name);
  sendJson(ctx, 200, {});
}

/** `GET /api/{type}s/{ns}/{name}` (row 2) and `…/revision/{rev}` (row 15). */
export async function repoInfoRoute(
  ctx: RequestContext,
  state: HubState,
  type: RepoType,
  name: string,
  rev: string,
): Promise<void> {
  const repo = await state.store.mustGetRepo(type, name, ctx.authed);
  const commit = await state.store.getCommit(repo, await state.store.resolveRevision(repo, rev));
  sendJson(ctx, 200, repoInfo(repo, commit));
}

/** `POST /api/{type}s/{ns}/{name}/branch/{branch}` with `{startingPoint?, overwrite?}`. */
export async function createBranchRoute(
  ctx: RequestContext,
  state: HubState,
  type: RepoType,
  name: string,
  branch: string,
): Promise<void> {
  requireAuth(ctx);
  const body = await readJson(ctx.req);
  if (body.emptyBranch === true) throw new HttpError(400, "empty branches are not supported by the local hub");
  const repo = await state.store.mustGetRepo(type, name, ctx.authed);
  const from = typeof body.startingPoint === "string" ? body.startingPoint : undefined;
  await state.store.createBranch(repo, branch, from, body.overwrite === true);
  sendJson(ctx, 200, {});
}

function repoFromBody(body: Record<string, unknown>): { type: RepoType; name: string } {
  const name = stringField(body, "name");
  const org = typeof body.organization === "string" && body.organization !== "" ? body.organization : undefined;
  const t = body.type === undefined ? "model" : body.type;
  const type = typeof t === "string" ? REPO_TYPES[`${t}s`] : undefined;
  if (type === undefined) throw new HttpError(400, `unknown repo type ${JSON.stringify(t)}`);
  if (org === undefined) throw new HttpError(400, '"organization" (the namespace) is required by the local hub');
  return { type, name: `${org}/${name}` };
}
