import { requireWrite } from "./auth.js";
import { HttpError, readJson, sendJson, type RequestContext } from "./http-util.js";
import type { HubState } from "./state.js";
import { own, type RepoType } from "./storage.js";

/** Commits per page of the commits API; further pages through `Link`, as the Hub pages. */
const COMMITS_PAGE = 50;

/** `POST /api/{type}s/{ns}/{name}/branch/{branch}` with `{startingPoint?, overwrite?}`. */
export async function createBranchRoute(ctx: RequestContext, state: HubState, type: RepoType, name: string, branch: string): Promise<void> {
  const body = await readJson(ctx.req, undefined, ctx.budget);
  requireWrite(ctx, name.split("/")[0] as string);
  if (body.emptyBranch === true) throw new HttpError(400, "empty branches are not supported by the local hub");
  const repo = await state.store.mustGetRepo(type, name, ctx.principal);
  const from = typeof body.startingPoint === "string" ? body.startingPoint : undefined;
  await state.store.createBranch(repo, branch, from, body.overwrite === true);
  sendJson(ctx, 200, {});
}

/** `DELETE /api/{type}s/{ns}/{name}/branch/{branch}`. */
export async function deleteBranchRoute(ctx: RequestContext, state: HubState, type: RepoType, name: string, branch: string): Promise<void> {
  ctx.req.resume();
  requireWrite(ctx, name.split("/")[0] as string);
  await state.store.deleteBranch(await state.store.mustGetRepo(type, name, ctx.principal), branch);
  sendJson(ctx, 200, {});
}

/** `POST /api/{type}s/{ns}/{name}/tag/{rev}` with `{tag, message?}`; 409 when the tag exists. */
export async function createTagRoute(ctx: RequestContext, state: HubState, type: RepoType, name: string, rev: string): Promise<void> {
  const body = await readJson(ctx.req, undefined, ctx.budget);
  requireWrite(ctx, name.split("/")[0] as string);
  if (typeof body.tag !== "string" || body.tag === "") throw new HttpError(400, '"tag" must be a non-empty string');
  const repo = await state.store.mustGetRepo(type, name, ctx.principal);
  await state.store.createTag(repo, body.tag, rev, typeof body.message === "string" ? body.message : "");
  sendJson(ctx, 200, {});
}

/** `DELETE /api/{type}s/{ns}/{name}/tag/{tag}`. */
export async function deleteTagRoute(ctx: RequestContext, state: HubState, type: RepoType, name: string, tag: string): Promise<void> {
  ctx.req.resume();
  requireWrite(ctx, name.split("/")[0] as string);
  await state.store.deleteTag(await state.store.mustGetRepo(type, name, ctx.principal), tag);
  sendJson(ctx, 200, {});
}

/** `GET /api/{type}s/{ns}/{name}/refs[?include_prs=1]`: branches and tags, as list_repo_refs reads them. */
export async function refsRoute(ctx: RequestContext, state: HubState, type: RepoType, name: string): Promise<void> {
  const repo = await state.store.mustGetRepo(type, name, ctx.principal);
  const branches = Object.keys(repo.refs)
    .sort()
    .map((b) => ({ name: b, ref: `refs/heads/${b}`, targetCommit: own(repo.refs, b) }));
  const tags = Object.keys(repo.tags ?? {})
    .sort()
    .map((t) => ({ name: t, ref: `refs/tags/${t}`, targetCommit: own(repo.tags ?? {}, t)?.commit }));
  sendJson(ctx, 200, {
    branches,
    tags,
    converts: [],
    ...(ctx.query.get("include_prs") === "1" ? { pullRequests: [] } : {}),
  });
}

/** `GET /api/{type}s/{ns}/{name}/commits/{rev}[?p=N]`: the first-parent history, newest first. */
export async function commitsRoute(ctx: RequestContext, state: HubState, type: RepoType, name: string, rev: string): Promise<void> {
  const repo = await state.store.mustGetRepo(type, name, ctx.principal);
  const p = Number(ctx.query.get("p") ?? "0");
  const page = Number.isSafeInteger(p) && p > 0 ? p : 0;
  const { commits, more } = await state.store.history(repo, rev, page * COMMITS_PAGE, COMMITS_PAGE);
  const formatted = [...ctx.query.getAll("expand[]"), ...ctx.query.getAll("expand")].includes("formatted");
  const out = commits.map((c) => ({
    id: c.id,
    title: c.summary,
    message: c.description,
    date: c.at,
    authors: [{ user: c.author ?? (name.split("/")[0] as string) }],
    ...(formatted ? { formatted: { title: escapeHtml(c.summary), message: escapeHtml(c.description) } } : {}),
  }));
  const headers: Record<string, string> = {};
  if (more) {
    const q = new URLSearchParams(ctx.query);
    q.set("p", String(page + 1));
    headers.Link = `<${ctx.baseUrl}${ctx.req.url?.split("?")[0] ?? ""}?${q.toString()}>; rel="next"`;
  }
  sendJson(ctx, 200, out, headers);
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c] as string);
}
