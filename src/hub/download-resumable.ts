import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, rm, stat, truncate } from "node:fs/promises";
import { MegahubError } from "../errors.js";
import { BatchedWriter } from "./batched-writer.js";
import { redact } from "./redact.js";
import { apiError } from "./remote-state.js";
import { isRetryableError } from "./retry.js";

/** One file to download by {@link downloadResumable}. */
export interface ResumableDownload {
  /** Absolute URL of the file (a `resolve/` URL). */
  url: string;
  accessToken?: string | undefined;
  fetch: typeof fetch;
  /** The partial file; it is appended to, and kept on failure so the next run resumes. */
  dest: string;
  /** Size the finished file must have. */
  size: number;
  /** sha256 the content must hash to (LFS files). */
  sha256?: string | undefined;
  /** Git blob id the content must hash to (regular files). */
  gitSha1?: string | undefined;
  /** Repo path, for messages. */
  path: string;
  /**
   * Reports bytes as they arrive; negative when a restart throws bytes away. `fromDisk` marks the bytes of an
   * earlier run found in `dest`.
   */
  onBytes?: (delta: number, fromDisk: boolean) => void;
  /** Called when a request resumes from a byte offset > 0. */
  onResume?: (from: number) => void;
  /** Mid-body failures to resume from within this call. @default 5 */
  maxResumes?: number;
  abortSignal?: AbortSignal | undefined;
}

/**
 * Downloads one file into `dest`, resuming: bytes already in `dest` are kept (and hashed) and the rest is asked
 * for with `Range: bytes=N-`; a connection that dies mid-body is resumed the same way. A server that ignores the
 * range (200) restarts the file. When the size is reached, the sha256 (LFS) or git blob id is checked; a mismatch
 * deletes the partial file so a later run starts clean rather than resuming from corrupt bytes.
 */
export async function downloadResumable(d: ResumableDownload): Promise<void> {
  let have = (await stat(d.dest).catch(() => undefined))?.size ?? 0;
  if (have > d.size) {
    await truncate(d.dest, 0);
    have = 0;
  }
  // Only the hash that will be checked: LFS files by sha256, regular files by git blob id.
  const newHashes = () => ({
    sha256: d.sha256 !== undefined ? createHash("sha256") : undefined,
    sha1: d.sha256 === undefined && d.gitSha1 !== undefined ? createHash("sha1").update(`blob ${d.size}\0`) : undefined,
  });
  let hashes = newHashes();
  if (have > 0) {
    for await (const chunk of createReadStream(d.dest, { highWaterMark: 1 << 20 })) update(hashes, chunk as Buffer);
    d.onBytes?.(have, true);
  }
  if (d.size === 0) await (await open(d.dest, "a")).close(); // nothing to fetch, but the file must exist
  const maxResumes = d.maxResumes ?? 5;
  let failures = 0;
  while (have < d.size) {
    d.abortSignal?.throwIfAborted();
    if (have > 0) d.onResume?.(have);
    const res = await d.fetch(d.url, {
      headers: {
        ...(d.accessToken !== undefined ? { Authorization: `Bearer ${d.accessToken}` } : {}),
        ...(have > 0 ? { Range: `bytes=${have}-` } : {}),
      },
      ...(d.abortSignal ? { signal: d.abortSignal } : {}),
    });
    if (!res.ok) throw await apiError(res);
    const startsAt = res.status === 206 ? rangeStart(res.headers.get("content-range")) : 0;
    if (startsAt !== have) {
      // The server sent the whole file (or another range): start over rather than splice mismatched bytes.
      await truncate(d.dest, 0).catch(() => undefined);
      d.onBytes?.(-have, false);
      have = 0;
      hashes = newHashes();
      if (startsAt !== 0) {
        await res.body?.cancel();
        continue;
      }
    }
    const fh = await open(d.dest, "a");
    const out = new BatchedWriter(fh, null);
    try {
      if (!res.body) throw new Error("the response has no body");
      for await (const chunk of res.body) {
        const buf = chunk as Uint8Array;
        if (have + buf.byteLength > d.size) throw new MegahubError("HUB", `${d.path}: the Hub sent more than ${d.size} bytes`);
        await out.write(buf);
        update(hashes, buf);
        have += buf.byteLength;
        d.onBytes?.(buf.byteLength, false);
      }
      await out.flush();
    } catch (e) {
      await out.flush(); // keep every byte received: the next request resumes after them
      if (d.abortSignal?.aborted || e instanceof MegahubError || !isResumable(e) || ++failures > maxResumes) {
        throw e;
      }
      continue; // the bytes written so far stay; the next request resumes after them
    } finally {
      await fh.close();
    }
    if (have < d.size && ++failures > maxResumes) {
      throw new MegahubError("HUB", `${d.path}: the download ended after ${have} of ${d.size} bytes`);
    }
  }
  const sha256 = hashes.sha256?.digest("hex");
  const gitSha1 = hashes.sha1?.digest("hex");
  const bad =
    d.sha256 !== undefined && sha256 !== d.sha256
      ? `sha256 ${sha256} does not match the Hub's ${d.sha256}`
      : d.gitSha1 !== undefined && gitSha1 !== d.gitSha1
        ? `git blob id ${gitSha1} does not match the Hub's ${d.gitSha1}`
        : undefined;
  if (bad !== undefined) {
    await rm(d.dest, { force: true });
    throw new MegahubError("HUB", `${d.path}: downloaded bytes are corrupt: ${bad}; run the pull again`, {
      file: redact(d.url, [d.accessToken]),
    });
  }
}

function update(h: { sha256: Hash | undefined; sha1: Hash | undefined }, chunk: Uint8Array): void {
  h.sha256?.update(chunk);
  h.sha1?.update(chunk);
}

function rangeStart(contentRange: string | null): number {
  const m = contentRange !== null ? /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(contentRange.trim()) : null;
  return m ? Number(m[1]) : -1;
}

/** Body-stream failures worth resuming: socket errors, undici's "terminated", premature close. */
function isResumable(e: unknown): boolean {
  if (isRetryableError(e)) return true;
  if (!(e instanceof Error)) return false;
  return /terminated|premature|other side closed|ECONNRESET|aborted/i.test(`${e.message} ${String((e as { cause?: unknown }).cause ?? "")}`);
}
