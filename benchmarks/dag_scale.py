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

``--year`` (issue 14.3, constant nightly cost) compares a night with one new batch of
``--year-images`` images and no history ("one batch") with the same night after a year
("year": ``--year-days`` batches of as many images already processed and sealed).  For each it
measures the ``snakemake -n`` of the night (fresh: before the new batch's manifest; manifested:
after it), the ledger step (what the ``ledger`` rule runs: append to the previous ledger, then seal
the new batch, which lists and compares its files) and the report step.  What is synthetic in the
year's history (said in the results): every sealed batch's directory holds only
``--sealed-files-on-disk`` hard links (a sealed batch's files are never listed, which the measured
night shows); its manifest (a real 10,000-entry manifest, hard-linked), scores.h5 (a placeholder)
and thumbnails are stand-ins; its summary.json is a full summary of 10,000 images (four methods,
quantiles, KS, agreement, job times, 20 quarantined files) and its seal is written by
``wormflow.seal.write_seal`` from the files as they lie.  The models are stand-in files (a model
that exists is used as it is; its sidecar is read).  The new batch is real: hard links to a sample
PNG, its manifest written by ``manifest_step``.
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


# --------------------------------------------------------------------------- a year of nights (issue 14.3)

YEAR_METHODS = ("vae", "gan", "resnet50", "dark_pixels")


def _summary(batch: str, n: int, shard_size: int, manifest_digest: str, seed: int) -> dict:
    """A summary.json as summarize writes it for a batch of ``n`` single images (numbers made up, shapes real)."""
    import random

    rng = random.Random(seed)
    n_q = min(20, n)
    n_shards = max(1, -(-n // shard_size))
    methods = {
        m: {
            "flagged_share": rng.random(),
            "quantiles": {f"q{q:02d}": rng.random() for q in (5, 25, 50, 75, 95)},
            "ks": rng.random() / 2,
            "drift": False,
            "threshold": rng.random(),
            "checkpoint_sha256": "0" * 64,
        }
        for m in YEAR_METHODS
    }
    pairs = {f"{a}-{b}": rng.random() for i, a in enumerate(YEAR_METHODS) for b in YEAR_METHODS[i + 1 :]}
    jobs = {
        "decode_shard": [rng.uniform(20, 60) for _ in range(n_shards)],
        "score_shard": [rng.uniform(60, 200) for _ in range(n_shards)],
        "gather": [rng.uniform(2, 10)],
    }
    return {
        "batch": batch,
        "status": "ok",
        "n_files": n,
        "n_scored": n - n_q,
        "n_quarantined": n_q,
        "n_shards": n_shards,
        "gathered_utc": "2026-12-03T00:00:00Z",
        "summarized_utc": "2026-12-03T00:00:01Z",
        "manifest_digest": manifest_digest,
        "methods": methods,
        "drift": False,
        "agreement": {"all": rng.random(), "pairs": pairs, "n": n - n_q},
        "processing_s": round(sum(sum(v) for v in jobs.values()), 2),
        "jobs": jobs,
        "quarantine": [{"id": f"img_{i:06d}.png", "stage": "decode", "reason": "truncated image"} for i in range(n_q)],
    }


def _fake_models(work: Path, config: dict) -> dict[str, str]:
    """Stand-in model files (a model that exists is used as it is): ``{method: model.pt}`` of the primary seed."""
    from wormflow import paths as P
    from wormflow.workflow import enabled_methods, method_seeds

    seeds = [int(s) for s in config["training"]["seeds"]]
    primary = {}
    for m in enabled_methods(config):
        for s in method_seeds(m, seeds):
            model = work / P.model(m, s)
            model.parent.mkdir(parents=True, exist_ok=True)
            model.write_bytes(b"stand-in")
            model.with_name("model.json").write_text(json.dumps({"method": m, "seed": s}))
        primary[m] = P.model(m, seeds[0])
    return primary


def make_year(
    work: Path, batches: Path, n_days: int, per_batch: int, on_disk: int, shard_size: int, sample: Path, config: dict
) -> dict:
    """``n_days`` sealed batches as a year of nights leaves them (see the module doc: what is synthetic),
    the ledger that the last of those nights wrote, and the stand-in models."""
    from wormflow import paths as P
    from wormflow import seal
    from wormflow.inventory import Manifest
    from wormflow.ledger import ledger_step
    from wormflow.pipeline import manifest_step
    from wormflow.workflow import enabled_methods

    cwd = os.getcwd()
    os.chdir(work)
    try:
        models = _fake_models(work, config)
        scoring = seal.scoring_config(config, enabled_methods(config), int(config["training"]["seeds"][0]))
        ident = seal.identity(scoring, models)
        # one real manifest of per_batch images, hard-linked as every sealed batch's (never read for a sealed batch)
        template_dir = work.parent / "template-batch"
        make_tree(template_dir, 1, per_batch, sample)
        template = work / "template-manifest.json"
        manifest_step(str(template_dir / "night-00000"), str(template), labeled=False, shard_size=shard_size)
        manifest = Manifest.read(template)
        digest = manifest.content_digest()
        placeholder = work / "placeholder-scores.h5"
        placeholder.write_bytes(b"\0" * 4096)
        copies = batches.parent / "samples"
        for d in range(n_days):
            b = f"night-{d:05d}"
            bdir = batches / b
            bdir.mkdir(parents=True)
            for i in range(on_disk):
                os.link(copies / "sample-0.png", bdir / f"img_{i:06d}.png")
            coll = P.batch_collection(b)
            Path(P.manifest(coll)).parent.mkdir(parents=True, exist_ok=True)
            os.link(template, P.manifest(coll))
            os.link(placeholder, P.scores(coll))
            Path(P.thumbnails(b)).write_text('{"size": null, "wells": {}}')
            Path(P.summary(b)).write_text(json.dumps(_summary(b, per_batch, shard_size, digest, d), indent=1))
            seal.write_seal(b, seal.dir_states(bdir), manifest, seal.output_records(b), ident)
        days = [f"night-{d:05d}" for d in range(n_days)]
        seal_params = {"root": str(batches), "scoring": scoring, "models": models, "recheck": False, "drop_stores": False}
        ledger_step([P.summary(b) for b in days], [], {}, None, P.LEDGER_TSV, P.LEDGER_JSON, seal=seal_params)
    finally:
        os.chdir(cwd)
    return {"seal": seal_params, "days": days}


def write_new_results(work: Path, name: str, per_batch: int, shard_size: int, digest: str) -> None:
    """What the night's gather and summarize would leave for the new batch (stand-ins, as for the history)."""
    from wormflow import paths as P

    cwd = os.getcwd()
    os.chdir(work)
    try:
        Path(P.scores(P.batch_collection(name))).write_bytes(b"\0" * 4096)
        Path(P.thumbnails(name)).write_text('{"size": null, "wells": {}}')
        Path(P.summary(name)).write_text(json.dumps(_summary(name, per_batch, shard_size, digest, 99999), indent=1))
    finally:
        os.chdir(cwd)


def _step(work: Path, code: str) -> dict:
    """Time one step in a fresh Python (its own peak RSS), run in ``work``."""
    cmd = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); " + code]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}


def ledger_and_report(work: Path, seal_params: dict, batches: list[str], detail: int | None) -> dict:
    from wormflow import paths as P

    summaries = [P.summary(b) for b in batches]
    ledger = (
        "from wormflow.ledger import ledger_step; "
        f"ledger_step({summaries!r}, [], {{}}, None, {P.LEDGER_TSV!r}, {P.LEDGER_JSON!r}, seal={seal_params!r})"
    )
    report = (
        "from wormflow.config import load_config; from wormflow.report import report_step; "
        f"c = load_config(); c['retention']['report_detail_batches'] = {detail!r}; "
        f"report_step(metrics_path={P.METRICS_JSON!r}, gallery_path={P.GALLERY!r}, ledger_path={P.LEDGER_JSON!r}, "
        f"methods={list(YEAR_METHODS)!r}, config=c, out_html={P.REPORT_HTML!r}, out_json={P.REPORT_JSON!r})"
    )
    out = {"ledger": _isolated(_step, work, ledger), "report": _isolated(_step, work, report)}
    out["report"]["html_kb"] = round((work / P.REPORT_HTML).stat().st_size / 1024, 1)
    return out


def year_case(n_days: int, per_batch: int, on_disk: int, shard_size: int, sample: Path, labeled: str, detail: int | None) -> dict:
    """One batch without history against the same batch after ``n_days`` sealed nights."""
    from wormflow.config import load_config

    config = load_config()
    config["shard_size"] = shard_size
    out = {}
    for name, days in (("one_batch", 0), ("year", n_days)):
        with tempfile.TemporaryDirectory(prefix="wormflow-year-") as tmp:
            tmp = Path(tmp)
            batches = tmp / "batches"
            batches.mkdir()
            work = tmp / "work"
            work.mkdir()
            overlay = tmp / "overlay.yaml"
            overlay.write_text(
                f"data:\n  labeled: {labeled}\n  batches: {batches}\n  settle_minutes: 0\nshard_size: {shard_size}\n"
            )
            t0 = time.perf_counter()
            (tmp / "samples").mkdir()
            shutil.copyfile(sample, tmp / "samples" / "sample-0.png")
            if days:
                history = make_year(work, batches, days, per_batch, on_disk, shard_size, sample, config)
            else:
                history = {"seal": None, "days": []}
                _fake_models(work, config)
            made = time.perf_counter() - t0
            new = "night-99999"
            res = {"history_batches": days, "tree_seconds": round(made, 1)}
            # the night's DAG before the new batch's manifest exists, then after it
            new_tree = tmp / "new-tree"
            make_tree(new_tree, 1, per_batch, sample)
            (new_tree / "night-00000").rename(batches / new)
            res["fresh"] = _isolated(dry_run, work, overlay)
            digest = _manifest_new(work, batches / new, new, shard_size)
            res["manifested"] = _isolated(dry_run, work, overlay)
            write_new_results(work, new, per_batch, shard_size, digest)
            from wormflow import paths as P
            from wormflow.seal import scoring_config
            from wormflow.workflow import enabled_methods

            seal_params = history["seal"] or {
                "root": str(batches),
                "scoring": scoring_config(config, enabled_methods(config), int(config["training"]["seeds"][0])),
                "models": {m: P.model(m, config["training"]["seeds"][0]) for m in enabled_methods(config)},
                "recheck": False,
                "drop_stores": False,
            }
            res.update(ledger_and_report(work, seal_params, [*history["days"], new], detail))
            res["new_batch_sealed"] = (work / P.seal(new)).is_file()
            out[name] = res
            print(json.dumps({name: res}), flush=True)
    ratios = {}
    for key in ("fresh", "manifested", "ledger", "report"):
        for metric in ("seconds", "peak_rss_mb"):
            base = out["one_batch"][key][metric]
            ratios[f"{key}_{metric}"] = round(out["year"][key][metric] / base, 2) if base else None
    worst_s = max(out["year"][k]["seconds"] for k in ("fresh", "manifested", "ledger", "report"))
    worst_mb = max(out["year"][k]["peak_rss_mb"] for k in ("fresh", "manifested", "ledger", "report"))
    goal = {
        "under_60_s": worst_s < 60,
        "under_2_gb": worst_mb < 2048,
        "within_2x_of_one_batch": all(r is not None and r <= 2 for r in ratios.values()),
    }
    return {
        "days": n_days,
        "images_per_batch": per_batch,
        "sealed_files_on_disk": on_disk,
        "report_detail_batches": detail,
        "shard_size": shard_size,
        "cases": out,
        "year_over_one_batch": ratios,
        "goal": goal,
    }


def _manifest_new(work: Path, root: Path, name: str, shard_size: int) -> str:
    from wormflow import paths as P
    from wormflow.inventory import Manifest
    from wormflow.pipeline import manifest_step

    out = work / P.manifest(P.batch_collection(name))
    manifest_step(str(root), str(out), labeled=False, shard_size=shard_size)
    return Manifest.read(out).content_digest()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--cases", nargs="+", default=["100x100", "300x100", "1000x100", "1x10000", "1x30000", "1x100000"], help="BATCHESxIMAGES"
    )
    p.add_argument("--shard-size", type=int, default=None, help="default: config.yaml's")
    p.add_argument("--labeled", default=str(DATA / "labeled"))
    p.add_argument("--json", default=None)
    p.add_argument("--year", action="store_true", help="only the year case (issue 14.3), see the module doc")
    p.add_argument("--year-days", type=int, default=365)
    p.add_argument("--year-images", type=int, default=10_000)
    p.add_argument("--sealed-files-on-disk", type=int, default=100, help="hard links in each sealed batch's directory")
    p.add_argument("--report-detail-batches", type=int, default=30, help="retention.report_detail_batches of the report step")
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
    if args.year:
        out["year"] = year_case(
            args.year_days, args.year_images, args.sealed_files_on_disk, shard, SAMPLE, args.labeled, args.report_detail_batches
        )
        out["year"]["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
        args.cases = []
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
