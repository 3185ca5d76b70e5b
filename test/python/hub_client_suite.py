# The official huggingface_hub client (with hf_xet) against `megahub hub serve`: every call a model repo uses.
# Run by test/hub-python.test.ts with HF_ENDPOINT set; argv: write token of "local", read-only token of "local",
# write token of "other", a work folder. Prints one JSON line per check: {"check": name, "ok": bool, "error": str}.
import hashlib, io, json, os, struct, sys, traceback

import httpx
import huggingface_hub
from huggingface_hub import (CommitOperationAdd, CommitOperationCopy, CommitOperationDelete, HfApi, HfFileSystem,
                             get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download)
from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError)

TOKEN, READ_TOKEN, OTHER_TOKEN, WORK = sys.argv[1:5]
ENDPOINT = os.environ["HF_ENDPOINT"]
api = HfApi(endpoint=ENDPOINT, token=TOKEN)
anon = HfApi(endpoint=ENDPOINT, token=False)
other = HfApi(endpoint=ENDPOINT, token=OTHER_TOKEN)
reader = HfApi(endpoint=ENDPOINT, token=READ_TOKEN)
REPO = "local/pyclient"
state = {}


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def git_sha1(b):
    return hashlib.sha1(b"blob %d\0" % len(b) + b).hexdigest()


def safetensors_bytes(values):
    header = json.dumps({"w": {"dtype": "F32", "shape": [len(values) // 4, 4], "data_offsets": [0, 4 * len(values)]},
                         "__metadata__": {"format": "pt"}}).encode()
    header += b" " * ((8 - len(header) % 8) % 8)
    return struct.pack("<Q", len(header)) + header + struct.pack(f"<{len(values)}f", *values)


def expect_status(fn, status):
    try:
        fn()
    except HfHubHTTPError as e:
        assert e.response.status_code == status, f"expected {status}, got {e.response.status_code}: {e}"
        return e
    raise AssertionError(f"expected HTTP {status}, the call succeeded")


def make_folder():
    d = os.path.join(WORK, "folder")
    os.makedirs(os.path.join(d, "weights"), exist_ok=True)
    files = {
        "README.md": b"---\nlicense: apache-2.0\nlibrary_name: transformers\ntags:\n- openba\n---\n# model\n",
        "config.json": json.dumps({"model_type": "t5", "architectures": ["T5Model"]}).encode(),
        "model.safetensors": safetensors_bytes([float(i) for i in range(8)]),
        # Smooth floats (byte-grouped LZ4 in xet), repetitive text (LZ4) and random bytes (stored) take all
        # three chunk encodings of the Xet upload path.
        "weights/smooth.safetensors": safetensors_bytes([i * 1e-3 for i in range(400_000)]),
        "weights/text.bin": b"\0" + b"megahub xet chunk " * 150_000,
        "weights/random.bin": os.urandom(3 * 1024 * 1024 + 7),
    }
    for p, b in files.items():
        with open(os.path.join(d, p), "wb") as f:
            f.write(b)
    state["files"] = files
    return d


CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def whoami():
    me = api.whoami()
    assert me["name"] == "local" and me["auth"]["accessToken"]["role"] == "write", me
    assert reader.whoami()["auth"]["accessToken"]["role"] == "read"
    expect_status(lambda: HfApi(endpoint=ENDPOINT, token="hf_notAToken0000").whoami(), 401)


@check
def create_repo():
    url = api.create_repo(REPO)
    assert str(url) == f"{ENDPOINT}/{REPO}", url
    expect_status(lambda: api.create_repo(REPO), 409)
    api.create_repo(REPO, exist_ok=True)
    api.create_repo("local/pyprivate", private=True)
    assert api.repo_exists(REPO) and not api.repo_exists("local/nothing-here")


@check
def upload_folder_through_xet():
    info = api.upload_folder(repo_id=REPO, folder_path=make_folder(), commit_message="first upload")
    state["first"] = info.oid
    files = set(api.list_repo_files(REPO))
    assert files == {".gitattributes", *state["files"]}, files


@check
def model_info_blobs_and_card_data():
    info = api.model_info(REPO, files_metadata=True)
    by = {s.rfilename: s for s in info.siblings}
    for p, b in state["files"].items():
        s = by[p]
        assert s.size == len(b), (p, s.size)
        if p.endswith((".safetensors", ".bin")):
            assert s.lfs is not None and s.lfs.sha256 == sha256(b) and s.lfs.size == len(b), (p, s.lfs)
        else:
            assert s.lfs is None and s.blob_id == git_sha1(b), (p, s.blob_id)
    assert info.card_data is not None and info.card_data.license == "apache-2.0", info.card_data
    assert info.library_name == "transformers" and "openba" in info.tags and info.sha == state["first"]
    assert api.model_info(REPO, revision=state["first"]).sha == state["first"]


@check
def validate_yaml_refuses_bad_card():
    bad = CommitOperationAdd("README.md", b"---\nlicense: [unclosed\n---\n")
    try:
        api.create_commit(REPO, [bad], commit_message="bad card")
    except ValueError as e:
        assert "Invalid metadata in README.md" in str(e), e
    else:
        raise AssertionError("a README.md with broken YAML was committed")


@check
def hf_hub_download_and_metadata_headers():
    for p, b in state["files"].items():
        local = hf_hub_download(REPO, p, cache_dir=os.path.join(WORK, "cache"))
        assert open(local, "rb").read() == b, p
    meta = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors"))
    assert meta.etag == sha256(state["files"]["model.safetensors"]) and meta.commit_hash == state["first"], meta
    assert meta.size == len(state["files"]["model.safetensors"])
    assert get_hf_file_metadata(hf_hub_url(REPO, "config.json")).etag == git_sha1(state["files"]["config.json"])
    r = httpx.head(hf_hub_url(REPO, "weights/random.bin"), headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["x-repo-commit"] == state["first"]
    assert r.headers["x-linked-size"] == str(len(state["files"]["weights/random.bin"]))
    assert r.headers["x-linked-etag"] == f'"{sha256(state["files"]["weights/random.bin"])}"'
    r = httpx.get(hf_hub_url(REPO, "missing.txt"))
    assert r.status_code == 404 and r.headers["x-error-code"] == "EntryNotFound" and "error" in r.json(), r.headers
    try:
        hf_hub_download(REPO, "missing.txt", cache_dir=os.path.join(WORK, "cache"))
    except EntryNotFoundError:
        pass
    else:
        raise AssertionError("no EntryNotFoundError")


@check
def upload_file_and_bytesio_lfs_fallback():
    api.upload_file(path_or_fileobj=b"hello\n", path_in_repo="notes/hello.txt", repo_id=REPO)
    # A BytesIO cannot go through Xet: the client falls back to the LFS batch API (multipart: parts of 1 MiB).
    blob = os.urandom(2 * 1024 * 1024 + 3)
    api.upload_file(path_or_fileobj=io.BytesIO(blob), path_in_repo="weights/buffered.bin", repo_id=REPO)
    assert open(hf_hub_download(REPO, "weights/buffered.bin", cache_dir=os.path.join(WORK, "c2")), "rb").read() == blob
    state["buffered"] = blob


@check
def create_commit_copies_and_deletes():
    ops = [
        CommitOperationCopy(src_path_in_repo="model.safetensors", path_in_repo="copies/model.safetensors"),
        CommitOperationCopy(src_path_in_repo="config.json", path_in_repo="copies/config.json"),
        CommitOperationDelete(path_in_repo="notes/hello.txt"),
        CommitOperationDelete(path_in_repo="weights/", is_folder=True),
    ]
    info = api.create_commit(REPO, ops, commit_message="copy and delete")
    files = set(api.list_repo_files(REPO))
    assert "copies/model.safetensors" in files and "copies/config.json" in files, files
    assert not any(f.startswith("weights/") for f in files) and "notes/hello.txt" not in files, files
    got = api.get_paths_info(REPO, ["copies/model.safetensors", "copies"], expand=True)
    assert got[0].lfs.sha256 == sha256(state["files"]["model.safetensors"]) and got[1].path == "copies", got
    state["second"] = info.oid
    expect_status(lambda: api.create_commit(REPO, [CommitOperationAdd("x.txt", b"x")], commit_message="stale",
                                            parent_commit=state["first"]), 412)


@check
def list_repo_tree_and_commits():
    tree = list(api.list_repo_tree(REPO, recursive=True, expand=True))
    assert {t.path for t in tree} >= {"copies", "copies/model.safetensors"}
    commits = api.list_repo_commits(REPO)
    titles = [c.title for c in commits]
    assert titles[0] == "copy and delete" and "first upload" in titles and commits[0].commit_id == state["second"], titles
    assert commits[0].authors == ["local"]


@check
def branches_tags_refs_and_revisions():
    api.create_branch(REPO, branch="dev", revision=state["first"])
    api.create_tag(REPO, tag="v1.0", revision=state["first"], tag_message="first")
    expect_status(lambda: api.create_tag(REPO, tag="v1.0"), 409)
    refs = api.list_repo_refs(REPO)
    assert {b.name for b in refs.branches} == {"main", "dev"} and [t.name for t in refs.tags] == ["v1.0"], refs
    assert [b.target_commit for b in refs.branches if b.name == "dev"] == [state["first"]]
    cache = os.path.join(WORK, "c3")
    for rev in ("dev", "v1.0", state["first"]):
        p = hf_hub_download(REPO, "weights/text.bin", revision=rev, cache_dir=cache)
        assert open(p, "rb").read() == state["files"]["weights/text.bin"], rev
    api.upload_file(path_or_fileobj=b"on dev\n", path_in_repo="dev.txt", repo_id=REPO, revision="dev")
    assert "dev.txt" in api.list_repo_files(REPO, revision="dev") and "dev.txt" not in api.list_repo_files(REPO)
    for bad in ("constructor", "__proto__", "toString", "no-such-branch", "a" * 40):
        try:
            api.model_info(REPO, revision=bad)
        except RevisionNotFoundError:
            pass
        else:
            raise AssertionError(f"revision {bad} was found")
    api.delete_tag(REPO, tag="v1.0")
    api.delete_branch(REPO, branch="dev")
    refs = api.list_repo_refs(REPO)
    assert [b.name for b in refs.branches] == ["main"] and refs.tags == []


@check
def snapshot_download_with_revision():
    d = snapshot_download(REPO, revision=state["first"], cache_dir=os.path.join(WORK, "c4"))
    for p, b in state["files"].items():
        assert open(os.path.join(d, p), "rb").read() == b, p
    d2 = snapshot_download(REPO, allow_patterns=["*.json"], local_dir=os.path.join(WORK, "snap"))
    got = sorted(os.path.relpath(os.path.join(r, f), d2) for r, _, fs in os.walk(d2) for f in fs if ".cache" not in r)
    assert got == ["config.json", "copies/config.json"], got


@check
def get_safetensors_metadata():
    meta = api.get_safetensors_metadata(REPO)
    assert meta.sharded is False and meta.parameter_count == {"F32": 8}, meta


@check
def hf_file_system():
    fs = HfFileSystem(endpoint=ENDPOINT, token=TOKEN)
    names = sorted(fs.ls(REPO, detail=False))
    assert f"{REPO}/model.safetensors" in names and f"{REPO}/copies" in names, names
    info = fs.info(f"{REPO}/model.safetensors")
    assert info["size"] == len(state["files"]["model.safetensors"]) and info["type"] == "file", info
    assert fs.glob(f"{REPO}/**/*.json") == [f"{REPO}/config.json", f"{REPO}/copies/config.json"]
    with fs.open(f"{REPO}/model.safetensors", "rb") as f:
        f.seek(8)
        assert f.read(4) == state["files"]["model.safetensors"][8:12]
    assert fs.cat(f"{REPO}/config.json") == state["files"]["config.json"]
    assert fs.exists(f"{REPO}/copies/config.json") and not fs.exists(f"{REPO}/nope.txt")
    with fs.open(f"{REPO}/fs-written.txt", "wb") as f:
        f.write(b"written through HfFileSystem\n")
    assert fs.cat(f"{REPO}/fs-written.txt") == b"written through HfFileSystem\n"


@check
def list_models_by_author_and_private_repos():
    mine = {m.id for m in api.list_models(author="local")}
    assert {REPO, "local/pyprivate"} <= mine, mine
    assert "local/pyprivate" not in {m.id for m in anon.list_models(author="local")}
    assert "local/pyprivate" not in {m.id for m in other.list_models(author="local")}
    full = [m for m in api.list_models(author="local", full=True, cardData=True) if m.id == REPO][0]
    assert full.card_data.license == "apache-2.0" and any(s.rfilename == "config.json" for s in full.siblings)
    for who in (anon, other):
        try:
            who.model_info("local/pyprivate")
        except RepositoryNotFoundError:
            pass
        else:
            raise AssertionError("a private repo was visible")
    assert api.model_info("local/pyprivate").private is True


@check
def tokens_read_vs_write_and_namespaces():
    expect_status(lambda: reader.create_repo("local/by-reader"), 403)
    expect_status(lambda: reader.upload_file(path_or_fileobj=b"x", path_in_repo="r.txt", repo_id=REPO), 403)
    assert reader.model_info(REPO).id == REPO
    expect_status(lambda: other.upload_file(path_or_fileobj=b"x", path_in_repo="o.txt", repo_id=REPO), 403)
    expect_status(lambda: other.create_repo("local/not-yours"), 403)
    other.create_repo("own-repo")  # no namespace: the token's user
    other.upload_file(path_or_fileobj=b"mine\n", path_in_repo="mine.txt", repo_id="other/own-repo")
    assert "mine.txt" in anon.list_repo_files("other/own-repo")
    expect_status(lambda: api.delete_repo("other/own-repo"), 403)


@check
def visibility_settings_and_deletes():
    api.update_repo_settings(REPO, private=True)
    assert not anon.repo_exists(REPO) and api.model_info(REPO).private is True
    api.update_repo_settings(REPO, private=False)
    assert anon.repo_exists(REPO)
    api.delete_file("copies/config.json", repo_id=REPO)
    api.delete_folder("copies", repo_id=REPO)
    assert not any(f.startswith("copies") for f in api.list_repo_files(REPO))
    api.delete_repo("local/pyprivate")
    assert not api.repo_exists("local/pyprivate")
    expect_status(lambda: api.delete_repo("local/pyprivate"), 404)


for fn in CHECKS:
    try:
        fn()
        print(json.dumps({"check": fn.__name__, "ok": True}), flush=True)
    except Exception as e:  # report every failure, then go on
        tb = traceback.format_exc().strip().splitlines()[-6:]
        print(json.dumps({"check": fn.__name__, "ok": False, "error": f"{type(e).__name__}: {e} | {' / '.join(tb)}"}), flush=True)
print(json.dumps({"versions": {"huggingface_hub": huggingface_hub.__version__}}), flush=True)
