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

Nothing drops out silently: an unreadable sub-directory is listed
(quarantined) with its reason, and so is an entry whose ``stat`` fails for any
reason other than "no such file" (deleted while scanning), for example
"cannot stat: Permission denied" in a directory that can be listed but not
searched.  A collection directory that does not exist, or cannot be listed,
is an error.

The walk is iterative and goes through directory file descriptors
(``openat``/``fstatat`` relative to the parent directory, never following a
symbolic link), so neither deep nesting nor paths longer than ``PATH_MAX``
matter.  Hashing opens each file the same way (:func:`open_beneath`): a
symbolic link or FIFO swapped in after the scan is refused, never followed or
waited on.

:func:`newest_change_ns` gives the latest ``mtime``/``ctime`` of a collection's
files, for a workflow that waits until a batch has settled (a microscope may
still be writing it).

(Longer than the package's ~400-line guideline on purpose: the descriptor-based walk, the quarantine rules
and the manifest decide together where every file ends; kept in one module so that no file can fall between
two of them — the accounting tests read this module as one unit.)
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import atomic_write_text
from .names import display_name

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
    unit: str = ""  # the field (e.g. a well) this file is one channel of; "" for a single image
    channel: str = ""
    well: str = ""

    @property
    def ok(self) -> bool:
        return not self.quarantine

    @property
    def display_relpath(self) -> str:
        """``relpath`` for people: undecodable bytes and control characters escaped (see :mod:`wormflow.names`)."""
        return display_name(self.relpath)


def newest_change_ns(entries: Iterable[Entry]) -> int:
    """The latest ``max(mtime, ctime)`` of ``entries`` in nanoseconds (0 for none).

    ``ctime`` counts too: copies that keep old modification times (``rsync -a``,
    ``cp -p``) still change it when they arrive, and it cannot be set by hand.
    A workflow can defer a batch until this lies a settle time in the past.
    """
    return max((max(e.mtime_ns, e.ctime_ns) for e in entries), default=0)


def _entries_digest(entries) -> str:
    """Digest of the files' names, bytes (SHA-256) and labels (and fields), in order."""
    h = hashlib.sha256()
    for e in entries:
        h.update(json.dumps([e.relpath, e.sha256, e.label, *([e.unit, e.channel] if e.unit else [])]).encode())
    return h.hexdigest()


def group_units(entries: list[Entry]) -> list[list[Entry]]:
    """The decoding units of ``entries``: a single image alone, a field's channel files together (in
    the order of their first file)."""
    units: list[list[Entry]] = []
    fields: dict[str, list[Entry]] = {}
    for e in entries:
        if not e.unit:
            units.append([e])
        elif e.unit in fields:
            fields[e.unit].append(e)
        else:
            fields[e.unit] = [e]
            units.append(fields[e.unit])
    return units


def assign_fields(entries: list[Entry], pattern: str, channels: Iterable[str]) -> None:
    """Group the not-quarantined files into fields (:func:`wormflow.fields.group_fields`): members get
    their ``unit``, ``channel`` and ``well``; every file of a broken group is quarantined with the
    group's reasons (a channel missing, two files for a channel, ...)."""
    from .fields import FieldPattern, group_fields

    ok = {e.relpath: e for e in entries if e.ok}
    grouping = group_fields(list(ok), FieldPattern(pattern), channels)
    for f in grouping.fields:
        for channel, relpath in f.channels.items():
            ok[relpath].unit, ok[relpath].channel, ok[relpath].well = f.id, channel, f.well
    for relpath, reason in grouping.problems:
        ok[relpath].quarantine = reason


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
    def units(self) -> list[list[Entry]]:
        """What is decoded together: single images, and fields (their channel files)."""
        return group_units(self.candidates)

    @property
    def n_shards(self) -> int:
        n = len(self.units)
        return (n + self.shard_size - 1) // self.shard_size

    def shard_units(self, index: int) -> list[list[Entry]]:
        """The units of one shard (``shard_size`` units: images or fields)."""
        start = index * self.shard_size
        return self.units[start : start + self.shard_size]

    def shard(self, index: int) -> list[Entry]:
        """The files of one shard."""
        return [e for unit in self.shard_units(index) for e in unit]

    def shard_digest(self, index: int) -> str:
        """Content digest of one shard: changes only when its files' bytes, names or labels change."""
        return _entries_digest(self.shard(index))

    def data_digest(self) -> str:
        """Digest of what would be decoded, in order: all shards together, independent of the shard size."""
        return _entries_digest(self.candidates)

    @property
    def newest_change_ns(self) -> int:
        """Latest mtime/ctime of the collection's files as scanned (see :func:`newest_change_ns`)."""
        return newest_change_ns(self.entries)

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
            "newest_change_ns": self.newest_change_ns,
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
        return f"file name is not valid UTF-8: {display_name(relpath)}"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return ""


_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _O_CLOEXEC
_FILE_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


class NotRegularFileError(OSError):
    """A path that was listed as a regular file is now something else (a FIFO, a directory, ...)."""


def open_beneath(root: str | os.PathLike | int, relpath: str) -> int:
    """Open ``root/relpath`` for reading without following any symbolic link and without blocking; return the fd.

    ``root`` is a directory path (opened as given) or an open directory fd.
    Below it, every directory of ``relpath`` is opened relative to its parent's
    fd with ``O_DIRECTORY | O_NOFOLLOW`` and the file with
    ``O_RDONLY | O_NOFOLLOW | O_NONBLOCK``, so a symbolic link swapped in
    anywhere cannot redirect the read outside ``root``, a FIFO cannot block it,
    and paths longer than ``PATH_MAX`` work.  The returned fd is checked with
    ``fstat``: anything but a regular file raises :class:`NotRegularFileError`.

    Raises ``ValueError`` for a ``relpath`` that is not a plain relative path
    (empty components, ``.``, ``..``, absolute) and ``OSError`` otherwise, with
    ``filename`` the ``relpath`` prefix that failed (``errno.ELOOP``: a symbolic
    link; ``errno.ENOTDIR``: not a directory).
    """
    parts = relpath.split("/")
    if not relpath or "\0" in relpath or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a safe relative path: {relpath!r}")
    own = not isinstance(root, int)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC) if own else root
    try:
        for i, part in enumerate(parts):
            try:
                child = os.open(part, _DIR_FLAGS if i < len(parts) - 1 else _FILE_FLAGS, dir_fd=fd)
            except OSError as exc:
                code, text = exc.errno, exc.strerror
                if code == errno.ENOTDIR and _is_symlink(part, fd):  # Linux: O_DIRECTORY | O_NOFOLLOW on a link
                    code, text = errno.ELOOP, os.strerror(errno.ELOOP)
                raise OSError(code, text, "/".join(parts[: i + 1])) from None
            if own:
                os.close(fd)
            fd, own = child, True
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((k for test, k in _FILE_KINDS if test(st.st_mode)), "special file")
            raise NotRegularFileError(errno.EINVAL, f"not a regular file ({kind})", relpath)
        own = False  # the caller owns the file's fd now
        return fd
    finally:
        if own:
            os.close(fd)


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def describe_open_error(exc: OSError) -> str:
    """A short reason for an ``OSError`` from :func:`open_beneath` or reading its fd."""
    name = display_name(exc.filename) if isinstance(exc.filename, str) else ""
    if exc.errno == errno.ELOOP:
        return f"symbolic link (not followed): {name}" if name else "symbolic link (not followed)"
    if exc.errno == errno.ENOTDIR:
        return f"not a directory: {name}" if name else "not a directory"
    return exc.strerror or str(exc)


class _OpenDir:
    """A directory fd held while some of its sub-directories are still to be opened."""

    __slots__ = ("fd", "pending")

    def __init__(self, fd: int):
        self.fd = fd
        self.pending = 0


def _sort_key(found: tuple) -> tuple[str, ...]:
    return tuple(found[0].split("/"))  # depth-first, each directory's entries by name


def _walk(root: Path) -> list[tuple[str, os.stat_result | None, bool, str]]:
    """``(relpath, stat, is_link, error)`` for every non-directory entry below ``root``, without following links.

    Iterative, through directory fds (no recursion, no path length limit); sorted
    depth-first by name.  A sub-directory that cannot be opened or listed is
    returned itself, with ``error`` set; an entry whose ``stat`` fails with
    anything but ``ENOENT`` (vanished) is returned with ``stat`` None and the
    error.  ``root`` itself must be listable (``OSError`` otherwise).  A
    directory's fd stays open only until its last sub-directory is opened.
    """
    found: list[tuple[str, os.stat_result | None, bool, str]] = []
    pending: list[tuple[_OpenDir, str, str, os.stat_result]] = []
    held: set[_OpenDir] = set()

    def release(d: _OpenDir) -> None:
        if d.pending == 0 and d in held:
            held.discard(d)
            os.close(d.fd)

    def list_directory(d: _OpenDir, rel: str) -> None:
        for name in os.listdir(d.fd):
            relpath = f"{rel}/{name}" if rel else name
            try:
                st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted while scanning: no longer part of the collection
            except OSError as exc:
                found.append((relpath, None, False, f"cannot stat: {exc.strerror or exc}"))
                continue
            if stat.S_ISDIR(st.st_mode):
                d.pending += 1
                pending.append((d, name, relpath, st))
            else:
                found.append((relpath, st, stat.S_ISLNK(st.st_mode), ""))

    top = _OpenDir(os.open(root, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC))
    held.add(top)
    try:
        list_directory(top, "")
        release(top)
        while pending:
            parent, name, relpath, st = pending.pop()
            try:
                d = _OpenDir(os.open(name, _DIR_FLAGS, dir_fd=parent.fd))
            except FileNotFoundError:
                d = None  # deleted while scanning
            except OSError as exc:
                d = None
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # replaced by a link or a file since its stat
                    try:
                        st = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
                        found.append((relpath, st, stat.S_ISLNK(st.st_mode), ""))
                    except FileNotFoundError:
                        pass
                    except OSError as exc2:
                        found.append((relpath, None, False, f"cannot stat: {exc2.strerror or exc2}"))
                else:
                    found.append((relpath, st, False, f"unreadable directory: {exc.strerror or exc}"))
            finally:
                parent.pending -= 1
                release(parent)
            if d is None:
                continue
            held.add(d)
            try:
                list_directory(d, relpath)
            except OSError as exc:
                found.append((relpath, st, False, f"unreadable directory: {exc.strerror or exc}"))
            release(d)
    finally:
        for d in held:
            os.close(d.fd)
    found.sort(key=_sort_key)
    return found


def scan(root: str | os.PathLike, *, labeled: bool = False) -> list[Entry]:
    """List every file below ``root`` with its ``stat`` data (no file is opened, only directories).

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
        size, mtime_ns, ctime_ns = (st.st_size, st.st_mtime_ns, st.st_ctime_ns) if st is not None else (0, 0, 0)
        entries.append(Entry(relpath=relpath, size=size, mtime_ns=mtime_ns, ctime_ns=ctime_ns, label=label, quarantine=reason))
    return entries


def fingerprint(entries: Iterable[Entry]) -> str:
    """A digest of a file list and its ``stat`` data."""
    h = hashlib.sha256()
    for e in entries:
        h.update(json.dumps([e.relpath, e.size, e.mtime_ns, e.ctime_ns]).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def stat_fingerprint(root: str | os.PathLike, *, labeled: bool = False) -> str:
    """A digest of the collection's file list and ``stat`` data (cheap: no file is opened)."""
    return fingerprint(scan(root, labeled=labeled))


def sha256_file(path: str | os.PathLike, *, root: str | os.PathLike | int | None = None) -> str:
    """SHA-256 of a file's content.

    Without ``root``, ``path`` is opened as given (the workflow's own artifacts).
    With ``root`` (a directory path or fd), ``path`` is a ``/``-separated path
    below it, opened with :func:`open_beneath`: no symbolic link is followed,
    a FIFO does not block, only a regular file is read.
    """
    h = hashlib.sha256()
    if root is None:
        with open(path, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK):
                h.update(chunk)
        return h.hexdigest()
    fd = open_beneath(root, os.fspath(path))
    with open(fd, "rb", buffering=0) as fh:  # closes fd
        buf = bytearray(HASH_CHUNK)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def build_manifest(
    root: str | os.PathLike,
    *,
    labeled: bool,
    shard_size: int,
    previous: Manifest | None = None,
    fields: dict | None = None,
) -> Manifest:
    """Scan ``root``, hash the files whose ``stat`` data changed since ``previous`` and, with the
    ``fields`` config section, group channel files into fields (batches only).

    Files are opened below ``root`` with :func:`open_beneath` (no symbolic link
    followed, no FIFO waited on); one that cannot be read is quarantined with
    the reason ("cannot read file: ...").

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
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _O_CLOEXEC)
    try:
        for e in entries:
            if e.quarantine:
                continue
            cached = known.get((e.relpath, e.size, e.mtime_ns, e.ctime_ns))
            try:
                e.sha256 = cached or sha256_file(e.relpath, root=root_fd)
            except OSError as exc:
                e.quarantine = f"cannot read file: {describe_open_error(exc)}"
    finally:
        os.close(root_fd)
    if fields and fields.get("enabled", True) and not labeled:
        assign_fields(entries, fields["pattern"], dict.fromkeys(fields["composite"].values()))
    return Manifest(root=str(root), labeled=labeled, shard_size=shard_size, entries=entries, scanned_ns=scanned_ns)
