import { stat } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { MegahubError } from "../../errors.js";
import { fsTree, subTree, tarTree, type Tree } from "../../io/tree.js";

export const TRACKER_FILE = "latest_checkpointed_iteration.txt";
const RANK_DIR = /^mp_rank_(\d{2})(?:_(\d{3}))?(?:_(\d{3}))?$/;
/** Written beside model_optim_rng.pt by the distributed optimizer: flat fp32 buffers a converter never needs. */
export const DISTRIB_OPTIM_FILE = "distrib_optim.pt";
const ITER_DIR = /^iter_(\d{7,})$/;
const RANK_FILES = ["model_optim_rng.pt", "model_rng.pt"];

export interface RankFile {
  readonly tp: number;
  /**
   * The first number after the TP rank: the PP stage, or the EP rank when a PP 1 run used expert parallelism
   * (`mp_rank_TT_EEE` looks exactly like `mp_rank_TT_PPP`; only args can tell, see openMegatron).
   */
  readonly pp: number;
  /** The EP rank of `mp_rank_TT_PPP_EEE`. */
  readonly ep: number;
  /** Path inside `tree`. */
  readonly path: string;
  /** The distributed optimizer's file beside it, when present. */
  readonly distribOptim: boolean;
}

export interface MegatronLayout {
  /** Tree rooted at the iteration directory. */
  readonly tree: Tree;
  readonly iteration: number | "release";
  readonly tp: number;
  readonly pp: number;
  /** Distinct values of the second and third rank-directory numbers (1 when absent). */
  readonly ep: number;
  /** Rank files ordered by (pp, ep, tp). */
  readonly ranks: readonly RankFile[];
  /** How many numbers follow mp_rank_TT in the directory names (0, 1 or 2). */
  readonly suffixes: number;
  /** Where the iteration was chosen from: the tracker file, --iteration, or the path itself. */
  readonly chosenBy: "tracker" | "option" | "path" | "only";
}

const layoutError = (detail: string, file: string) => new MegahubError("LAYOUT", detail, { file });

/**
 * Finds the rank files of a Megatron checkpoint given a root (with the tracker file), an iter_NNNNNNN or release
 * directory, a rank directory or file, or an uncompressed .tar of any of these.
 */
export async function discoverMegatron(path: string, options: { iteration?: number } = {}): Promise<MegatronLayout> {
  let s;
  try {
    s = await stat(path);
  } catch {
    throw layoutError("no such file or directory", path);
  }
  if (s.isFile()) {
    if (/\.tar$/i.test(path)) {
      return fromRoot(await descendSingleFolder(await tarTree(path)), options);
    }
    // A rank file inside mp_rank_XX/: use its iteration directory.
    const rankDir = dirname(path);
    if (RANK_DIR.test(basename(rankDir))) {
      return fromRoot(fsTree(dirname(rankDir)), options);
    }
    throw layoutError("expected a Megatron checkpoint directory or .tar, got a file", path);
  }
  if (RANK_DIR.test(basename(path))) {
    return fromRoot(fsTree(dirname(path)), options);
  }
  return fromRoot(fsTree(path), options);
}

async function descendSingleFolder(tree: Tree): Promise<Tree> {
  const top = (await tree.list("")) ?? [];
  const looksLikeCheckpoint = top.some((n) => n === TRACKER_FILE || RANK_DIR.test(n) || ITER_DIR.test(n) || n === "release");
  if (!looksLikeCheckpoint && top.length === 1 && (await tree.list(top[0] as string)) !== undefined) {
    return descendSingleFolder(subTree(tree, top[0] as string));
  }
  return tree;
}

async function fromRoot(root: Tree, options: { iteration?: number }): Promise<MegatronLayout> {
  const entries = (await root.list("")) ?? [];
  if (entries.some((n) => RANK_DIR.test(n))) {
    if (options.iteration !== undefined) {
      throw new MegahubError("USAGE", "--iteration applies to a checkpoint root, but this is an iteration directory", {
        file: root.name,
      });
    }
    const m = ITER_DIR.exec(basename(root.name.replace(/#/g, "/")));
    return withRanks(root, m ? Number(m[1]) : basename(root.name) === "release" ? "release" : NaN, "path");
  }
  const iterDirs = entries.filter((n) => ITER_DIR.test(n) || n === "release");
  let chosen: string;
  let chosenBy: MegatronLayout["chosenBy"];
  if (options.iteration !== undefined) {
    chosen = iterationDirName(options.iteration);
    chosenBy = "option";
    if (!iterDirs.includes(chosen)) {
      throw layoutError(`no ${chosen} directory; available: ${iterDirs.join(", ") || "none"}`, root.name);
    }
  } else if (entries.includes(TRACKER_FILE)) {
    const text = (await root.readText(TRACKER_FILE)).trim();
    if (text === "release") {
      chosen = "release";
    } else if (/^\d+$/.test(text)) {
      chosen = iterationDirName(Number(text));
    } else {
      throw layoutError(`expected an integer or "release", found "${text.slice(0, 40)}"`, root.display(TRACKER_FILE));
    }
    chosenBy = "tracker";
    if (!iterDirs.includes(chosen)) {
      throw layoutError(`the tracker names ${chosen}, which does not exist (found: ${iterDirs.join(", ") || "none"})`, root.name);
    }
  } else if (iterDirs.length === 1) {
    chosen = iterDirs[0] as string;
    chosenBy = "only";
  } else if (iterDirs.length > 1) {
    throw new MegahubError("USAGE", `no ${TRACKER_FILE} and several iterations (${iterDirs.join(", ")}): pass --iteration`, {
      file: root.name,
    });
  } else {
    throw layoutError(`not a Megatron checkpoint: no ${TRACKER_FILE}, iter_* or mp_rank_* entries`, root.name);
  }
  const iteration = chosen === "release" ? "release" : Number(ITER_DIR.exec(chosen)?.[1]);
  return withRanks(subTree(root, chosen), iteration, chosenBy);
}

async function withRanks(tree: Tree, iteration: number | "release", chosenBy: MegatronLayout["chosenBy"]): Promise<MegatronLayout> {
  const found: RankFile[] = [];
  for (const name of (await tree.list("")) ?? []) {
    const m = RANK_DIR.exec(name);
    if (!m) continue;
    let file: string | undefined;
    for (const f of RANK_FILES) {
      if (await tree.isFile(`${name}/${f}`)) {
        file = `${name}/${f}`;
        break;
      }
    }
    if (!file) {
      throw layoutError(`rank directory has no ${RANK_FILES.join(" or ")}`, tree.display(name));
    }
    const distribOptim = await tree.isFile(`${name}/${DISTRIB_OPTIM_FILE}`);
    found.push({ tp: Number(m[1]), pp: m[2] === undefined ? 0 : Number(m[2]), ep: m[3] === undefined ? 0 : Number(m[3]), path: file, distribOptim });
  }
  if (found.length === 0) {
    // metadata.json is Megatron's torch_dist marker: say so rather than "no ranks" (convert/reshard/inspect read it).
    const dist = await tree.isFile("metadata.json");
    const inTar = /\.tar(#|$)/i.test(tree.name);
    const reason = inTar
      ? "a torch_dist checkpoint (metadata.json, .distcp) inside a .tar: extract it; torch_dist is read from its directory"
      : "a torch_dist checkpoint (metadata.json, .distcp): this command reads legacy mp_rank_* files only; convert, reshard and inspect read torch_dist";
    throw layoutError(dist ? reason : "no mp_rank_* directories", tree.name);
  }
  const suffixOf = (r: RankFile) => (/^mp_rank_\d{2}_\d{3}_\d{3}\//.test(r.path) ? 2 : /^mp_rank_\d{2}_\d{3}\//.test(r.path) ? 1 : 0);
  const suffixes = suffixOf(found[0] as RankFile);
  if (found.some((r) => suffixOf(r) !== suffixes)) {
    throw layoutError("mixes mp_rank_TT, mp_rank_TT_PPP and mp_rank_TT_PPP_EEE directories", tree.name);
  }
  const tp = Math.max(...found.map((r) => r.tp)) + 1;
  const pp = Math.max(...found.map((r) => r.pp)) + 1;
  const ep = Math.max(...found.map((r) => r.ep)) + 1;
  const missing: string[] = [];
  for (let p = 0; p < pp; p++) {
    for (let e = 0; e < ep; e++) {
      for (let t = 0; t < tp; t++) {
        if (!found.some((r) => r.tp === t && r.pp === p && r.ep === e)) {
          missing.push(rankDirName(t, suffixes >= 1 ? p : undefined, suffixes === 2 ? e : undefined));
        }
      }
    }
  }
  if (missing.length > 0) {
    throw layoutError(`incomplete checkpoint (TP ${tp}, ${suffixes === 0 ? "PP 1" : `${pp} stages`}${suffixes === 2 ? `, EP ${ep}` : ""}): missing ${missing.join(", ")}`, tree.name);
  }
  found.sort((a, b) => a.pp - b.pp || a.ep - b.ep || a.tp - b.tp);
  return { tree, iteration, tp, pp, ep, ranks: found, suffixes, chosenBy };
}
const pad = (n: number, w: number) => String(n).padStart(w, "0");

/**
 * Megatron's rank directory name (get_checkpoint_name): mp_rank_TT, then _PPP with pipeline parallelism, then _EEE
 * with expert parallelism.
 */
export function rankDirName(tp: number, pp?: number, ep?: number): string {
  return `mp_rank_${pad(tp, 2)}${pp === undefined ? "" : `_${pad(pp, 3)}`}${ep === undefined ? "" : `_${pad(ep, 3)}`}`;
}

/** The directory of an iteration: iter_NNNNNNN, or "release". */
export function iterationDirName(iteration: number | "release"): string {
  return iteration === "release" ? "release" : `iter_${pad(iteration, 7)}`;
}
