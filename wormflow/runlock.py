"""One lock per results tree, held by every process that writes it.

Every Snakemake head process of this workflow (a plain ``snakemake`` run or the nightly runner's)
takes an exclusive ``flock`` on ``results/.wormflow.lock`` while the Snakefile is parsed, before
Snakemake builds its DAG or takes its own directory lock, and holds it until it exits; read-only
invocations (dry runs, ``--lint``, listings, ``--dag``…) and the job-level Snakemake inside a
SLURM job do not take it.  A second writer therefore stops at once, naming the holder (pid, host,
start time, command).  The kernel releases a ``flock`` when its holder dies, however it dies, so:

* holding this lock proves that no other head process of this workflow is alive in this
  working directory, which makes Snakemake's own lock (``.snakemake/locks``) provably stale when
  one is found: :mod:`wormflow.nightly` runs ``snakemake --unlock`` only then;
* a SIGKILLed night never blocks the next one.

The nightly runner takes the lock itself and hands the open descriptor to its Snakemake children
(``WORMFLOW_LOCK_FD``); a child recognises it (same file, and ``flock`` on an inherited
descriptor of the holder succeeds), so the lock is held without a gap across the night's phases.

Limits: ``flock`` is local to a host unless the filesystem forwards it — NFS v4 (and v3 with
``lockd``) maps it to POSIX locks, which do work across hosts; Lustre needs the ``flock`` mount
option (with ``localflock`` a lock only excludes processes on the same node); some FUSE and SMB
mounts ignore locks.  Run the nightly head processes of one results tree from one host (the
login node) and the guarantee holds on any filesystem.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import shlex
import socket
import sys
from pathlib import Path

LOCK_NAME = ".wormflow.lock"
FD_ENV = "WORMFLOW_LOCK_FD"
# Snakemake invocations that only read: they never take the lock (a dry run during a night is fine).
READ_ONLY_FLAGS = frozenset(
    {
        "-n",
        "--dry-run",
        "--dryrun",
        "--lint",
        "--list",
        "-l",
        "--list-rules",
        "--list-target-rules",
        "--lt",
        "--list-changes",
        "--lc",
        "--list-code-changes",
        "--list-input-changes",
        "--list-params-changes",
        "--list-untracked",
        "--lu",
        "--summary",
        "-S",
        "--detailed-summary",
        "-D",
        "--dag",
        "--rulegraph",
        "--filegraph",
        "--d3dag",
        "--version",
        "-v",
        "--help",
        "-h",
        "--print-compilation",
        "--containerize",
        "--export-cwl",
    }
)


class LockedError(RuntimeError):
    """Another live process holds the results tree's lock; the message names it."""


def lock_file(results: str | os.PathLike) -> Path:
    return Path(results) / LOCK_NAME


def read_only(argv: list[str]) -> bool:
    """Whether a Snakemake command line only reads (dry run, lint, listings, graphs, help)."""
    for arg in argv:
        if arg in READ_ONLY_FLAGS or arg.split("=", 1)[0] in READ_ONLY_FLAGS:
            return True
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2 and "n" in arg[1:] and arg[1:].isalpha():
            return True  # combined short flags such as -np
    return False


def holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() or "unknown holder"
    except OSError:
        return "unknown holder"


def _inherited(path: Path) -> int | None:
    """The descriptor a parent (the nightly runner) handed down, if it is this lock and held."""
    value = os.environ.get(FD_ENV)
    if not value:
        return None
    try:
        fd = int(value)
        st, mine = os.fstat(fd), os.stat(path)
    except (ValueError, OSError):
        return None
    if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: succeeds on the same open file
    except BlockingIOError:
        return None
    return fd


def acquire(results: str | os.PathLike, role: str) -> int:
    """Take (or recognise an inherited) exclusive lock on ``results``; raise :class:`LockedError` naming the holder.

    The descriptor is returned open: the lock lasts as long as the process (or until closed).
    """
    path = lock_file(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _inherited(path) if path.exists() else None
    if fd is not None:
        return fd
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LockedError(
            f"another wormflow run holds {path} ({holder(path)}); not starting a second run on the same results"
        ) from None
    command = " ".join(shlex.quote(a) for a in sys.argv)[:300]
    info = f"{role}: pid {os.getpid()} on {socket.gethostname()} since {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ} ({command})\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode("utf-8", "replace"), 0)
    return fd
