"""Atomic file writes: write a temporary file beside the target, then rename.

A reader (or a later Snakemake run) sees either the old file or the complete
new one, never a half-written file, even when the writer is killed with
SIGKILL.  A durable write fsyncs the file before the rename and the directory
after it; an fsync error (EIO, ENOSPC on NFS, ...) fails the write - the
data may not be on disk - except a directory fsync that the file system does
not support (EINVAL, ENOTSUP), which is skipped.

Temporary names are ``.{name}.{host}.{pid}.{random}.tmp``: they start with
``.`` and end with ``.tmp`` (recognisable, never matching a rule's output
pattern) and name the writer, so that :func:`remove_stale_temps` can remove
the temps of writers that were killed (a shard's image store is hundreds of
MB) without touching those of writers still running.  ``host`` is the host
name (characters other than letters, digits and ``-`` replaced by ``-``)
plus the writer's PID namespace (``-pidns<inode>``, where Linux shows one):
the same host name in another container is another host.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_STALE_TEMP_AGE_S = 2 * 86400  # a temp of a writer on another host is stale after two days untouched
_DIR_FSYNC_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP})
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]{1,10})\.(?P<rand>[0-9a-f]{8})\.tmp$")
_NAME_BYTES_IN_TEMP = 100  # of the target's name, in the temp name (which must fit NAME_MAX, 255 bytes)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@functools.lru_cache(maxsize=1)
def writer_host() -> str:
    """This process's host token in temp names (see module doc)."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "unknown-host"
    with contextlib.suppress(OSError):
        host += f"-pidns{os.stat('/proc/self/ns/pid').st_ino}"
    return host


def _create_temp(target: Path) -> Path:
    """Create (exclusively) an empty temporary file beside ``target``; mode 0666 less the umask, like any new file."""
    stem = os.fsdecode(os.fsencode(target.name)[:_NAME_BYTES_IN_TEMP])
    for _ in range(100):
        tmp = target.parent / f".{stem}.{writer_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", str(target))


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it over ``target`` on success.

    ``durable`` also fsyncs the file and its directory (survives power loss, not
    only a killed process); an fsync error raises (the target is then either
    untouched or, if only the directory fsync failed, replaced but perhaps not
    on disk).  Frequent, replaceable files such as per-epoch resume checkpoints
    skip it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(target)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, target)
        if durable:
            _fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists in this PID namespace (when unsure: yes)."""
    if pid <= 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return pid <= 0x7FFFFFFF  # another user's process is alive; a pid beyond any pid_t never was
    return True


def remove_stale_temps(
    directory: str | os.PathLike,
    *,
    recursive: bool = False,
    min_age_s: float = DEFAULT_STALE_TEMP_AGE_S,
) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` in ``directory`` whose writer is provably gone.

    A temp written on this host (same host token, see the module doc) is stale
    when its pid is not alive; one from another host when it has not been
    modified for ``min_age_s`` seconds (a live writer keeps writing; set this
    above the longest job).  Only regular files named by this scheme are
    touched: never links, other dot-files or temps of the old ``mkstemp``
    naming (whose writer is unknown).  ``recursive`` also looks in
    sub-directories (without following links).  Returns the removed paths.
    """
    host = writer_host()
    now = time.time()
    removed: list[Path] = []
    todo = [Path(directory)]
    while todo:
        current = todo.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except FileNotFoundError:
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if recursive:
                    todo.append(Path(entry.path))
                continue
            match = _TEMP_NAME.match(entry.name)
            if not match or not stat.S_ISREG(st.st_mode):
                continue
            if match["host"] == host:
                if _pid_alive(int(match["pid"])):
                    continue
            elif now - st.st_mtime < min_age_s:
                continue
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as exc:  # e.g. another user's temp in a shared directory: not ours to remove
                log.warning("cannot remove stale temporary file %s: %s", entry.path, exc.strerror or exc)
                continue
            removed.append(Path(entry.path))
    return removed
