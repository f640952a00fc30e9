"""Finding the files of an image collection and recording them in a manifest.

A *collection* is either an imaging batch (a directory of images, scanned
recursively) or one split of the labeled set (``<root>/<split>/{no_wormed,
wormed}/``).  Every regular file below the collection's directory ends in
exactly one place: it is scored, or it is listed in a quarantine table with
its reason.  The rules, applied the same way to batches and labeled splits:

* Sub-directories are scanned recursively; an image's id is its path relative
  to the collection directory (``/``-separated).
* Hidden entries (any path component starting with ``.``) are quarantined
  with the reason ``hidden file``; they are listed, never scored.
* Symbolic links are never followed (a link could point anywhere); they are
  quarantined.  So are sockets, FIFOs and device files.
* Empty files and names that are not valid UTF-8 are quarantined.
* Everything else goes to decoding, which quarantines what it cannot read.

Change detection works like git's index: the scan records each file's size,
mtime and ctime (cheap ``stat`` calls only, no file is opened).  When those
differ from the previous manifest the manifest job re-hashes just the changed
files (SHA-256 of the content) and downstream jobs re-run only for shards
whose *content* digest changed.  A ``touch`` therefore costs a re-hash, not
a re-score, and a content change with a forged mtime is still caught
(``ctime`` cannot be set from user space).

File timestamps are coarse (the kernel's clock tick, up to seconds on some
file systems), so a file rewritten with the same size just after the scan can
keep its ``stat`` data (git's "racy clean" problem).  Like git, a cached hash
is therefore reused only for files whose ``ctime`` lies at least
``RACY_MARGIN_NS`` before the previous manifest's scan started; files changed
shortly before a scan are simply hashed again on the next build.

An unreadable sub-directory is listed (quarantined) rather than silently
skipped; a collection directory that does not exist is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import atomic_write_text

MANIFEST_VERSION = 1
CLASS_DIRS = ("no_wormed", "wormed")
HASH_CHUNK = 1 << 20
RACY_MARGIN_NS = 2_000_000_000


@dataclass
class Entry:
    """One file of a collection."""

    relpath: str
    size: int
    mtime_ns: int
    ctime_ns: int
    label: int = -1
    quarantine: str = ""
    sha256: str = ""

    @property
    def ok(self) -> bool:
        return not self.quarantine


def _entries_digest(entries) -> str:
    """Digest of the files' names, bytes (SHA-256) and labels, in order."""
    h = hashlib.sha256()
    for e in entries:
        h.update(json.dumps([e.relpath, e.sha256, e.label]).encode())
    return h.hexdigest()


@dataclass
class Manifest:
    """The files of a collection, their content hashes and shard assignment."""

    root: str
    labeled: bool
    shard_size: int
    entries: list[Entry] = field(default_factory=list)
    scanned_ns: int = 0  # wall clock (time.time_ns) when the scan started; 0: unknown

    @property
    def candidates(self) -> list[Entry]:
        """Entries that go to decoding (not quarantined before decoding)."""
        return [e for e in self.entries if e.ok]

    @property
    def n_shards(self) -> int:
        n = len(self.candidates)
        return (n + self.shard_size - 1) // self.shard_size

    def shard(self, index: int) -> list[Entry]:
        start = index * self.shard_size
        return self.candidates[start : start + self.shard_size]

    def shard_digest(self, index: int) -> str:
        """Content digest of one shard: changes only when its files' bytes, names or labels change."""
        return _entries_digest(self.shard(index))

    def data_digest(self) -> str:
        """Digest of what would be decoded, in order: all shards together, independent of the shard size."""
        return _entries_digest(self.candidates)

    def content_digest(self) -> str:
        h = hashlib.sha256()
        for e in self.entries:
            h.update(json.dumps([e.relpath, e.sha256, e.label, e.quarantine]).encode())
        return h.hexdigest()

    def to_json(self) -> str:
        payload = {
            "version": MANIFEST_VERSION,
            "root": self.root,
            "labeled": self.labeled,
            "shard_size": self.shard_size,
            "scanned_ns": self.scanned_ns,
            "n_files": len(self.entries),
            "n_quarantined": sum(1 for e in self.entries if not e.ok),
            "n_shards": self.n_shards,
            "shard_digests": [self.shard_digest(i) for i in range(self.n_shards)],
            "data_digest": self.data_digest(),
            "entries": [asdict(e) for e in self.entries],
        }
        return json.dumps(payload, ensure_ascii=True, indent=0)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"unsupported manifest version {data.get('version')!r}")
        entries = [Entry(**e) for e in data["entries"]]
        return cls(
            root=data["root"],
            labeled=data["labeled"],
            shard_size=data["shard_size"],
            entries=entries,
            scanned_ns=int(data.get("scanned_ns", 0)),
        )

    def write(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_json())

    @classmethod
    def read(cls, path: str | os.PathLike) -> Manifest:
        return cls.from_json(Path(path).read_text())


def _quarantine_reason(relpath: str, st: os.stat_result, is_link: bool) -> str:
    if is_link:
        return "symbolic link (not followed)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if any(part.startswith(".") for part in relpath.split("/")):
        return "hidden file (names starting with '.' are not scored)"
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return ""


def _walk(root: Path, rel: str = ""):
    """Yield ``(relpath, stat, is_link, error)`` for every non-directory entry, recursively, without following links.

    A sub-directory that cannot be listed is yielded itself, with ``error`` set;
    the collection directory itself must be listable (``OSError`` otherwise).
    """
    try:
        with os.scandir(root / rel if rel else root) as it:
            items = sorted(it, key=lambda d: d.name)
    except OSError as exc:
        if not rel:
            raise
        try:
            st = os.lstat(root / rel)
        except OSError:
            return  # vanished while scanning
        yield rel, st, False, f"unreadable directory: {exc.strerror or exc}"
        return
    for d in items:
        relpath = f"{rel}/{d.name}" if rel else d.name
        is_link = d.is_symlink()
        if not is_link and d.is_dir(follow_symlinks=False):
            yield from _walk(root, relpath)
            continue
        try:
            st = d.stat(follow_symlinks=False)
        except OSError:
            continue  # vanished while scanning
        yield relpath, st, is_link, ""


def scan(root: str | os.PathLike, *, labeled: bool = False) -> list[Entry]:
    """List every file below ``root`` with its ``stat`` data (no file is opened).

    For a labeled split, files inside ``no_wormed/`` and ``wormed/`` (at any
    depth) get labels 0 and 1; any other file is quarantined as being outside a
    class directory.  Raises ``OSError`` when ``root`` cannot be listed.
    """
    root = Path(root)
    entries = []
    for relpath, st, is_link, error in _walk(root):
        reason = error or _quarantine_reason(relpath, st, is_link)
        label = -1
        if labeled:
            top = relpath.split("/", 1)[0]
            if top in CLASS_DIRS and "/" in relpath:
                label = CLASS_DIRS.index(top)
            elif not reason:
                reason = "outside a class directory (no_wormed/ or wormed/)"
        entries.append(
            Entry(
                relpath=relpath, size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, label=label, quarantine=reason
            )
        )
    return entries


def stat_fingerprint(root: str | os.PathLike, *, labeled: bool = False) -> str:
    """A digest of the collection's file list and ``stat`` data (cheap: no file is opened)."""
    h = hashlib.sha256()
    for e in scan(root, labeled=labeled):
        h.update(json.dumps([e.relpath, e.size, e.mtime_ns, e.ctime_ns]).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(
    root: str | os.PathLike,
    *,
    labeled: bool,
    shard_size: int,
    previous: Manifest | None = None,
) -> Manifest:
    """Scan ``root`` and hash the files whose ``stat`` data changed since ``previous``.

    A hash from ``previous`` is reused only when the file's ``stat`` data is unchanged
    and its ``ctime`` lies ``RACY_MARGIN_NS`` or more before ``previous.scanned_ns``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, not {shard_size}")
    root = Path(root)
    known = {}
    if previous is not None:
        trusted_before = previous.scanned_ns - RACY_MARGIN_NS
        known = {
            (e.relpath, e.size, e.mtime_ns, e.ctime_ns): e.sha256
            for e in previous.entries
            if e.sha256 and e.ctime_ns <= trusted_before
        }
    scanned_ns = time.time_ns()
    entries = scan(root, labeled=labeled)
    for e in entries:
        if e.quarantine:
            continue
        cached = known.get((e.relpath, e.size, e.mtime_ns, e.ctime_ns))
        try:
            e.sha256 = cached or sha256_file(root / e.relpath)
        except OSError as exc:
            e.quarantine = f"cannot read file: {exc.strerror or exc}"
    return Manifest(root=str(root), labeled=labeled, shard_size=shard_size, entries=entries, scanned_ns=scanned_ns)
