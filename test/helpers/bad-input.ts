/** Shared pieces of the bad-input tests: scratch copies of fixtures, torch edits of rank files, one-line refusals. */
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, expect } from "vitest";
import { isMegahubError, type MegahubError } from "../../src/errors.js";
import { fixture } from "./fixtures.js";
import { runPython } from "./torch.js";

/** A scratch folder removed after the file's tests: `out()` names a fresh output, `copyOf(...)` copies a fixture. */
export function scratch(prefix: string, fixtureDir: string): { work: string; out: () => string; copyOf: (name: string) => string } {
  const work = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  let n = 0;
  return {
    work,
    out: () => join(work, `out${n++}`),
    copyOf: (name) => {
      const dir = join(work, `src${n++}`);
      cpSync(fixture(fixtureDir, name), dir, { recursive: true });
      return dir;
    },
  };
}

/** Rewrites one rank file with torch: `edit` is Python acting on `sd` (the loaded dict), `m` (its model) and `a` (args). */
export function editRank(root: string, rank: string, edit: string): void {
  runPython(
    `import sys, glob, torch
sys.path.insert(0, 'scripts'); import fixturelib; fixturelib.install_megatron_stub()
f = glob.glob(sys.argv[1] + '/iter_*/' + sys.argv[2] + '/model_optim_rng.pt')[0]
sd = torch.load(f, map_location='cpu', weights_only=False)
m, a = sd['model'], sd['args']
${edit}
torch.save(sd, f)`,
    [root, rank],
  );
}

/** The job fails with one MegahubError line matching `pattern` (of `code` when given). */
export async function refused(job: Promise<unknown>, pattern: RegExp, code?: string): Promise<void> {
  const err = await job.then(() => undefined, (e: unknown) => e);
  expect(isMegahubError(err), `expected a MegahubError, got ${String(err)}`).toBe(true);
  if (code !== undefined) expect((err as MegahubError).code).toBe(code);
  expect((err as Error).message).toMatch(pattern);
  expect((err as Error).message).not.toContain("\n");
}
