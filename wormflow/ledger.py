"""The batch ledger, ``results/batches.tsv``: one row per imaging batch.

Per batch: files found, scored and quarantined; per method the flagged
share (images predicted ``wormed``), score quantiles and the drift of the
batch's score distribution against the dev split's (two-sample
Kolmogorov–Smirnov statistic; the dev scores travel in each model
artifact), marked when above ``drift.ks_max``; and the processing time
(the sum of the batch's decode, score and gather jobs from Snakemake's
``benchmark:`` files).  Batch directories whose names cannot be used are
listed with status ``rejected``.
"""

from __future__ import annotations

import csv
import glob
import io
import os

import numpy as np
from scipy.stats import ks_2samp

from .atomic import atomic_write_text
from .inventory import Manifest
from .store import open_complete

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def benchmark_seconds(bench_root: str, batch: str) -> float:
    """Sum of wall-clock seconds in the batch's benchmark files (decode, score, gather)."""
    total = 0.0
    pattern = os.path.join(glob.escape(bench_root), "*", "batches", glob.escape(batch), "**", "*.tsv")
    files = glob.glob(pattern, recursive=True)
    files += glob.glob(os.path.join(glob.escape(bench_root), "gather", "batches", glob.escape(batch) + ".tsv"))
    for path in sorted(set(files)):
        with open(path) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows:
            total += float(rows[-1].get("s", 0) or 0)
    return total


def batch_row(
    batch: str, scores_path: str, manifest_path: str, dev_scores: dict, methods: list[str], ks_max: float, bench_root: str
) -> dict:
    manifest = Manifest.read(manifest_path)
    row: dict = {"batch": batch, "status": "ok", "n_files": len(manifest.entries)}
    with open_complete(scores_path, "wormflow-batch") as f:
        row["n_scored"] = int(f.attrs["n_scored"])
        row["n_quarantined"] = int(f.attrs["n_quarantined"])
        row["gathered_utc"] = str(f.attrs["created_utc"])
        for m in methods:
            _method_columns(row, m, f[m], dev_scores.get(m), ks_max)
    if row["n_scored"] + row["n_quarantined"] != row["n_files"]:
        row["status"] = "count mismatch"
    elif row["n_scored"] == 0:
        row["status"] = "empty" if row["n_files"] == 0 else "nothing scorable"
    row["drift_flag"] = any(row.get(f"{m}_drift", False) for m in methods)
    row["processing_s"] = round(benchmark_seconds(bench_root, batch), 2)
    return row


def _method_columns(row: dict, method: str, grp, dev, ks_max: float) -> None:
    scores = grp["score"][()].astype(np.float64)
    pred = grp["pred"][()]
    row[f"{method}_flagged_share"] = round(float(pred.mean()), 4) if len(pred) else float("nan")
    for q in QUANTILES:
        row[f"{method}_q{int(q * 100):02d}"] = round(float(np.quantile(scores, q)), 5) if len(scores) else float("nan")
    if dev is not None and len(scores) and len(dev):
        ks = float(ks_2samp(scores, np.asarray(dev, dtype=np.float64)).statistic)
        row[f"{method}_ks"] = round(ks, 4)
        row[f"{method}_drift"] = ks > ks_max
    else:
        row[f"{method}_ks"] = float("nan")
        row[f"{method}_drift"] = False


def ledger_step(
    batches: list[str],
    scores_paths: list[str],
    manifest_paths: list[str],
    model_paths: list[str],
    methods: list[str],
    rejected: list[str],
    ks_max: float,
    bench_root: str,
    out: str,
) -> list[dict]:
    from .artifact import load_artifact

    dev_scores = {}
    for m, p in zip(methods, model_paths):
        dev_scores[m] = load_artifact(p)["dev_scores"]
    rows = [
        batch_row(b, s, mf, dev_scores, methods, ks_max, bench_root) for b, s, mf in zip(batches, scores_paths, manifest_paths)
    ]
    rows += [{"batch": name, "status": "rejected: unusable directory name"} for name in rejected]
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys or ["batch"], delimiter="\t", restval="")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out, buf.getvalue())
    return rows


def read_ledger(path: str) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh, delimiter="\t"))
