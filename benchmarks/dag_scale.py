#!/usr/bin/env python3
"""How Snakemake's own work grows with the number of batches and images: ``snakemake -n`` time and memory.

    python benchmarks/dag_scale.py [--json out.json]

Generates batch trees (every image a hard link to one small PNG: a dry run
must not open images, so their content is irrelevant and the trees cost
no disk), then times ``snakemake -n`` in two states:

* ``fresh``: no results yet — the DAG up to the per-batch manifest
  checkpoints (what a night with only new batches sees);
* ``manifested``: every batch's manifest already written (by the workflow's
  own ``manifest_step``), so the dry run expands every shard, decode, score
  and gather job — the full DAG a later night evaluates.

Peak memory is the child's maximum resident set size (``getrusage``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The real data beside the repository, else the in-repository test subset (same layout): a DAG's size
# does not depend on which; only one sample image and the labeled tree are used.
FULL_DATA = REPO.parent / "shared" / "data" / "bbbc010"
DATA = FULL_DATA if (FULL_DATA / "batches").is_dir() else REPO / "tests" / "data" / "bbbc010"
SAMPLE = next((DATA / "batches").glob("*/*.png"), None)


LINKS_PER_COPY = 50_000  # a file takes at most 65,000 hard links on ext4 and overlayfs


def make_tree(root: Path, n_batches: int, per_batch: int, sample: Path) -> None:
    """Batch directories whose images are hard links to copies of ``sample`` (a new copy every
    :data:`LINKS_PER_COPY` links), beside ``root``, not in it."""
    copies = root.parent / "samples"
    copies.mkdir(parents=True, exist_ok=True)
    n = 0
    for b in range(n_batches):
        d = root / f"night-{b:05d}"
        d.mkdir(parents=True)
        for i in range(per_batch):
            target = copies / f"sample-{n // LINKS_PER_COPY}.png"
            if n % LINKS_PER_COPY == 0:
                shutil.copyfile(sample, target)
            os.link(target, d / f"img_{i:06d}.png")
            n += 1


def write_manifests(work: Path, batches_root: Path, shard_size: int) -> None:
    from wormflow.pipeline import manifest_step

    for d in sorted(batches_root.iterdir()):
        manifest_step(str(d), str(work / "results" / "batches" / d.name / "manifest.json"), labeled=False, shard_size=shard_size)


def dry_run(work: Path, overlay: Path) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "-n",
        "--quiet",
        "rules",
        "--cores",
        "2",
        "--configfile",
        str(overlay),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    jobs = 0
    for line in (proc.stdout + proc.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            jobs = int(parts[1])
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: measure each case in a fresh process
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(max(peak_kb, before) / 1024, 1), "jobs": jobs}


def case(n_batches: int, per_batch: int, shard_size: int, sample: Path, labeled: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="wormflow-dag-") as tmp:
        tmp = Path(tmp)
        batches = tmp / "batches"
        t0 = time.perf_counter()
        make_tree(batches, n_batches, per_batch, sample)
        made = time.perf_counter() - t0
        overlay = tmp / "overlay.yaml"
        overlay.write_text(f"data:\n  labeled: {labeled}\n  batches: {batches}\nshard_size: {shard_size}\n")
        work = tmp / "work"
        work.mkdir()
        fresh = _isolated(dry_run, work, overlay)
        write_manifests(work, batches, shard_size)
        full = _isolated(dry_run, work, overlay)
    return {
        "batches": n_batches,
        "images_per_batch": per_batch,
        "images": n_batches * per_batch,
        "shard_size": shard_size,
        "tree_seconds": round(made, 1),
        "fresh": fresh,
        "manifested": full,
    }


def _isolated(fn, *args):
    """Run ``fn`` in a forked child so that each case's peak RSS is its own."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            payload = json.dumps(fn(*args)).encode()
        except Exception as exc:  # report, do not hide
            payload = json.dumps({"error": str(exc)[-2000:]}).encode()
        os.write(w, payload)
        os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 1 << 16):
        chunks.append(chunk)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--cases", nargs="+", default=["100x100", "300x100", "1000x100", "1x10000", "1x30000", "1x100000"], help="BATCHESxIMAGES"
    )
    p.add_argument("--shard-size", type=int, default=None, help="default: config.yaml's")
    p.add_argument("--labeled", default=str(DATA / "labeled"))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if SAMPLE is None:
        raise SystemExit(f"needs one sample PNG from {DATA / 'batches'}")
    from wormflow.config import load_config

    shard = args.shard_size or load_config()["shard_size"]
    out = {
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(), "snakemake": _snakemake_version()},
        "command": " ".join(sys.argv),
        "cases": [],
    }
    for spec in args.cases:
        nb, per = map(int, spec.split("x"))
        res = case(nb, per, shard, SAMPLE, args.labeled)
        res["loadavg_1min_after"] = round(os.getloadavg()[0], 2)  # other work on the machine while it ran
        out["cases"].append(res)
        print(json.dumps(res), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


def _snakemake_version() -> str:
    try:
        import snakemake

        return snakemake.__version__
    except Exception:
        return "unknown"


if __name__ == "__main__":
    main()
