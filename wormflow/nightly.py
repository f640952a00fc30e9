"""The nightly run: one writer per results tree at a time, recovering from killed runs.

``wormflow nightly -- --profile slurm [--configfile site.yaml]``

1. Takes the results tree's lock (:mod:`wormflow.runlock`: ``<workdir>/results/.wormflow.lock``,
   where ``<workdir>`` is Snakemake's ``--directory``, else the current directory).  When another
   run holds it — another night, or a plain ``snakemake`` run, which takes the same lock while
   its Snakefile is parsed — this exits at once with status 75, naming the holder (pid, host,
   start time, command).  The kernel releases the lock when its holder dies, however it dies, so
   a killed night never blocks the next one.  The Snakemake children inherit the descriptor
   (``WORMFLOW_LOCK_FD``), so the lock is held across the whole night without a gap.
2. Because it holds that lock, no other head process of this workflow can be alive in the working
   directory: a Snakemake directory lock left in ``.snakemake/locks`` is provably stale, and only
   then is ``snakemake --unlock`` run (a live run's lock is never cleared).
3. Runs Snakemake with ``--rerun-incomplete`` (outputs of jobs killed mid-write are redone) and
   ``--keep-going``, twice: first ``--until manifest`` (the per-collection manifests), then the
   whole workflow (see :data:`PHASES`); SIGTERM, SIGINT and SIGHUP are forwarded as SIGINT, which
   is what stops a Snakemake head process that is waiting on SLURM (SIGTERM does not) and lets it
   cancel its jobs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from . import paths, runlock

# First every collection's manifest (the checkpoints), then everything else. In one run, Snakemake
# 9.27 re-evaluates the DAG when each re-run checkpoint finishes, and when two finish at nearly
# the same moment it can drop the jobs downstream of one of them (seen in tests/test_nightly.py: a
# batch whose content changed was re-manifested and re-decoded but not rescored, and the report
# was not rendered). With the manifests current before the second run starts, that run builds its
# DAG once, from them, and every content digest decides what re-runs.
PHASES = (("--until", "manifest"), ())
EXIT_LOCKED = 75  # EX_TEMPFAIL: try again later
LOCK_NAME = runlock.LOCK_NAME


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


def lock_path(args: list[str], results: str = paths.RESULTS) -> Path:
    """The lock file: in ``results``, which (when relative) lies in Snakemake's working directory.

    So two nights started from different directories with ``--directory`` the same run directory
    still exclude each other, and a plain ``snakemake`` run in that directory takes the same lock.
    """
    path = Path(results)
    wd = workdir(args)
    if wd is not None and not path.is_absolute():
        path = Path(wd) / path
    return runlock.lock_file(path)


def stale_snakemake_locks(args: list[str]) -> list[Path]:
    """Snakemake's directory locks in the working directory (stale once we hold the results lock)."""
    locks = Path(workdir(args) or ".") / ".snakemake" / "locks"
    return sorted(locks.iterdir()) if locks.is_dir() else []


def with_config(args: list[str], item: str) -> list[str]:
    """``args`` with ``item`` (``key=value``) added to its ``--config`` (one is added when there is none:
    a second ``--config`` would replace the first)."""
    args = list(args)
    for i, a in enumerate(args):
        if a in ("--config", "-C"):
            return [*args[: i + 1], item, *args[i + 1 :]]
    return [*args, "--config", item]


def run_nightly(snakemake_args: list[str], results: str = paths.RESULTS, snakemake: str | None = None) -> int:
    args = [a for a in snakemake_args if a != "--"]
    lock = lock_path(args, results)
    try:
        fd = runlock.acquire(lock.parent, role="wormflow nightly")
    except runlock.LockedError as exc:
        print(f"wormflow nightly: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    exe = snakemake_command(snakemake)
    env = {**os.environ, runlock.FD_ENV: str(fd)}
    stop: list[int] = []  # signals received; one before the run starts means: do not start it
    proc: subprocess.Popen | None = None

    def forward(signum, frame):
        stop.append(signum)
        if proc is not None:
            proc.send_signal(signal.SIGINT)

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in handled}
    try:
        stale = stale_snakemake_locks(args)
        if stale:  # we hold the results lock: no head process of this workflow is alive here
            print(f"wormflow nightly: clearing {len(stale)} stale Snakemake lock(s) left by a killed run", file=sys.stderr)
            unlock = subprocess.run([*exe, *args, "--unlock"], pass_fds=(fd,), env=env, capture_output=True, text=True)
            if unlock.returncode != 0:
                sys.stderr.write(unlock.stdout + unlock.stderr)
                return unlock.returncode
        if stop:
            return 128 + stop[0]
        rc = 0
        for phase in PHASES:
            proc = subprocess.Popen([*exe, *args, "--rerun-incomplete", "--keep-going", *phase], pass_fds=(fd,), env=env)
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


def retrain(
    methods: list[str],
    snakemake_args: list[str],
    *,
    force: bool = False,
    results: str = paths.RESULTS,
    snakemake: str | None = None,
) -> int:
    """A nightly run that may retrain ``methods`` (config ``retrain``), keeping the current models safe.

    A night never retrains (it uses the models it has and reports that retraining is pending);
    this does, for the named methods, when their training data, config or code changed (always,
    with ``force``).  Snakemake removes a model before retraining it: each current ``model.pt``
    and ``model.json`` is copied to ``previous-model.*`` first and put back if the run ends
    without a new model, so a failed retraining leaves the method scoring with its old model.
    """
    import shutil

    args = [a for a in snakemake_args if a != "--"]
    root = Path(workdir(args) or ".")
    names = "all" if "all" in methods else ",".join(methods)
    extra = ["--config", f"retrain=[{names}]"] + (["--forcerun", "train"] if force else [])
    dirs = sorted(p for p in (root / paths.RESULTS / "models").glob("*/seed*") if "all" in methods or p.parent.name in methods)
    kept = []
    for d in dirs:
        for name in ("model.pt", "model.json"):
            if (d / name).is_file():
                shutil.copy2(d / name, d / f"previous-{name}")
                kept.append(d / name)
    rc = run_nightly([*args, *extra], results=results, snakemake=snakemake)
    for path in kept:
        if not path.exists():  # the retraining failed: keep scoring with the model that worked
            shutil.copy2(path.with_name(f"previous-{path.name}"), path)
            print(f"wormflow retrain: {path} restored (the retraining did not produce a new one)", file=sys.stderr)
    return rc
