#!/usr/bin/python3
"""check_fixtures.py - regenerate every fixture into a temp dir and compare with the committed ones.

Run:   /usr/bin/python3 scripts/check_fixtures.py [--fixtures fixtures] [--keep]
       exit status 0 = everything matches, 1 = a mismatch (listed in the report), 2 = the generator failed.

Why:   fixtures/ holds generated binaries; CI must be able to prove they are what scripts/make_fixtures.py makes.
       torch.save zip files are compared by their LOADED contents (tensors exactly, incl. dtype/shape/stride/
       storage_offset; args, optimizer and RNG state by value), not by bytes, because byte equality can break
       across torch versions (the legacy stream format even embeds memory addresses as storage keys).  Reference
       logits may differ by at most 1e-6 (other CPUs); all weights must be bit-identical.  The tokenizer is retrained
       and must give the same spm_encode ids for fixtures/corpus/heldout.txt.  Hostile pickles are NEVER loaded:
       their zip records are compared byte by byte.  The corpus itself is re-extracted only when manpages-zh is
       installed and MEGAHUB_CHECK_CORPUS=1 (scripts/make_corpus.sh; its output follows the Debian manpages-zh version);
       otherwise that step is reported as skipped.  fixtures/gpt/tokenizer (the
       demo's HF tokenizer, scripts/make_gpt_tokenizer.py) needs the reference venv's `tokenizers`, so it is an input
       that make_fixtures.py copies; it is rebuilt and compared only when the venv exists.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fixturelib as F  # noqa: E402

LOGIT_TOL = 1e-6


def load_manifest(root):
    with open(os.path.join(root, "MANIFEST.json"), encoding="utf-8") as f:
        return {e["path"]: e for e in json.load(f)["files"]}


def json_close(a, b, tol=1e-5):
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tol
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(json_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(json_close(x, y, tol) for x, y in zip(a, b))
    return a == b


def zip_records(path):
    with zipfile.ZipFile(path) as z:
        return {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}


def compare(rel, old, new):
    """Returns None when equivalent, else a short reason."""
    import torch
    from make_fixtures import deep_equal

    with open(old, "rb") as f:
        a = f.read()
    with open(new, "rb") as f:
        b = f.read()
    if a == b:
        return None
    ext = os.path.splitext(rel)[1]
    try:
        if rel.startswith("hostile/"):
            return None if zip_records(old) == zip_records(new) else "zip records differ"
        if ext == ".pt":
            deep_equal(F.torch_load(old), F.torch_load(new), rel, strict_views=not rel.endswith("legacy-tar.pt"))
            return None
        if ext == ".safetensors":
            ta, ha = F.read_safetensors(old, with_header=True)
            tb, hb = F.read_safetensors(new, with_header=True)
            if list(ta) != list(tb):
                return "tensor names differ"
            if ha.get("__metadata__") != hb.get("__metadata__"):
                return "metadata differs"
            for k in ta:
                x, y = ta[k], tb[k]
                if x.dtype != y.dtype or x.shape != y.shape:
                    return f"{k}: dtype/shape differ"
                if rel.startswith(("reference/", "gpt/reference/", "moe/reference/")) and k == "logits":
                    d = float((x - y).abs().max())
                    if d > LOGIT_TOL:
                        return f"logits max abs diff {d:.3g} > {LOGIT_TOL}"
                elif not torch.equal(x, y):
                    return f"{k}: values differ"
            return None
        if ext == ".json":
            return None if json_close(json.loads(a), json.loads(b)) else "JSON differs"
        if ext in (".txt", ".md", ".vocab"):
            la, lb = a.decode("utf-8").splitlines(), b.decode("utf-8").splitlines()
            for i, (x, y) in enumerate(zip(la, lb)):
                if x != y:
                    return f"line {i + 1} differs"
            return f"line count {len(la)} vs {len(lb)}"
        return "bytes differ"
    except AssertionError as e:
        return f"content differs: {str(e)[:200]}"


def main():
    ap = argparse.ArgumentParser(description="regenerate fixtures and compare with the committed ones")
    ap.add_argument("--fixtures", default=os.path.join(os.path.dirname(HERE), "fixtures"))
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    a = ap.parse_args()
    committed = os.path.abspath(a.fixtures)
    tmp = tempfile.mkdtemp(prefix="megahub-fixtures-")
    problems, notes = [], []
    try:
        r = subprocess.run([sys.executable, os.path.join(HERE, "make_fixtures.py"), "--out", tmp,
                            "--corpus", os.path.join(committed, "corpus")], capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout[-3000:], r.stderr[-3000:])
            print("FAIL: make_fixtures.py failed")
            return 2
        old_m, new_m = load_manifest(committed), load_manifest(tmp)
        # integrity of the committed tree itself
        for rel, e in old_m.items():
            p = os.path.join(committed, rel)
            if not os.path.exists(p):
                problems.append(f"{rel}: listed in MANIFEST.json but missing")
            elif F.file_sha256(p) != e["sha256"]:
                problems.append(f"{rel}: sha256 differs from MANIFEST.json (edited after generation?)")
        for rel in sorted(set(old_m) - set(new_m)):
            problems.append(f"{rel}: committed but no longer generated")
        for rel in sorted(set(new_m) - set(old_m)):
            problems.append(f"{rel}: generated but not committed")
        identical = equivalent = 0
        for rel in sorted(set(old_m) & set(new_m)):
            old, new = os.path.join(committed, rel), os.path.join(tmp, rel)
            if not os.path.exists(old):
                continue
            if F.file_sha256(old) == new_m[rel]["sha256"]:
                identical += 1
                continue
            why = compare(rel, old, new)
            if why is None:
                equivalent += 1
                notes.append(f"{rel}: bytes differ, contents equal")
            else:
                problems.append(f"{rel}: {why}")
        # tokenizer: the committed model must give the committed ids for the held-out text
        ids = subprocess.run(["spm_encode", "--model", os.path.join(committed, "tokenizer", "spiece.model"),
                              "--output_format=id", "--input", os.path.join(committed, "corpus", "heldout.txt")],
                             check=True, capture_output=True).stdout
        with open(os.path.join(committed, "tokenizer", "heldout.ids.txt"), "rb") as f:
            if f.read() != ids:
                problems.append("tokenizer/heldout.ids.txt: spm_encode of heldout.txt with the committed model differs")
        # the GPT demo tokenizer is an input made with the reference venv (Debian has no `tokenizers`): rebuild it
        # when the venv exists and compare bytes; otherwise say so
        venv_py = os.path.join(os.environ.get("MEGAHUB_REF_VENV") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "megahub", "venv-ref"), "bin", "python")
        if os.path.exists(venv_py):
            tdir = os.path.join(tmp, "gpt-tokenizer-check")
            r = subprocess.run([venv_py, os.path.join(HERE, "make_gpt_tokenizer.py"), "--out", tdir,
                                "--spm", os.path.join(committed, "tokenizer", "spiece.model"),
                                "--heldout", os.path.join(committed, "corpus", "heldout.txt")],
                               capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"gpt/tokenizer: make_gpt_tokenizer.py failed: {r.stderr[-300:]}")
            else:
                for fn in sorted(os.listdir(tdir)):
                    if F.file_sha256(os.path.join(tdir, fn)) != F.file_sha256(os.path.join(committed, "gpt",
                                                                                         "tokenizer", fn)):
                        problems.append(f"gpt/tokenizer/{fn}: rebuilt by make_gpt_tokenizer.py, bytes differ")
        else:
            notes.append("gpt/tokenizer rebuild skipped (no reference venv; scripts/make_ref_venv.sh builds it)")
        # corpus re-extraction (optional)
        # Opt-in: the extraction depends on the Debian manpages-zh version installed, not on megahub.
        if os.environ.get("MEGAHUB_CHECK_CORPUS") == "1" and os.path.isdir("/usr/share/man/zh_CN") and shutil.which("groff"):
            cdir = os.path.join(tmp, "corpus-check")
            subprocess.run(["sh", os.path.join(HERE, "make_corpus.sh"), cdir], check=True, capture_output=True)
            for fn in ("train.txt", "heldout.txt"):
                why = compare(f"corpus/{fn}", os.path.join(committed, "corpus", fn), os.path.join(cdir, fn))
                if why:
                    problems.append(f"corpus/{fn} re-extracted from Debian files: {why}")
        else:
            notes.append("corpus re-extraction skipped (set MEGAHUB_CHECK_CORPUS=1 with manpages-zh and groff installed)")
        print(f"fixtures: {len(old_m)} files; {identical} byte-identical, {equivalent} equal by content, "
              f"{len(problems)} problem(s)")
        for n in notes:
            print("  note:", n)
        for p in problems:
            print("  FAIL:", p)
        print("OK" if not problems else "MISMATCH")
        return 0 if not problems else 1
    finally:
        if a.keep:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
