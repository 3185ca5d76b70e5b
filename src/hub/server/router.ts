import { HttpError, sendJson, type RequestContext } from "./http-util.js";
import { createRepo, deleteRepo, listReposRoute, repoInfoRoute, settingsRoute, validateYamlRoute, whoami } from "./routes-repos.js";
import { commitRoute, lfsBatchRoute, preuploadRoute, xetWriteTokenRoute } from "./routes-commit.js";
import { fileRoute } from "./routes-files.js";
import { commitsRoute, createBranchRoute, createTagRoute, deleteBranchRoute, deleteTagRoute, refsRoute } from "./routes-refs.js";
import { pathsInfoRoute, treeRoute } from "./routes-tree.js";
import { repoTypeOf, type HubState } from "./state.js";
import type { RepoType } from "./storage.js";

/**
 * Dispatches one request of the local Hub on its decoded path segments. The URL shapes are those the Hub
 * clients build (hub-protocol.md §1–2): `/api/...` for the API, `/{ns}/{name}.git/info/lfs/...` for LFS,
 * `/{ns}/{name}/resolve|raw/...` for files (datasets and spaces under a `datasets/`/`spaces/` prefix),
 * `/__megahub/lfs/<ticket>` for the upload URLs the batch call hands out and `/__megahub/cas/...` for the Xet
 * CAS that hf_xet uploads to.
 */
/** `cutAfter`: a fault's byte count, where a download is truncated or an upload's connection cut. */
export async function route(ctx: RequestContext, state: HubState, cutAfter: number | undefined): Promise<void> {
  const s = ctx.segments;
  const m = ctx.method;
  if (s[0] === "__megahub" && s[1] === "lfs") {
    const { headers, body } = await state.lfs.handleUpload(m, s.slice(2), ctx.req, cutAfter);
    sendJson(ctx, 200, body ?? {}, headers);
    return;
  }
  if (s[0] === "__megahub" && s[1] === "cas") {
    sendJson(ctx, 200, await state.xet.handle(m, s.slice(2), ctx.req));
    return;
  }
  if (m === "POST" && s.length === 2 && s[0] === "v1" && s[1] === "telemetry") {
    // hf_xet reports transfer statistics to the CAS host's root; they are not kept.
    ctx.req.resume();
    sendJson(ctx, 200, {});
    return;
  }
  if (s[0] === "api") {
    await apiRoute(ctx, state, s.slice(1), m);
    return;
  }
  // LFS batch: /{ns}/{name}.git/info/lfs/objects/batch, or /datasets/{ns}/{name}.git/...
  const prefixType = s[0] !== "models" && s.length > 3 ? repoTypeOf(s[0]) : undefined;
  const [type, rest] = prefixType !== undefined ? [prefixType, s.slice(1)] : ["model" as RepoType, s];
  if (m === "POST" && rest.length === 6 && rest[1]?.endsWith(".git") && rest.slice(2).join("/") === "info/lfs/objects/batch") {
    await lfsBatchRoute(ctx, state, type, `${rest[0]}/${rest[1].slice(0, -4)}`);
    return;
  }
  const kind = rest[2];
  if ((m === "GET" || m === "HEAD") && (kind === "resolve" || kind === "raw") && rest.length >= 5) {
    const name = `${rest[0]}/${rest[1]}`;
    await fileRoute(ctx, state, type, name, kind, rest[3] as string, rest.slice(4).join("/"), cutAfter);
    return;
  }
  throw new HttpError(404, `no route for ${m} ${ctx.req.url?.split("?")[0]?.slice(0, 200) ?? ""}`);
}

async function apiRoute(ctx: RequestContext, state: HubState, s: readonly string[], m: string): Promise<void> {
  if (m === "GET" && s.length === 1 && s[0] === "whoami-v2") return whoami(ctx);
  if (m === "POST" && s.length === 1 && s[0] === "validate-yaml") return validateYamlRoute(ctx);
  if (m === "POST" && s[0] === "repos" && s[1] === "create" && s.length === 2) return createRepo(ctx, state);
  if (m === "DELETE" && s[0] === "repos" && s[1] === "delete" && s.length === 2) return deleteRepo(ctx, state);
  const type = repoTypeOf(s[0]);
  if (type !== undefined && s.length === 1 && m === "GET") return listReposRoute(ctx, state, type);
  if (type === undefined || s.length < 3) throw new HttpError(404, "no such API route");
  const name = `${s[1]}/${s[2]}`;
  const action = s[3];
  const rev = s[4];
  if (action === undefined && m === "GET") return repoInfoRoute(ctx, state, type, name, "main");
  if (s.length === 4 && action === "refs" && m === "GET") return refsRoute(ctx, state, type, name);
  if (s.length === 4 && action === "settings" && m === "PUT") return settingsRoute(ctx, state, type, name);
  if (rev === undefined) throw new HttpError(404, "no such API route");
  if (action === "revision" && m === "GET") return repoInfoRoute(ctx, state, type, name, s.slice(4).join("/"));
  if (action === "tree" && m === "GET") return treeRoute(ctx, state, type, name, rev, s.slice(5).join("/"));
  if (action === "commits" && m === "GET") return commitsRoute(ctx, state, type, name, s.slice(4).join("/"));
  if (s.length !== 5) throw new HttpError(404, "no such API route");
  if (action === "paths-info" && m === "POST") return pathsInfoRoute(ctx, state, type, name, rev);
  if (action === "preupload" && m === "POST") return preuploadRoute(ctx, state, type, name, rev);
  if (action === "commit" && m === "POST") return commitRoute(ctx, state, type, name, rev);
  if (action === "xet-write-token" && m === "GET") return xetWriteTokenRoute(ctx, state, type, name, rev);
  if (action === "branch" && m === "POST") return createBranchRoute(ctx, state, type, name, rev);
  if (action === "branch" && m === "DELETE") return deleteBranchRoute(ctx, state, type, name, rev);
  if (action === "tag" && m === "POST") return createTagRoute(ctx, state, type, name, rev);
  if (action === "tag" && m === "DELETE") return deleteTagRoute(ctx, state, type, name, rev);
  throw new HttpError(404, "no such API route");
}
