"""The nightly run: one Snakemake run per results directory at a time, recovering from killed runs.

``wormflow nightly -- --profile profiles/slurm [--configfile site.yaml]``

1. Takes an exclusive ``flock`` on ``<results>/.wormflow-nightly.lock`` (a
   relative ``--results`` is taken inside Snakemake's ``--directory``).  A
   second run on the same results directory exits at once with status 75 and
   a message naming the holder (pid, host, start time).  The kernel releases
   the lock when the holder dies, however it dies, so a killed night never
   blocks the next one; the Snakemake child inherits the lock, so an orphaned
   head process still holds it until it ends.
2. Runs ``snakemake --unlock`` (safe: we hold the lock, so no other run is
   active) to clear the directory lock a killed head process leaves behind.
3. Runs Snakemake with ``--rerun-incomplete`` (outputs of jobs killed
   mid-write are redone) and ``--keep-going``, twice: first ``--until manifest``
   (the per-collection manifests), then the whole workflow (see
   :data:`PHASES`); SIGTERM, SIGINT and SIGHUP are
   forwarded as SIGINT, which is what stops a Snakemake head process that is
   waiting on SLURM (SIGTERM does not) and lets it cancel its jobs.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

LOCK_NAME = ".wormflow-nightly.lock"
# First every collection's manifest (the checkpoints), then everything else. In one run, Snakemake
# 9.27 re-evaluates the DAG when each re-run checkpoint finishes, and when two finish at nearly
# the same moment it can drop the jobs downstream of one of them (seen in tests/test_nightly.py: a
# batch whose content changed was re-manifested and re-decoded but not rescored, and the report
# was not rendered). With the manifests current before the second run starts, that run builds its
# DAG once, from them, and every content digest decides what re-runs.
PHASES = (("--until", "manifest"), ())
EXIT_LOCKED = 75  # EX_TEMPFAIL: try again later


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    return text or "unknown holder"


def acquire(lock_path: Path) -> int | None:
    """Return the locked file descriptor, or ``None`` (after printing the holder) when another run holds it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(
            f"wormflow nightly: another run holds {lock_path} ({_holder(fd)}); not starting a second run on the same results",
            file=sys.stderr,
        )
        os.close(fd)
        return None
    info = f"pid {os.getpid()} on {socket.gethostname()} since {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)
    return fd


def snakemake_command(snakemake: str | None) -> list[str]:
    if snakemake:
        return [snakemake]
    return [sys.executable, "-m", "snakemake"]


def workdir(args: list[str]) -> str | None:
    """Snakemake's working directory (``--directory`` / ``-d``) among ``args``, if given."""
    for i, a in enumerate(args):
        if a in ("--directory", "-d") and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--directory="):
            return a.split("=", 1)[1]
    return None


def lock_path(args: list[str], results: str = "results") -> Path:
    """The lock file: in ``results``, which (when relative) lies in Snakemake's working directory.

    So two nights started from different directories with ``--directory`` the same run directory
    still exclude each other.
    """
    path = Path(results)
    wd = workdir(args)
    if wd is not None and not path.is_absolute():
        path = Path(wd) / path
    return path / LOCK_NAME


def run_nightly(snakemake_args: list[str], results: str = "results", snakemake: str | None = None) -> int:
    args = [a for a in snakemake_args if a != "--"]
    fd = acquire(lock_path(args, results))
    if fd is None:
        return EXIT_LOCKED
    exe = snakemake_command(snakemake)
    stop: list[int] = []  # signals received; one before the run starts means: do not start it
    proc: subprocess.Popen | None = None

    def forward(signum, frame):
        stop.append(signum)
        if proc is not None:
            proc.send_signal(signal.SIGINT)

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in handled}
    try:
        unlock = subprocess.run([*exe, *args, "--unlock"], pass_fds=(fd,), capture_output=True, text=True)
        if unlock.returncode != 0:
            sys.stderr.write(unlock.stdout + unlock.stderr)
            return unlock.returncode
        if stop:
            return 128 + stop[0]
        for phase in PHASES:
            proc = subprocess.Popen([*exe, *args, "--rerun-incomplete", "--keep-going", *phase], pass_fds=(fd,))
            if stop:  # a signal that came while the run was being started
                proc.send_signal(signal.SIGINT)
            rc = proc.wait()
            if stop:
                return rc or 128 + stop[0]
        return rc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(fd)
