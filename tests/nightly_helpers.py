"""Helpers for tests/test_nightly.py: run directories ("cases"), Snakemake and ``wormflow nightly`` runs, job lists, kills.

A *case* is a working directory laid out like a lab's nightly set-up::

    <case>/overlay.yaml      config overlay (data.labeled: an absolute path; data.batches: "batches")
    <case>/batches/<name>/   the imaging batches (relative to the working directory, so a copied case
                             keeps the same configured paths and only its own batches)
    <case>/results/ ...      what the workflow wrote
    <case>/.snakemake/       Snakemake's metadata and locks

Cases are copied with :func:`copy_case` (mtimes kept) so that the expensive first run (training)
happens once per test module.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
PROFILE = REPO / "profiles" / "local"
TINY = REPO / "tests" / "configs" / "tiny.yaml"
RUN_TIMEOUT = 20 * 60  # seconds per Snakemake run (2 shared CPU cores)
# Two single-threaded jobs at a time: these tiny jobs mostly start Python and import torch, which uses
# one core, and two OpenMP threads per job thrash on a loaded 2-core machine. Not a rerun trigger.
FAST = ("--set-threads", "score_shard=1", "decode_shard=1", "train=1")
JOB_LINE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):\s*$")
_PINNED_CODE: str | None = None


# --------------------------------------------------------------------------- the code under test


def code_state() -> str:
    """Digest of what decides whether a run retrains or rescores: rules, scripts, defaults, package code."""
    from wormflow.digest import PACKAGE_DIR, code_digest

    package = [str(p.relative_to(PACKAGE_DIR)) for p in PACKAGE_DIR.rglob("*") if p.suffix in (".py", ".yaml")]
    h = hashlib.sha256(code_digest(package).encode())
    files = [SNAKEFILE, REPO / "config.yaml", REPO / "wormflow" / "config.schema.yaml"]
    files += sorted((REPO / "rules").glob("*.smk")) + sorted((REPO / "scripts").glob("*.py"))
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def pin_code() -> None:
    """Remember the code of the base run: later runs compare against results it made."""
    global _PINNED_CODE
    _PINNED_CODE = code_state()


def check_code() -> None:
    """Fail clearly when the workflow's code changed since :func:`pin_code` (an edit while the tests run)."""
    if _PINNED_CODE is not None and code_state() != _PINNED_CODE:
        raise AssertionError(
            "the workflow's rules, scripts, defaults or training code changed since the base run of this module "
            "(edited while the tests ran), so this run would retrain; run the tests again"
        )


# --------------------------------------------------------------------------- cases


def write_overlay(case: Path, labeled: Path, extra: dict | None = None, batches: str = "batches") -> Path:
    overlay = {"data": {"labeled": str(labeled), "batches": batches}, **(extra or {})}
    path = case / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay, sort_keys=False))
    return path


def copy_case(src: Path, dst: Path) -> Path:
    """Copy a case with its results and Snakemake metadata (mtimes kept; ctimes are new)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def batch_names(case: Path) -> list[str]:
    return sorted(p.name for p in (case / "batches").iterdir() if p.is_dir() and not p.name.startswith("."))


def settle(case: Path) -> subprocess.CompletedProcess:
    """Re-hash the batches of a freshly copied case (copying changes every ctime, which the manifests notice).

    In a lab's results directory nothing copies the batches; after this run a copied case is in that
    state again: the manifests record the copies' ``stat`` data and their contents are unchanged.
    """
    targets = [f"results/batches/{b}/manifest.json" for b in batch_names(case)]
    return snakemake(case, *targets)


# --------------------------------------------------------------------------- commands


def snakemake_args(case: Path, *targets: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Snakemake's arguments for a case (targets first: the nightly command appends its own flags)."""
    return [
        *targets,
        "-s",
        str(SNAKEFILE),
        "--directory",
        str(case),
        "--profile",
        str(PROFILE),
        "--cores",
        "2",
        *FAST,
        "--configfile",
        str(TINY),
        str(case / "overlay.yaml"),
        *extra,
    ]


def snakemake_cmd(case: Path, *targets: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "snakemake", *snakemake_args(case, *targets, extra=extra)]


def nightly_cmd(case: Path, *targets: str, extra: tuple[str, ...] = (), recheck: bool = False) -> list[str]:
    """``wormflow nightly --results <case>/results [--recheck] -- <snakemake args>``, as a cron job runs it."""
    return [
        sys.executable,
        "-m",
        "wormflow.cli",
        "nightly",
        "--results",
        str(case / "results"),
        *(["--recheck"] if recheck else []),
        "--",
        *snakemake_args(case, *targets, extra=extra),
    ]


def _run(cmd: list[str], cwd: Path, check: bool, timeout: float) -> subprocess.CompletedProcess:
    check_code()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    check_code()
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {' '.join(cmd)}\n{proc.stdout[-8000:]}")
    return proc


def snakemake(case: Path, *targets: str, extra: tuple[str, ...] = (), check: bool = True, timeout: float = RUN_TIMEOUT):
    """A plain Snakemake run in ``case`` (output: stdout and stderr together, in ``.stdout``)."""
    return _run(snakemake_cmd(case, *targets, extra=extra), case, check, timeout)


def nightly(
    case: Path,
    *targets: str,
    extra: tuple[str, ...] = (),
    check: bool = True,
    timeout: float = RUN_TIMEOUT,
    recheck: bool = False,
):
    """A ``wormflow nightly`` run in ``case`` (``recheck``: ``wormflow nightly --recheck``)."""
    return _run(nightly_cmd(case, *targets, extra=extra, recheck=recheck), case, check, timeout)


def popen(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own session (process group), its output to ``log``."""
    check_code()
    fh = open(log, "w")  # noqa: SIM115 - closed by the child's exit; the parent's copy is closed right below
    try:
        return subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        fh.close()


# --------------------------------------------------------------------------- job lists


def jobs_in(output: str) -> list[tuple[str, str]]:
    """``(rule, output)`` of every job Snakemake announced (dry run or real run); ``output`` is "" for ``all``."""
    jobs: list[list[str]] = []
    current: list[str] | None = None
    for line in output.splitlines():
        m = JOB_LINE.match(line)
        if m:
            current = [m.group(1), ""]
            jobs.append(current)
        elif current is not None and line.strip().startswith("output:"):
            current[1] = line.split("output:", 1)[1].strip()
        elif not line.strip():
            current = None
    return [(r, o) for r, o in jobs]


def rules_of(jobs: list[tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rule, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    return counts


# --------------------------------------------------------------------------- files


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(paths) -> dict[str, tuple[str, int]]:
    """``{path: (sha256, mtime_ns)}`` of existing files."""
    return {str(p): (sha256(p), os.stat(p).st_mtime_ns) for p in paths if Path(p).is_file()}


def entries_below(root: Path, rel: str = "") -> list[str]:
    """Relative paths of every non-directory entry below ``root`` (files, links, FIFOs), links not followed."""
    out = []
    with os.scandir(root / rel if rel else root) as it:
        for d in it:
            relpath = f"{rel}/{d.name}" if rel else d.name
            if d.is_dir(follow_symlinks=False):
                out += entries_below(root, relpath)
            else:
                out.append(relpath)
    return sorted(out)


def stored_name(relpath: str) -> str:
    """How a file name is stored in HDF5 (names that are not UTF-8 as ``\\xNN`` escapes)."""
    return relpath.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------- processes


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def descendants(pid: int) -> list[int]:
    children = _children_map()
    out, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def process_holding(root_pid: int, path: Path) -> int | None:
    """A descendant of ``root_pid`` that has ``path`` open (a job's Python process holds its log)."""
    target = os.path.realpath(path)
    for pid in descendants(root_pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process started with :func:`popen`, its process group and any descendant (a crash, an OOM kill)."""
    others = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in others:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=60)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s or when ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}")
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
