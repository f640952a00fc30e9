"""Finding a collection's files, quarantining odd entries, manifests and shards (wormflow.inventory)."""

from __future__ import annotations

import builtins
import collections
import errno
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from oddfiles import make_nested, remove_nested

from wormflow import atomic, inventory, workflow
from wormflow.inventory import Entry, Manifest, build_manifest, scan, sha256_file, stat_fingerprint

BAD_UTF8_NAME = b"bad\xff.png"
BAD_UTF8_RELPATH = os.fsdecode(BAD_UTF8_NAME)  # "bad\udcff.png" (surrogate escape)

NORMAL = {
    "a.png": b"alpha image bytes",
    "b.jpg": b"bravo image bytes",
    "wörm 🪱.png": b"unicode name is fine",
    "sub/c.png": b"charlie image bytes",
    "sub/deeper/d.tif": b"delta image bytes",
}
QUARANTINED = {
    ".hidden.png": "hidden file",
    ".hiddendir/e.png": "hidden file",
    "sub/.f.png": "hidden file",
    "link_passwd.png": "symbolic link",
    "link_dir": "symbolic link",
    "pipe.png": "not a regular file",
    "empty.png": "empty file",
    BAD_UTF8_RELPATH: "not valid UTF-8",
}


def write(root: Path, relpath: str, data: bytes) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """Change a file's bytes (same size) and force its mtime back; wait until its ctime has moved."""
    old = path.stat()
    assert len(data) == old.st_size
    deadline = time.monotonic() + 2
    while True:
        path.write_bytes(data)
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
        if path.stat().st_ctime_ns != old.st_ctime_ns or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    new = path.stat()
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "batch"
    for relpath, data in NORMAL.items():
        write(root, relpath, data)
    write(root, ".hidden.png", b"hidden")
    write(root, ".hiddendir/e.png", b"inside a hidden directory")
    write(root, "sub/.f.png", b"hidden in a sub-directory")
    write(root, "empty.png", b"")
    os.symlink("/etc/passwd", root / "link_passwd.png")
    os.symlink("sub", root / "link_dir")  # following it would list sub/ twice
    os.mkfifo(root / "pipe.png")  # opening it would block
    fd = os.open(os.fsencode(root) + b"/" + BAD_UTF8_NAME, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"non-utf8 name")
    os.close(fd)
    return root


@pytest.fixture
def hash_calls(monkeypatch) -> list[str]:
    """Count ``sha256_file`` calls made by ``build_manifest``."""
    calls = []

    def counting(path, **kwargs):
        calls.append(Path(path).name)
        return sha256_file(path, **kwargs)

    monkeypatch.setattr(inventory, "sha256_file", counting)
    return calls


@pytest.fixture
def trust_fresh_files(monkeypatch):
    """The test files were written moments ago; let their cached hashes count as trustworthy.

    (With the default margin they are racily clean and re-hashed: see ``test_recently_changed_files_are_rehashed``.)
    """
    monkeypatch.setattr(inventory, "RACY_MARGIN_NS", 0)


def by_relpath(entries: list[Entry]) -> dict[str, Entry]:
    return {e.relpath: e for e in entries}


# --- scan -------------------------------------------------------------------------------------------


def test_scan_lists_every_entry_exactly_once(tree):
    relpaths = [e.relpath for e in scan(tree)]
    assert collections.Counter(relpaths) == collections.Counter([*NORMAL, *QUARANTINED])


def test_scan_lists_normal_files_as_candidates(tree):
    entries = by_relpath(scan(tree))
    for relpath, data in NORMAL.items():
        assert entries[relpath].ok, relpath
        assert entries[relpath].size == len(data)
        assert entries[relpath].label == -1


@pytest.mark.parametrize("relpath", sorted(QUARANTINED))
def test_scan_quarantines_odd_entries_with_reason(tree, relpath):
    entry = by_relpath(scan(tree))[relpath]
    assert not entry.ok
    assert QUARANTINED[relpath] in entry.quarantine


def test_scan_never_follows_symlinks(tree):
    entries = by_relpath(scan(tree))
    assert entries["link_passwd.png"].size == len("/etc/passwd")  # the link itself, not its target
    assert not any(relpath.startswith("link_dir/") for relpath in entries)


def test_scan_opens_no_file(tree, monkeypatch):
    """Only directories are opened (to list them through file descriptors); no file is."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"file opened: {args[0]!r}")

    real_open = os.open

    def open_directories_only(path, flags, *args, **kwargs):
        if not flags & os.O_DIRECTORY:
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(io, "open", refuse)
    monkeypatch.setattr(os, "open", open_directories_only)
    assert len(scan(tree)) == len(NORMAL) + len(QUARANTINED)
    assert stat_fingerprint(tree)


def test_scan_is_sorted_and_deterministic(tree):
    first = [e.relpath for e in scan(tree)]
    assert first == [e.relpath for e in scan(tree)]
    assert first.index("sub/c.png") < first.index("sub/deeper/d.tif")


def test_scan_quarantines_an_unreadable_directory(tree, monkeypatch):
    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if path == "deeper":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(inventory.os, "open", open_)
    entries = by_relpath(scan(tree))
    assert "unreadable directory" in entries["sub/deeper"].quarantine
    assert "sub/deeper/d.tif" not in entries
    assert entries["sub/c.png"].ok


def test_scan_of_missing_collection_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan(tmp_path / "no-such-batch")


def test_scan_survives_deeply_nested_directories(tmp_path):
    """~1,100 nested directories made the recursive walk raise RecursionError and abort the whole night."""
    root = tmp_path / "batch"
    write(root, "top.png", b"top")
    names = ["d"] * 1100
    relpath = make_nested(root, names, "deep.png", b"deep image bytes")
    try:
        entries = by_relpath(scan(root))
        assert entries[relpath].ok and entries[relpath].size == len(b"deep image bytes")
        assert set(entries) == {"top.png", relpath}
        m = build_manifest(root, labeled=False, shard_size=10)
        assert by_relpath(m.entries)[relpath].sha256 == hashlib.sha256(b"deep image bytes").hexdigest()
    finally:
        remove_nested(root, names)


def test_paths_longer_than_path_max_are_listed_and_hashed(tmp_path):
    root = tmp_path / "batch"
    root.mkdir()
    names = [f"{i:02d}" + "x" * 240 for i in range(20)]  # 20 x 243 bytes: well over PATH_MAX (4096)
    relpath = make_nested(root, names, "far.png", b"far away")
    try:
        assert len(os.fsencode(root / relpath)) > 4096
        entries = by_relpath(scan(root))
        assert list(entries) == [relpath]
        assert entries[relpath].ok and entries[relpath].size == len(b"far away")
        m = build_manifest(root, labeled=False, shard_size=10)
        assert m.entries[0].sha256 == hashlib.sha256(b"far away").hexdigest()
        assert json.loads(m.to_json())["n_files"] == 1
    finally:
        remove_nested(root, names)


def test_only_a_vanished_entry_is_skipped_other_stat_errors_are_quarantined(tree, monkeypatch):
    real_stat = os.stat

    def stat_(path, *args, **kwargs):
        if path == "a.png":
            raise OSError(errno.EIO, "Input/output error", path)
        if path == "b.jpg":
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)  # deleted while scanning
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(inventory.os, "stat", stat_)
    entries = by_relpath(scan(tree))
    assert entries["a.png"].quarantine == "cannot stat: Input/output error"
    assert "b.jpg" not in entries
    assert entries["sub/c.png"].ok


def regular_user_prefix() -> list[str]:
    """Run a command with file permissions applied as for any user who is not root (see tests/test_workflow.py)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to check permissions as root"
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


@pytest.mark.timeout(60)
def test_permission_errors_are_quarantined_with_their_reason_not_dropped(tmp_path):
    """A file in a readable but not searchable directory used to drop out silently (n_files shrank)."""
    root = tmp_path / "batch"
    write(root, "ok.png", b"fine")
    write(root, "unsearchable/inside.png", b"listed, but cannot be stat'ed")
    write(root, "unlistable/unseen.png", b"cannot even be listed")
    batches = tmp_path / "batches"
    (batches / "night-1").mkdir(parents=True)
    (batches / "locked").mkdir()
    os.chmod(root / "unsearchable", 0o600)  # read, no search
    os.chmod(root / "unlistable", 0o300)  # search, no read
    os.chmod(batches / "locked", 0o300)
    code = (
        "import json, sys\n"
        "from wormflow.inventory import scan\n"
        "from wormflow.workflow import discover_batches\n"
        "print(json.dumps({'scan': {e.relpath: e.quarantine for e in scan(sys.argv[1])},"
        " 'batches': discover_batches(sys.argv[2])}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(inventory.__file__).resolve().parents[1])}
    try:
        proc = subprocess.run(
            [*regular_user_prefix(), sys.executable, "-c", code, str(root), str(batches)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    finally:
        for path in (root / "unsearchable", root / "unlistable", batches / "locked"):
            os.chmod(path, 0o755)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["scan"] == {
        "ok.png": "",
        "unsearchable/inside.png": "cannot stat: Permission denied",
        "unlistable": "unreadable directory: Permission denied",
    }
    assert result["batches"] == [["night-1"], [["locked", "cannot list directory: Permission denied"]]]


def _swap_after_scan(monkeypatch, swap) -> None:
    """Make ``build_manifest`` see the tree as scanned, then ``swap()`` it before the files are hashed."""
    real_scan = inventory.scan

    def scan_then_swap(*args, **kwargs):
        entries = real_scan(*args, **kwargs)
        swap()
        return entries

    monkeypatch.setattr(inventory, "scan", scan_then_swap)


def test_hashing_never_follows_a_symlink_swapped_in_for_a_file(tree, monkeypatch):
    def swap():
        (tree / "a.png").unlink()
        os.symlink("/etc/passwd", tree / "a.png")

    _swap_after_scan(monkeypatch, swap)
    entry = by_relpath(build_manifest(tree, labeled=False, shard_size=2).entries)["a.png"]
    assert entry.quarantine == "cannot read file: symbolic link (not followed): a.png"
    assert entry.sha256 == ""


def test_hashing_never_follows_a_symlink_swapped_in_for_a_directory(tree, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere, "c.png", b"outside the collection")

    def swap():
        (tree / "sub").rename(tmp_path / "sub-moved")
        os.symlink(elsewhere, tree / "sub")

    _swap_after_scan(monkeypatch, swap)
    entries = by_relpath(build_manifest(tree, labeled=False, shard_size=2).entries)
    assert entries["sub/c.png"].quarantine == "cannot read file: symbolic link (not followed): sub"
    assert entries["sub/c.png"].sha256 == ""


@pytest.mark.timeout(20)
def test_hashing_refuses_a_fifo_swapped_in_without_blocking(tree, monkeypatch):
    def swap():
        (tree / "a.png").unlink()
        os.mkfifo(tree / "a.png")

    _swap_after_scan(monkeypatch, swap)
    entry = by_relpath(build_manifest(tree, labeled=False, shard_size=2).entries)["a.png"]
    assert entry.quarantine == "cannot read file: not a regular file (FIFO)"


def test_sha256_file_below_a_root_matches_hashlib_and_refuses_unsafe_paths(tree):
    assert sha256_file("sub/deeper/d.tif", root=tree) == hashlib.sha256(NORMAL["sub/deeper/d.tif"]).hexdigest()
    for bad in ("../batch/a.png", "/etc/passwd", "sub/../a.png", "sub//c.png", "./a.png", ""):
        with pytest.raises(ValueError, match="not a safe relative path"):
            sha256_file(bad, root=tree)


def test_newest_change_is_exposed_for_a_settle_time(tree):
    entries = scan(tree)
    newest = inventory.newest_change_ns(entries)
    assert newest == max(max(e.mtime_ns, e.ctime_ns) for e in entries)
    old = time.time_ns() - 3600 * 10**9
    for relpath in NORMAL:  # rsync -a / cp -p keep old mtimes; the ctime still shows the arrival
        os.utime(tree / relpath, ns=(old, old))
    m = build_manifest(tree, labeled=False, shard_size=2)
    assert m.newest_change_ns == inventory.newest_change_ns(m.entries) >= time.time_ns() - 60 * 10**9
    assert json.loads(m.to_json())["newest_change_ns"] == m.newest_change_ns
    assert inventory.newest_change_ns([]) == 0


# --- stat fingerprint -------------------------------------------------------------------------------


def test_fingerprint_is_stable_without_changes(tree):
    first = stat_fingerprint(tree)
    (tree / "a.png").read_bytes()  # reading is not a change
    assert stat_fingerprint(tree) == first


def test_fingerprint_changes_when_a_file_is_touched(tree):
    before = stat_fingerprint(tree)
    st = (tree / "sub/c.png").stat()
    os.utime(tree / "sub/c.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert stat_fingerprint(tree) != before


def test_fingerprint_changes_when_a_file_is_added(tree):
    before = stat_fingerprint(tree)
    write(tree, "sub/new.png", b"new")
    assert stat_fingerprint(tree) != before


def test_fingerprint_changes_when_a_file_is_removed(tree):
    before = stat_fingerprint(tree)
    (tree / "b.jpg").unlink()
    assert stat_fingerprint(tree) != before


def test_fingerprint_changes_when_content_changes_under_a_forged_mtime(tree):
    before = stat_fingerprint(tree)
    rewrite_keeping_size_and_mtime(tree / "a.png", b"ALPHA IMAGE BYTES")
    assert stat_fingerprint(tree) != before


# --- manifest and hashes ----------------------------------------------------------------------------


def test_manifest_hashes_candidate_content(tree):
    m = build_manifest(tree, labeled=False, shard_size=2)
    entries = by_relpath(m.entries)
    for relpath, data in NORMAL.items():
        assert entries[relpath].sha256 == hashlib.sha256(data).hexdigest()
    for relpath in QUARANTINED:
        assert entries[relpath].sha256 == ""
    assert sorted(e.relpath for e in m.candidates) == sorted(NORMAL)


def test_manifest_reuses_hashes_of_unchanged_files(tree, hash_calls, trust_fresh_files):
    first = build_manifest(tree, labeled=False, shard_size=2)
    assert sorted(hash_calls) == sorted(Path(r).name for r in NORMAL)
    hash_calls.clear()
    second = build_manifest(tree, labeled=False, shard_size=2, previous=first)
    assert hash_calls == []
    assert [e.sha256 for e in second.entries] == [e.sha256 for e in first.entries]


def test_manifest_rehashes_a_touched_file_only(tree, hash_calls, trust_fresh_files):
    first = build_manifest(tree, labeled=False, shard_size=2)
    st = (tree / "b.jpg").stat()
    os.utime(tree / "b.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    hash_calls.clear()
    second = build_manifest(tree, labeled=False, shard_size=2, previous=first)
    assert hash_calls == ["b.jpg"]
    assert second.content_digest() == first.content_digest()


def test_manifest_detects_content_change_with_forged_mtime(tree, hash_calls, trust_fresh_files):
    first = build_manifest(tree, labeled=False, shard_size=2)
    rewrite_keeping_size_and_mtime(tree / "a.png", b"ALPHA IMAGE BYTES")
    hash_calls.clear()
    second = build_manifest(tree, labeled=False, shard_size=2, previous=first)
    assert hash_calls == ["a.png"]
    assert by_relpath(second.entries)["a.png"].sha256 == hashlib.sha256(b"ALPHA IMAGE BYTES").hexdigest()


def test_recently_changed_files_are_rehashed(tree, hash_calls):
    """A file changed within RACY_MARGIN_NS of the previous scan may keep its stat data; its hash is not trusted."""
    first = build_manifest(tree, labeled=False, shard_size=2)
    hash_calls.clear()
    build_manifest(tree, labeled=False, shard_size=2, previous=first)
    assert sorted(hash_calls) == sorted(Path(r).name for r in NORMAL)


def test_stale_hash_with_identical_stat_is_not_reused_from_a_racy_scan(tree):
    first = build_manifest(tree, labeled=False, shard_size=2)
    path = tree / "a.png"
    st = path.stat()
    path.write_bytes(b"ALPHA IMAGE BYTES")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    # Simulate a coarse-timestamp file system where the rewrite left ctime unchanged.
    stale = by_relpath(first.entries)["a.png"]
    stale.ctime_ns = path.stat().st_ctime_ns
    second = build_manifest(tree, labeled=False, shard_size=2, previous=first)
    assert by_relpath(second.entries)["a.png"].sha256 == hashlib.sha256(b"ALPHA IMAGE BYTES").hexdigest()


def test_manifest_without_scan_time_rehashes_everything(tree, hash_calls, trust_fresh_files):
    first = build_manifest(tree, labeled=False, shard_size=2)
    legacy = json.loads(first.to_json())
    del legacy["scanned_ns"]
    hash_calls.clear()
    build_manifest(tree, labeled=False, shard_size=2, previous=Manifest.from_json(json.dumps(legacy)))
    assert len(hash_calls) == len(NORMAL)


def test_manifest_quarantines_a_file_that_cannot_be_read(tree, monkeypatch):
    def vanished(path, **kwargs):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(inventory, "sha256_file", vanished)
    m = build_manifest(tree, labeled=False, shard_size=2)
    assert "cannot read file" in by_relpath(m.entries)["a.png"].quarantine
    assert m.candidates == []


def test_manifest_rejects_a_shard_size_below_one(tree):
    with pytest.raises(ValueError, match="shard_size"):
        build_manifest(tree, labeled=False, shard_size=0)


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * inventory.HASH_CHUNK // 2)
    path = write(tmp_path, "big.bin", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


# --- JSON round trip --------------------------------------------------------------------------------


def test_manifest_json_round_trip(tree, tmp_path):
    m = build_manifest(tree, labeled=False, shard_size=2)
    text = m.to_json()
    assert text.isascii()
    assert Manifest.from_json(text) == m
    m.write(tmp_path / "out" / "manifest.json")
    again = Manifest.read(tmp_path / "out" / "manifest.json")
    assert again == m
    assert BAD_UTF8_RELPATH in {e.relpath for e in again.entries}


def test_manifest_json_summary_fields(tree):
    m = build_manifest(tree, labeled=False, shard_size=2)
    data = json.loads(m.to_json())
    assert data["n_files"] == len(NORMAL) + len(QUARANTINED)
    assert data["n_quarantined"] == len(QUARANTINED)
    assert data["n_shards"] == 3
    assert data["shard_digests"] == [m.shard_digest(i) for i in range(3)]
    assert data["data_digest"] == m.data_digest()


def test_data_digest_ignores_the_shard_size_but_not_the_content(tree):
    """Training depends on the data digest: a site's other shard size must not retrain the models."""
    by_size = {k: build_manifest(tree, labeled=False, shard_size=k) for k in (1, 2, 64)}
    assert len({m.data_digest() for m in by_size.values()}) == 1
    assert len({tuple(m.shard_digest(i) for i in range(m.n_shards)) for m in by_size.values()}) == 3
    (tree / "a.png").write_bytes((tree / "a.png").read_bytes() + b"\0")
    assert build_manifest(tree, labeled=False, shard_size=2).data_digest() != by_size[2].data_digest()


def test_manifest_with_unknown_version_is_refused(tree):
    data = json.loads(build_manifest(tree, labeled=False, shard_size=2).to_json())
    data["version"] = 999
    with pytest.raises(ValueError, match="unsupported manifest version"):
        Manifest.from_json(json.dumps(data))


# --- shards -----------------------------------------------------------------------------------------


def test_shards_partition_the_candidates_in_order(tree):
    m = build_manifest(tree, labeled=False, shard_size=2)
    assert m.n_shards == 3  # 5 candidates
    shards = [m.shard(i) for i in range(m.n_shards)]
    assert [len(s) for s in shards] == [2, 2, 1]
    assert [e for s in shards for e in s] == m.candidates
    assert m.shard(3) == []


@pytest.mark.parametrize("n_files, shard_size, n_shards", [(0, 4, 0), (1, 4, 1), (4, 4, 1), (5, 4, 2), (8, 4, 2), (9, 1, 9)])
def test_n_shards_rounds_up(tmp_path, n_files, shard_size, n_shards):
    tmp_path.joinpath("c").mkdir()
    for i in range(n_files):
        write(tmp_path / "c", f"{i:02d}.png", b"x")
    assert build_manifest(tmp_path / "c", labeled=False, shard_size=shard_size).n_shards == n_shards


def test_shard_digests_are_stable_when_nothing_changes(tree):
    first = build_manifest(tree, labeled=False, shard_size=2)
    second = build_manifest(tree, labeled=False, shard_size=2, previous=first)
    assert [first.shard_digest(i) for i in range(3)] == [second.shard_digest(i) for i in range(3)]


def test_shard_digests_ignore_a_touch(tree):
    first = build_manifest(tree, labeled=False, shard_size=2)
    st = (tree / "a.png").stat()
    os.utime(tree / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    second = build_manifest(tree, labeled=False, shard_size=2, previous=first)
    assert [first.shard_digest(i) for i in range(3)] == [second.shard_digest(i) for i in range(3)]


def test_content_change_changes_only_its_shard_digest(tree):
    first = build_manifest(tree, labeled=False, shard_size=2)
    changed = first.shard(1)[0].relpath
    path = tree / changed
    rewrite_keeping_size_and_mtime(path, path.read_bytes().upper())
    second = build_manifest(tree, labeled=False, shard_size=2, previous=first)
    changed_shards = [i for i in range(3) if first.shard_digest(i) != second.shard_digest(i)]
    assert changed_shards == [1]
    assert first.content_digest() != second.content_digest()


# --- labeled splits ---------------------------------------------------------------------------------


@pytest.fixture
def split(tmp_path) -> Path:
    root = tmp_path / "train"
    write(root, "no_wormed/n1.png", b"n1")
    write(root, "no_wormed/n2.png", b"n2")
    write(root, "wormed/w1.png", b"w1")
    write(root, "wormed/nested/w2.png", b"w2")
    write(root, "wormed/.w3.png", b"hidden")
    write(root, "stray.png", b"stray")
    write(root, "other/x.png", b"x")
    write(root, "wormed_extra/y.png", b"y")
    return root


def test_labeled_files_get_their_class_label(split):
    entries = by_relpath(scan(split, labeled=True))
    assert {r: (e.label, e.ok) for r, e in entries.items() if e.ok} == {
        "no_wormed/n1.png": (0, True),
        "no_wormed/n2.png": (0, True),
        "wormed/w1.png": (1, True),
        "wormed/nested/w2.png": (1, True),
    }


@pytest.mark.parametrize("relpath", ["stray.png", "other/x.png", "wormed_extra/y.png"])
def test_labeled_files_outside_class_directories_are_quarantined(split, relpath):
    entry = by_relpath(scan(split, labeled=True))[relpath]
    assert "outside a class directory" in entry.quarantine
    assert entry.label == -1


def test_labeled_hidden_file_keeps_hidden_reason(split):
    assert "hidden file" in by_relpath(scan(split, labeled=True))["wormed/.w3.png"].quarantine


def test_labels_enter_the_manifest_and_its_digests(split):
    m = build_manifest(split, labeled=True, shard_size=10)
    assert m.labeled
    assert [(e.relpath, e.label) for e in m.candidates] == [
        ("no_wormed/n1.png", 0),
        ("no_wormed/n2.png", 0),
        ("wormed/nested/w2.png", 1),
        ("wormed/w1.png", 1),
    ]
    digest = m.shard_digest(0)
    m.candidates[0].label = 1
    assert m.shard_digest(0) != digest


# --- the batches root (workflow.discover_batches) and displayed names --------------------------------


def test_discover_batches_reports_everything_that_is_not_a_usable_batch(tmp_path):
    root = tmp_path / "batches"
    for name in ("2024-01-01", "night_2", ".hidden", "bad name"):
        (root / name).mkdir(parents=True)
    os.symlink("2024-01-01", root / "linked")
    os.symlink("/etc", root / "outside")
    (root / "loose.png").write_bytes(b"not a directory")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    os.mkfifo(root / "pipe")
    os.mkdir(os.fsencode(root) + b"/bad\xff")
    batches, rejected = workflow.discover_batches(root)
    assert batches == ["2024-01-01", "night_2"]
    assert all(isinstance(r, tuple) and len(r) == 2 for r in rejected)
    reasons = dict(rejected)
    assert [name for name, _ in rejected] == sorted(reasons)  # sorted by name, each entry once
    assert reasons == {
        ".DS_Store": "a file, not a batch directory",
        ".hidden": "hidden entry (name starts with '.')",
        "bad name": f"name does not match {workflow.BATCH_NAME.pattern} (batch names become file paths and wildcards)",
        "bad\\xff": "name is not valid UTF-8",
        "linked": "symbolic link, not followed",
        "loose.png": "a file, not a batch directory",
        "outside": "symbolic link, not followed",
        "pipe": "a FIFO, not a batch directory",
    }


def test_discover_batches_of_a_missing_root_is_empty(tmp_path):
    assert workflow.discover_batches(tmp_path / "absent") == ([], [])


@pytest.mark.parametrize(
    "name, shown",
    [
        ("plain.png", "plain.png"),
        ("wörm 🪱.png", "wörm 🪱.png"),
        (os.fsdecode(b"latin1-\xe9t\xe9.png"), "latin1-\\xe9t\\xe9.png"),
        (os.fsdecode(b"sub/\xff\xfe/x.png"), "sub/\\xff\\xfe/x.png"),
        ("new\nline\t.png", "new\\x0aline\\x09.png"),
        ("rtl\u202egnp.exe", "rtl\\u202egnp.exe"),
    ],
)
def test_display_name_escapes_undecodable_bytes_and_control_characters(name, shown):
    from wormflow.names import display_name

    assert display_name(name) == shown
    display_name(name).encode("utf-8")  # always printable, encodable text


def test_manifest_summary_carries_the_newest_change(tree, tmp_path):
    m = build_manifest(tree, labeled=False, shard_size=2)
    m.write(tmp_path / "manifest.json")
    summary = workflow.manifest_summary(tmp_path / "manifest.json")
    assert summary["newest_change_ns"] == m.newest_change_ns > 0
    assert summary["n_files"] == len(m.entries)


# --- atomic writes: fsync errors fail the write, stale temps of dead writers are removed --------------


def _fail_fsync(monkeypatch, *, files: int | None = None, directories: int | None = None) -> None:
    """Make ``os.fsync`` (as used by wormflow.atomic) fail with the given errno for files and/or directories."""
    real_fsync = os.fsync

    def fsync(fd):
        code = directories if stat_is_dir(fd) else files
        if code is not None:
            raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)


def stat_is_dir(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_a_failing_fsync_fails_the_write_and_keeps_the_old_file(tmp_path, monkeypatch, code):
    target = tmp_path / "out" / "result.json"
    atomic.atomic_write_text(target, "old")
    _fail_fsync(monkeypatch, files=code)
    with pytest.raises(OSError) as info:
        atomic.atomic_write_text(target, "new")
    assert info.value.errno == code
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]  # no temp left behind


def test_directory_fsync_is_best_effort_only_where_unsupported(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    _fail_fsync(monkeypatch, directories=errno.EINVAL)  # e.g. a file system without directory fsync
    atomic.atomic_write_text(target, "written")
    assert target.read_text() == "written"
    _fail_fsync(monkeypatch, directories=errno.EIO)
    with pytest.raises(OSError, match="Input/output error"):
        atomic.atomic_write_text(target, "not durable")


def test_temp_names_carry_the_writers_host_and_pid(tmp_path):
    target = tmp_path / "scores.h5"
    with atomic.atomic_path(target) as tmp:
        name = tmp.name
        tmp.write_bytes(b"x")
        mode = tmp.stat().st_mode & 0o777
    assert name.startswith(".scores.h5.") and name.endswith(".tmp")
    assert f".{atomic.writer_host()}.{os.getpid()}." in name
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # shared with the lab like any file, not mkstemp's 0600
    long_target = tmp_path / ("ü" * 120 + ".h5")  # 241 bytes: the temp name must still fit NAME_MAX
    atomic.atomic_write_bytes(long_target, b"y")
    assert long_target.read_bytes() == b"y"


WRITER = """
import sys, time
from wormflow.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half of a large store" * 1000)
    print(tmp, flush=True)
    time.sleep(120)
"""


@pytest.mark.timeout(60)
def test_remove_stale_temps_removes_temps_of_a_killed_writer_and_nothing_else(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(atomic.__file__).resolve().parents[1])}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(out / "shard.h5")], stdout=subprocess.PIPE, text=True, env=env)
    try:
        killed_temp = Path(writer.stdout.readline().strip())
    finally:
        writer.kill()  # SIGKILL: no cleanup runs
        writer.wait(timeout=30)
    assert killed_temp.exists() and killed_temp.parent == out

    host = atomic.writer_host()
    old = time.time() - 3 * 86400
    other_old = out / ".a.h5.otherhost-pidns1.4242.0123abcd.tmp"
    other_new = out / ".b.h5.otherhost-pidns1.4242.89abcdef.tmp"
    for path in (other_old, other_new):
        path.write_bytes(b"from a job on another node")
    os.utime(other_old, (old, old))
    unrelated = [out / ".keep.tmp", out / "notes.tmp", out / f".c.h5.{host}.{writer.pid}.0123abcd.txt"]
    for path in unrelated:
        path.write_bytes(b"not a temp of this scheme")
        os.utime(path, (old, old))
    os.symlink("/etc/passwd", out / f".d.h5.{host}.{writer.pid}.0123abcd.tmp")  # never a link
    nested = out / "sub" / killed_temp.name
    nested.parent.mkdir()
    nested.write_bytes(b"x")

    with atomic.atomic_path(out / "live.h5") as live:  # this process is alive: its temp stays
        live.write_bytes(b"being written")
        removed = atomic.remove_stale_temps(out, min_age_s=2 * 86400)
        assert live.exists()
    assert sorted(removed) == sorted([killed_temp, other_old])
    assert not killed_temp.exists() and not other_old.exists()
    assert other_new.exists() and all(p.exists() for p in unrelated) and nested.exists()
    assert (out / f".d.h5.{host}.{writer.pid}.0123abcd.tmp").is_symlink()
    assert atomic.remove_stale_temps(out, recursive=True) == [nested]
