"""Helpers for the tests that run snakemake against a real (local) SLURM cluster.

* :func:`run_snakemake` runs ``python -m snakemake`` with the SLURM profiles under
  ``timeout -s INT``: SIGINT is the signal that makes a snakemake head process that
  waits on SLURM stop (and scancel its jobs); SIGTERM does not. Output is captured
  line by line with the elapsed time, so slow steps show up in a failure report.
* :func:`sacct_jobs` reads the accounting records of one run (all jobs share the
  job name ``<slurm-jobname-prefix>_<run uuid>``) and parses them into dicts.

Usable outside pytest too, e.g. ``python -c 'import slurm_helpers as h; ...'``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixture"
BASE_PROFILE = REPO / "profiles" / "slurm"  # the template rendered without site fields
PROFILE = "slurm"  # what users run: `snakemake --profile slurm`, installed by `wormflow profile install slurm`

# The local test cluster as a site (tests/slurm/start-local-slurm.sh: partition debug, account
# root, 2 CPUs, gpu:fakegpu:2, ~21 GB), installed with
#   wormflow profile install slurm --partition debug --account root --set ... (below)
# Tuned for wall time on 2 CPUs: 1-CPU jobs (set-threads; two run side by side, one per fake
# GPU), small memory (the rules' own 16 GB for train would let one job run at a time), the first
# sacct poll after 1 s (the plugin's interval then grows by 10 s per poll without a finished job:
# a fixture job of ~9 s is seen ~12 s after submission), no submission throttling.
PARTITION, ACCOUNT = "debug", "root"
THREADS = {"decode_shard": 1, "train": 1, "score_shard": 1}
TEST_MEM = {"decode_shard": 1000, "train": 2000, "score_shard": 1500}  # MB at attempt 1; doubles on the retry
TEST_SETTINGS = (
    "jobs=4",  # the node runs two 1-CPU jobs at a time; a few queued suffice
    "local-cores=2",
    "latency-wait=5",
    "max-jobs-per-timespan=100/1s",
    "slurm-init-seconds-before-status-checks=1",
    "slurm-status-attempts=2",
    *(f"set-threads.{rule}={n}" for rule, n in THREADS.items()),
    *(f"set-resources.{rule}.mem_mb={mb} * attempt" for rule, mb in TEST_MEM.items()),
    *(f"set-resources.{rule}.runtime=10 * attempt" for rule in TEST_MEM),
)
START_SCRIPT = HERE / "start-local-slurm.sh"
STOP_SCRIPT = HERE / "stop-local-slurm.sh"

# sacct columns (all exist in SLURM 22.05). Comment goes last: it is free text
# (the plugin writes "rule_<rule>_wildcards_<wildcards>") and may contain "|".
SACCT_FIELDS = (
    "JobIDRaw",
    "JobName",
    "State",
    "ExitCode",
    "Partition",
    "Account",
    "ReqMem",
    "Timelimit",
    "AllocTRES",
    "Elapsed",
    "Comment",
)

_RUN_ID_RE = re.compile(r"SLURM run ID: (\S+)")
_SUBMITTED_RE = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.")
_COMMENT_RE = re.compile(r"^rule_(?P<rule>.+?)(?:_wildcards_(?P<wildcards>.*))?$")


def cluster_answers(timeout_s: float = 10) -> bool:
    """True if ``sinfo`` is installed and a slurmctld answers it."""
    if shutil.which("sinfo") is None:
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


@functools.cache
def cluster_up() -> bool:
    """:func:`cluster_answers`, asked once per process (the test modules share the answer)."""
    return cluster_answers()


def cluster_mark():
    """Mark for the tests that submit to SLURM: skipped when no cluster answers, unless
    ``WORMFLOW_SLURM=1`` (CI), where the ``cluster`` fixture makes them fail instead."""
    import pytest

    return pytest.mark.skipif(
        os.environ.get("WORMFLOW_SLURM") != "1" and not cluster_up(),
        reason=(
            "no SLURM cluster answers `sinfo`: start the local one with "
            f"`sudo bash {START_SCRIPT.relative_to(REPO)}` "
            "(or set WORMFLOW_SLURM=1 to make these tests fail instead of skip)"
        ),
    )


def require_cluster() -> None:
    """Fail (rather than hang) when a cluster is required but nothing answers."""
    import pytest

    if not cluster_up():
        pytest.fail(f"WORMFLOW_SLURM=1 but no SLURM cluster answers `sinfo`; start it with `bash {START_SCRIPT}` (as root)")


@dataclass
class Submission:
    """One ``Job N has been submitted with SLURM jobid M (log: PATH).`` line."""

    snakemake_jobid: int
    slurm_jobid: str
    log: str


@dataclass
class SnakemakeRun:
    """The outcome of one :func:`run_snakemake` call."""

    cmd: list[str]
    cwd: Path
    returncode: int
    seconds: float
    lines: list[tuple[float, str]] = field(repr=False)  # (seconds since start, line)

    @property
    def output(self) -> str:
        """stdout and stderr, interleaved as snakemake wrote them."""
        return "\n".join(line for _, line in self.lines)

    @property
    def timed_out(self) -> bool:
        # timeout(1) exits 124 after delivering its signal, 137 after its -k SIGKILL
        return self.returncode in (124, 137)

    @property
    def run_id(self) -> str | None:
        """The SLURM job name shared by all jobs of this run (prefix + run uuid)."""
        m = _RUN_ID_RE.search(self.output)
        return m.group(1) if m else None

    @property
    def submissions(self) -> list[Submission]:
        return [Submission(int(a), b, c) for a, b, c in _SUBMITTED_RE.findall(self.output)]

    def timeline(self, limit: int = 400) -> str:
        """The output with elapsed seconds in front of every line (for failure messages)."""
        out = [f"{t:7.1f}s  {line}" for t, line in self.lines]
        if len(out) > limit:
            out = out[: limit // 4] + [f"... {len(out) - limit} lines left out ..."] + out[-(limit - limit // 4) :]
        return "\n".join(out)

    def describe(self) -> str:
        return (
            f"command: {' '.join(self.cmd)}\ncwd: {self.cwd}\nexit code: {self.returncode}"
            f"{' (TIMED OUT, got SIGINT)' if self.timed_out else ''}; {self.seconds:.1f}s\n{self.timeline()}"
        )


def snakemake_env(remove: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
    """Environment for the head process: the interpreter's bin/ (the venv) first on PATH.

    The plugin starts the jobs with the head's ``sys.executable``, and ``sbatch
    --export=ALL`` hands them this PATH, so shell rules find the venv's tools
    in the job as well (the same as running snakemake from an activated venv).
    """
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    # A stray SLURM_* (e.g. tests started inside an allocation) would leak into sbatch.
    for key in [k for k in env if k.startswith("SLURM_")]:
        del env[key]
    env.pop("SNAKEMAKE_PROFILE", None)
    for key in remove:  # e.g. to see that the workflow itself sets a variable
        env.pop(key, None)
    return env


def run_snakemake(
    args: list[str] | tuple[str, ...] = (),
    *,
    cwd: Path | str,
    profiles: list[Path | str] | tuple[Path | str, ...] = (PROFILE,),
    timeout_s: int = 300,
    kill_after_s: int = 60,
    log_file: Path | str | None = None,
    env_remove: tuple[str, ...] | list[str] = (),
    env: dict[str, str] | None = None,
) -> SnakemakeRun:
    """Run ``snakemake --profile slurm ARGS`` (the profile found by name, installed by
    :func:`install_profile` into the XDG_CONFIG_HOME that ``env`` sets), or with other
    ``profiles``: ``snakemake --profile P1 --profile P2 --workflow-profile none ARGS``, in ``cwd``.

    Wrapped in ``timeout -s INT -k kill_after_s timeout_s``: after ``timeout_s``
    seconds snakemake gets SIGINT (cancels its SLURM jobs and exits), and SIGKILL
    if it is still there ``kill_after_s`` later. Jobs of a killed run are then
    cancelled here via their job name. ``--workflow-profile none`` keeps a
    profiles/default/ next to a Snakefile from changing the test (there is none in the repository,
    so the by-name run is exactly ``snakemake --profile slurm``).
    If ``log_file`` is given, the timed output is written there as well.
    ``env_remove`` names variables to drop from the head's environment.
    """
    cwd = Path(cwd)
    cmd = ["timeout", "-s", "INT", "-k", str(kill_after_s), str(timeout_s), str(Path(sys.executable).parent / "snakemake")]
    for profile in profiles:
        cmd += ["--profile", str(profile)]
    if tuple(profiles) != (PROFILE,):
        cmd += ["--workflow-profile", "none"]
    cmd += [*map(str, args)]

    t0 = time.monotonic()
    lines: list[tuple[float, str]] = []
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**snakemake_env(env_remove), **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # our own process group: the backstop below can kill it whole
    )

    def backstop() -> None:  # only if timeout(1) itself failed to end things
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s + kill_after_s + 30, backstop)
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line.rstrip("\n")))
        returncode = proc.wait()
    finally:
        timer.cancel()
    run = SnakemakeRun(cmd=cmd, cwd=cwd, returncode=returncode, seconds=time.monotonic() - t0, lines=lines)

    if run.timed_out and run.run_id and shutil.which("scancel"):
        subprocess.run(["scancel", "--name", run.run_id], capture_output=True, timeout=30)
    if log_file is not None:
        Path(log_file).write_text(run.describe() + "\n")
    return run


def install_profile(home: Path | str, *args: str) -> dict[str, str]:
    """``wormflow profile install slurm`` for the test cluster into ``home``/.config (a temporary
    HOME and XDG_CONFIG_HOME); returns those two variables for the snakemake subprocess."""
    home = Path(home)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    cmd = [sys.executable, "-m", "wormflow.cli", "profile", "install", "slurm", "--partition", PARTITION, "--account", ACCOUNT]
    cmd += [a for s in TEST_SETTINGS for a in ("--set", s)] + list(args)
    proc = subprocess.run(
        cmd, env={**os.environ, "PYTHONPATH": str(REPO), **env}, capture_output=True, text=True, timeout=60, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    assert (home / ".config/snakemake/slurm/config.yaml").is_file(), proc.stdout
    return env


def _parse_tres(text: str) -> dict[str, str]:
    """'billing=1,cpu=1,gres/gpu=1,mem=300M,node=1' -> {'cpu': '1', 'gres/gpu': '1', ...}"""
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def sacct_jobs(job_name: str, fields: tuple[str, ...] = SACCT_FIELDS, days: int = 2) -> list[dict]:
    """Allocation records (``sacct -X``) of all jobs named ``job_name``, in job-id order.

    Each dict has the raw ``fields`` plus, parsed from them:
    ``tres`` (AllocTRES as a dict), ``rule`` and ``wildcards`` (from the plugin's
    job comment ``rule_<rule>_wildcards_<wildcards>``; wildcards "" if none).
    """
    starttime = f"{datetime.now() - timedelta(days=days):%Y-%m-%dT%H:%M}"  # sacct's default is "since midnight"
    cmd = [
        "sacct",
        "-X",
        "--parsable2",
        "--noheader",
        f"--format={','.join(fields)}",
        "--starttime",
        starttime,
        "--endtime",
        "now",
        "--name",
        job_name,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    jobs = []
    for line in proc.stdout.splitlines():
        if not line.strip():
            continue
        values = line.split("|", len(fields) - 1)
        job = dict(zip(fields, values))
        if "AllocTRES" in job:
            job["tres"] = _parse_tres(job["AllocTRES"])
        m = _COMMENT_RE.match(job.get("Comment", ""))
        job["rule"] = m.group("rule") if m else None
        job["wildcards"] = (m.group("wildcards") or "") if m else None
        jobs.append(job)
    if "JobIDRaw" in fields:
        jobs.sort(key=lambda j: int(j["JobIDRaw"]) if j["JobIDRaw"].isdigit() else 0)
    return jobs


def sacct_submit_lines(job_name: str, days: int = 2) -> dict[str, str]:
    """JobIDRaw -> the sbatch command line SLURM recorded (``sacct -o SubmitLine``, SLURM >= 22.05):
    shows whether a job asked ``--gpus=1`` or ``--gres=gpu:1``."""
    starttime = f"{datetime.now() - timedelta(days=days):%Y-%m-%dT%H:%M}"
    cmd = ["sacct", "-X", "--parsable2", "--noheader", "--format=JobIDRaw,SubmitLine", "--starttime", starttime]
    cmd += ["--endtime", "now", "--name", job_name]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return dict(line.split("|", 1) for line in proc.stdout.splitlines() if "|" in line)


def gpu_request(submit_line: str) -> str | None:
    """'--gpus=1' / '--gres=gpu:1' (or with a model) from an sbatch command line; None for a CPU job.
    Only the sbatch options count (the --wrap'ed snakemake command follows them)."""
    options = submit_line.split(" --wrap", 1)[0]
    found = re.findall(r"(--gpus=\S+|--gres=\S+)", options)
    assert len(found) <= 1, submit_line
    return found[0] if found else None


def format_jobs(jobs: list[dict]) -> str:
    """A compact table of sacct records, for assertion messages."""
    keys = ("JobIDRaw", "rule", "wildcards", "State", "ExitCode", "ReqMem", "Timelimit", "AllocTRES", "Elapsed")
    return "\n".join(" | ".join(str(j.get(k, "")) for k in keys) for j in jobs) or "(no jobs)"


def sacct_env(jobid: str) -> dict[str, str]:
    """The environment SLURM launched a batch job's script with (``sacct --env-vars``).

    Needs ``AccountingStoreFlags=job_env`` (set by start-local-slurm.sh). With
    ``sbatch --export=ALL`` (the plugin's default) this is the head process's
    environment at submission time.
    """
    cmd = ["sacct", "-j", str(jobid), "--env-vars"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    env = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            env[key] = value
    return env


def error_blocks(output: str, rule: str) -> list[str]:
    """All 'Error in rule RULE:' blocks (their indented lines) in snakemake's output."""
    lines = output.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line == f"Error in rule {rule}:":
            block = []
            for body in lines[i + 1 :]:
                if body and not body[0].isspace():
                    break
                block.append(body)
            blocks.append("\n".join(block))
    return blocks


def job_info_wildcards(output: str, rule: str, snakemake_jobid: int) -> str | None:
    """The 'wildcards:' line of the job-info block snakemake prints when it submits a job.

    (Snakemake's 'Error in rule' block has no wildcards line; this block has.)
    """
    for block in re.split(r"\n(?=\[\w{3} \w{3} )", output):  # blocks start with a "[Fri Nov 27 ...]" line
        if re.search(rf"^rule {re.escape(rule)}:$", block, re.M) and re.search(rf"^\s+jobid: {snakemake_jobid}$", block, re.M):
            m = re.search(r"^\s+wildcards: (.+)$", block, re.M)
            return m.group(1) if m else None
    return None


def job_stats(output: str) -> dict[str, int]:
    """rule -> count from the first 'Job stats:' table in snakemake's output (e.g. of a dry run)."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "Job stats:":
            for row in lines[i + 1 :]:
                parts = row.split()
                if not parts:
                    if counts:
                        break
                    continue
                if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
                    counts[parts[0]] = int(parts[1])
                elif parts[0] == "total":
                    break
            break
    return counts
