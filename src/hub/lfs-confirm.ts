/** After a lost answer to an upload: does the Hub hold the object? (See HubFetchOptions.confirmStored.) */
import type { HubCallParams } from "./remote-state.js";

/** A file of the push, as far as the check needs it. */
export interface ConfirmItem {
  readonly path: string;
  readonly size: number;
  readonly bytes?: Uint8Array;
}

/**
 * Whether the Hub stores an LFS object, asked through the batch endpoint (an object it has comes back without an
 * upload action). Used after a lost answer to an upload, when the retry cannot tell.
 */
export async function lfsObjectStored<T extends ConfirmItem>(
  call: HubCallParams,
  items: readonly T[],
  hashes: ReadonlyMap<string, string>,
  hashOf: (item: T, kind: "sha256") => Promise<string>,
  upload: { oid?: string | undefined; path?: string | undefined },
): Promise<boolean> {
  let item = upload.path === undefined ? undefined : items.find((i) => i.path === upload.path);
  if (item === undefined && upload.oid !== undefined) {
    // A /complete names only the oid: find the file by hashing (memoized; this is the rare recovery path).
    const path = [...hashes].find(([k, v]) => k.startsWith("sha256:") && v === upload.oid)?.[0].slice(7);
    item = items.find((i) => i.path === path);
    for (const candidate of items) {
      if (item !== undefined) break;
      if (candidate.bytes === undefined && (await hashOf(candidate, "sha256")) === upload.oid) item = candidate;
    }
  }
  if (item === undefined) return false;
  const oid = await hashOf(item, "sha256");
  const res = await call.fetch(`${call.hubUrl}/${call.repo}.git/info/lfs/objects/batch`, {
    method: "POST",
    headers: {
      Accept: "application/vnd.git-lfs+json",
      "Content-Type": "application/vnd.git-lfs+json",
      ...(call.accessToken !== undefined ? { Authorization: `Bearer ${call.accessToken}` } : {}),
    },
    body: JSON.stringify({ operation: "upload", transfers: ["basic", "multipart"], hash_algo: "sha256", objects: [{ oid, size: item.size }] }),
  });
  if (!res.ok) return false;
  const answer = (await res.json()) as { objects?: { oid?: string; actions?: { upload?: unknown }; error?: unknown }[] };
  const obj = answer.objects?.find((o) => o.oid === oid);
  return obj !== undefined && obj.error === undefined && obj.actions?.upload === undefined;
}

