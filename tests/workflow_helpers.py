"""Running the workflow from tests: one Snakemake process per call, in a chosen working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "tests" / "configs"
TINY = CONFIGS / "tiny.yaml"
DEMO_TINY = CONFIGS / "demo-tiny.yaml"
BBBC010_CONFIG = REPO / "config" / "bbbc010.yaml"


def snakemake_cmd(workdir: Path, *args: str, configfiles=(TINY,), profile: str | None = "local") -> list[str]:
    """The command for a run of this repository's workflow in ``workdir`` (config.yaml + overlays)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    if profile:
        cmd += ["--profile", str(REPO / "profiles" / profile)]
    cmd += ["--cores", "2"]
    if configfiles:
        cmd += ["--configfile", *map(str, configfiles)]
    return cmd + list(args)


def run_snakemake(workdir: Path, *args: str, configfiles=(TINY,), check: bool = True, timeout: float = 1200, **kw):
    """Run the workflow; on failure (with ``check``) raise with the tail of Snakemake's output."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = snakemake_cmd(workdir, *args, configfiles=configfiles, **kw)
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}): {' '.join(cmd)}\n{(proc.stdout + proc.stderr)[-6000:]}")
    return proc


def dry_run_jobs(workdir: Path, *args: str, configfiles=(TINY,)) -> dict[str, int]:
    """Rule -> job count of a dry run (parsed from Snakemake's job stats table)."""
    proc = run_snakemake(workdir, "-n", "--quiet", "rules", *args, configfiles=configfiles)
    counts: dict[str, int] = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            counts[parts[0]] = int(parts[1])
    return counts
