"""Atomic file writes: write a temporary file beside the target, then rename.

A reader (or a later Snakemake run) sees either the old file or the complete
new one, never a half-written file, even when the writer is killed with
SIGKILL.  The temporary name starts with ``.`` and ends with ``.tmp`` so
that leftovers are recognisable and never match a rule's output pattern.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it over ``target`` on success.

    ``durable`` also fsyncs the file and its directory (survives power loss, not
    only a killed process); frequent, replaceable files such as per-epoch resume
    checkpoints skip it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are shared with the lab like any file
    os.close(fd)
    tmp = Path(tmp)
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
