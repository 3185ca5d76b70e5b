/**
 * Operating-system errors in one line: a full disk, a read-only or missing folder is the user's situation, not a
 * bug, so it gets a sentence with the path instead of a stack trace (which --debug still shows).
 */
const ADVICE: Readonly<Record<string, string>> = {
  ENOSPC: "no space left on the device: free some, or choose another --out",
  EDQUOT: "disk quota exceeded: free some, or choose another --out",
  EROFS: "the file system is read-only: choose another --out",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  ENOTDIR: "a part of the path is a file, not a folder",
  EISDIR: "expected a file but found a folder",
  ENOENT: "no such file or folder",
  EEXIST: "already exists",
  EMFILE: "too many open files: raise the limit (ulimit -n)",
  ENAMETOOLONG: "the path is too long",
  ELOOP: "too many symbolic links in the path",
  EXDEV: "cannot rename across file systems",
  EIO: "input/output error from the device",
};

/** The one-line message for an errno error (from node:fs and friends), or undefined for anything else. */
export function osErrorLine(e: unknown): string | undefined {
  if (!(e instanceof Error)) return undefined;
  const err = e as NodeJS.ErrnoException;
  const code = err.code;
  if (typeof code !== "string" || !(code in ADVICE) || typeof err.syscall !== "string") return undefined;
  const where = err.path !== undefined ? `${err.path}: ` : "";
  return `${where}${ADVICE[code]} (${code} during ${err.syscall})`;
}
