"""A night on the local SLURM cluster: SLURM jobs and wall time for 1, 10 and 50 small batches,
BEFORE (one scoring job per method per shard, e.g. commit 6adf3b8) vs AFTER (this checkout: one
scoring job per shard for every method, decode/score shards as SLURM job arrays).

The night measured is decode + score + gather + summarize + ledger + report of N new batches
(a few tiny images each, one shard per batch). Set-up, not measured, once per checkout: the demo
data (``wormflow demo-data``) and the tiny models (tests/configs/tiny.yaml) trained with
profiles/local; every night then starts from a copy of that results tree (models reused).

Profiles (same tuning on both sides: 1-CPU jobs, small memory, 1 s first status poll):
  before: --profile <before>/profiles/slurm --profile <before>/tests/slurm/profile --jobs J
  after:  snakemake --profile slurm, installed by `wormflow profile install slurm` (the same
          tuning as --set entries) into a temporary XDG_CONFIG_HOME, --jobs J

    python benchmarks/slurm_night.py --before /tmp/before --batches 1 10 50 --cap-s 600 \\
        --out benchmarks/results/slurm-night-2026-12-03

SLURM jobs are counted in sacct (``--name <run id>``, allocations only): every array task is a
job; "sbatch calls" counts array jobs once. A night that hits --cap-s is stopped with SIGINT
(its SLURM jobs cancelled) and reported as capped, with the jobs that completed until then.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "slurm"))

from slurm_helpers import TEST_SETTINGS, sacct_jobs, snakemake_env  # noqa: E402

SMK = Path(sys.executable).parent / "snakemake"


def sh(cmd, **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run(list(map(str, cmd)), check=True, **kw)


def env_for(checkout: Path, extra: dict | None = None) -> dict:
    env = snakemake_env()
    env["PYTHONPATH"] = str(checkout)
    env.update(extra or {})
    return env


def overlay(path: Path, labeled: Path, batches: Path, checkout: Path) -> Path:
    text = f"data:\n  labeled: {labeled}\n  batches: {batches}\n"
    if "settle_minutes" in (checkout / "wormflow/config.schema.yaml").read_text():  # not in 6adf3b8
        text += "  settle_minutes: 0\n"
    path.write_text(text)
    return path


def setup(side: str, checkout: Path, work: Path, data: Path) -> Path:
    """Train the tiny models once (profiles/local); returns the trained results tree's workdir."""
    wd = work / f"{side}-trained"
    if (wd / "results" / "report.html").exists():
        return wd
    wd.mkdir(parents=True, exist_ok=True)
    empty = work / "no-batches"
    empty.mkdir(exist_ok=True)
    ov = overlay(wd / "overlay.yaml", data / "labeled", empty, checkout)
    sh(
        [SMK, "-s", checkout / "Snakefile", "--configfile", checkout / "tests/configs/tiny.yaml", ov,
         "--profile", checkout / "profiles/local", "--workflow-profile", "none", "--cores", "2"],
        cwd=wd, env=env_for(checkout), stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return wd


def night(side: str, checkout: Path, trained: Path, data: Path, n: int, images: int, work: Path, args) -> dict:
    wd = work / f"{side}-{n}"
    if wd.exists():
        shutil.rmtree(wd)
    shutil.copytree(trained, wd, symlinks=True)  # copy2: mtimes kept, the models stay up to date
    batches = wd / "batches"
    src = sorted(p for p in (data / "batches").glob("*/*") if p.is_file())[:images]
    for b in range(n):
        d = batches / f"night-{b:03d}"
        d.mkdir(parents=True)
        for p in src:
            shutil.copy2(p, d / p.name)
    ov = overlay(wd / "overlay.yaml", data / "labeled", batches, checkout)
    cmd = ["timeout", "-s", "INT", "-k", "60", str(args.cap_s), SMK]
    extra = {}
    arrays = side == "after-arrays"
    if side == "before":
        cmd += [
            "--profile",
            checkout / "profiles/slurm",
            "--profile",
            checkout / "tests/slurm/profile",
            "--workflow-profile",
            "none",
        ]
    else:
        xdg = work / "xdg"
        extra = {"XDG_CONFIG_HOME": str(xdg)}
        sh(
            [sys.executable, "-m", "wormflow.cli", "profile", "install", "slurm", "--partition", "debug", "--account", "root",
             "--force", *(a for s in TEST_SETTINGS for a in ("--set", s)), *(["--arrays"] if arrays else [])],
            env=env_for(checkout, extra), stdout=subprocess.DEVNULL,
        )  # fmt: skip
        cmd += ["--profile", "slurm"]
    cmd += ["-s", checkout / "Snakefile", "--configfile", checkout / "tests/configs/tiny.yaml", ov, "--jobs", args.jobs]
    print("+", " ".join(map(str, cmd)), flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(list(map(str, cmd)), cwd=wd, env=env_for(checkout, extra), capture_output=True, text=True)
    seconds = time.monotonic() - t0
    (work / f"{side}-{n}.log").write_text(proc.stdout + proc.stderr)
    run_id = next((line.split("SLURM run ID: ")[1].split()[0] for line in proc.stdout.splitlines() + proc.stderr.splitlines()
                   if "SLURM run ID: " in line), None)  # fmt: skip
    jobs = sacct_jobs(run_id, fields=("JobID", "JobIDRaw", "State", "Elapsed", "Comment")) if run_id else []
    rules: dict[str, int] = {}
    for j in jobs:
        rules[j["rule"]] = rules.get(j["rule"], 0) + 1
    sbatch = len({j["JobID"].split("_")[0] for j in jobs})
    result = {
        "side": side,
        "batches": n,
        "images_per_batch": images,
        "exit": proc.returncode,
        "capped": proc.returncode in (124, 137),
        "wall_s": round(seconds, 1),
        "slurm_jobs": len(jobs),
        "sbatch_calls": sbatch,
        "completed": sum(j["State"] == "COMPLETED" for j in jobs),
        "jobs_by_rule": rules,
        "report": (wd / "results" / "report.html").exists() and proc.returncode == 0,
        "command": " ".join(map(str, cmd)),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="checkout of the 'before' commit (e.g. 6adf3b8)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 10, 50])
    p.add_argument("--images", type=int, default=3, help="images per batch")
    p.add_argument(
        "--sides",
        nargs="+",
        default=["before", "after", "after-arrays"],
        help="after-arrays: the profile installed with --arrays",
    )
    p.add_argument("--jobs", default="100", help="--jobs (>= the shards of a night: see README, job arrays)")
    p.add_argument("--cap-s", type=int, default=900, help="stop a night after this many seconds (SIGINT)")
    p.add_argument("--work", type=Path, default=Path("/tmp/wormflow-slurm-night"))
    p.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    p.add_argument("--render", action="store_true", help="only rewrite OUT.md from OUT.json")
    args = p.parse_args()
    if args.render:
        runs = json.loads(args.out.with_suffix(".json").read_text())["runs"]
        write(args.out, runs[:-1], runs[-1]["results"], runs[-1]["command"].split()[1:])
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "data"
    if not (data / "labeled").exists():
        sh([sys.executable, "-m", "wormflow.cli", "demo-data", data], env=env_for(REPO), stdout=subprocess.DEVNULL)
    checkouts = {"before": args.before.resolve(), "after": REPO, "after-arrays": REPO}
    trained = {side: setup(side.split("-")[0], checkouts[side], args.work, data) for side in args.sides}
    previous = (
        json.loads(args.out.with_suffix(".json").read_text())["runs"]
        if args.out and args.out.with_suffix(".json").exists()
        else []
    )
    results = []
    for n in args.batches:
        for side in args.sides:
            results.append(night(side, checkouts[side], trained[side], data, n, args.images, args.work, args))
            if args.out:
                write(args.out, previous, results, sys.argv)
    return 0


def write(out: Path, previous: list[dict], results: list[dict], argv: list[str]) -> None:
    """OUT.json/.md: earlier invocations' runs (same OUT) first, then this one's."""
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = [*previous, {"command": "python " + " ".join(argv), "results": results}]
    out.with_suffix(".json").write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    results = [r for run in runs for r in run["results"]]
    command = "\n    ".join(run["command"] for run in runs)
    rows = [
        "| batches | side | SLURM jobs (completed) | sbatch calls | jobs by rule | wall time (s) | outcome |",
        "|---:|---|---:|---:|---|---:|---|",
    ]
    for r in results:
        outcome = "report written" if r["report"] else ("CAPPED" if r["capped"] else f"exit {r['exit']}")
        by_rule = ", ".join(
            f"{k if k not in (None, 'null') else 'no comment (cancelled)'} {v}"
            for k, v in sorted(r["jobs_by_rule"].items(), key=lambda kv: str(kv[0]))
        )
        rows.append(
            f"| {r['batches']} | {r['side']} | {r['slurm_jobs']} ({r['completed']}) | {r['sbatch_calls']} | {by_rule} | {r['wall_s']} | {outcome} |"
        )
    cmds = "\n".join(f"    # {r['side']}, {r['batches']} batches\n    {r['command']}" for r in results)
    out.with_suffix(".md").write_text(
        f"# A night on the local SLURM cluster: before vs after\n\nProduced by\n\n    {command}\n\n"
        + "\n".join(rows)
        + f"\n\nThe snakemake commands (run in each night's workdir):\n\n{cmds}\n"
    )


if __name__ == "__main__":
    sys.exit(main())
