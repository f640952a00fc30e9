"""The batch ledger: what happened to every imaging batch, computed once, shown every morning.

Two steps own every per-batch statistic (the report only displays them):

* :func:`summarize_batch_step` — once per batch, after its gather: ``batches/<b>/summary.json``
  with the batch's row (files found, scored and quarantined; per method the flagged share,
  score quantiles and the drift of the score distribution against the dev split's — two-sample
  Kolmogorov–Smirnov, the dev scores travel in each model's sidecar — marked above
  ``drift.ks_max``; the methods' agreement; the processing time from Snakemake's benchmark
  files), its quarantine list and the per-stage job times.
* :func:`ledger_step` — every run: ``batches.tsv`` (one row per batch, for people and
  spreadsheets) and ``ledger.json`` (rows, quarantine lists, rejected directories, job-time
  summary: what the report reads) from the summaries, plus the directories that are not usable
  batches (status ``rejected``).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Mapping, Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import ks_2samp

from . import paths
from .artifact import read_sidecar
from .atomic import atomic_write_text
from .inventory import Manifest
from .scorefile import read_score_file
from .store import reading, utc_now

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SCORED_STAGES = ("decode_shard", "score_shard", "gather")


def pair_key(a: str, b: str) -> str:
    """The name of a method pair in the agreement columns (``vae-gan``)."""
    return f"{a}-{b}"


def agreement(preds: Mapping[str, np.ndarray]) -> dict:
    """Share of images on which all methods agree, and every pair's agreement (images all methods scored)."""
    names = list(preds)
    if len(names) < 2:
        return {"all": None, "pairs": {}, "n": 0}
    stack = np.vstack([np.asarray(preds[m], dtype=np.float64) for m in names])
    ok = np.isfinite(stack).all(axis=0)
    n = int(ok.sum())
    if n == 0:
        return {"all": None, "pairs": {pair_key(a, b): None for a, b in combinations(names, 2)}, "n": 0}
    s = stack[:, ok]
    pairs = {pair_key(a, b): float((s[i] == s[j]).mean()) for (i, a), (j, b) in combinations(enumerate(names), 2)}
    return {"all": float((s == s[0]).all(axis=0).mean()), "pairs": pairs, "n": n}


def benchmark_seconds(path: str | Path) -> float | None:
    """Wall-clock seconds of one Snakemake ``benchmark:`` file (None when missing or unreadable)."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        return float(rows[-1]["s"]) if rows else None
    except (OSError, KeyError, ValueError, csv.Error):
        return None


def collection_job_seconds(coll: str, n_shards: int) -> dict[str, list[float]]:
    """Seconds of each job of a collection, by rule (decode and score per shard, gather once)."""
    files = {
        "decode_shard": [paths.benchmark("decode_shard", coll, k) for k in range(n_shards)],
        "score_shard": [paths.benchmark("score_shard", coll, k) for k in range(n_shards)],
        "gather": [paths.benchmark("gather", coll)],
    }
    return {rule: [s for s in map(benchmark_seconds, fs) if s is not None] for rule, fs in files.items()}


def _method_stats(scores: np.ndarray, pred: np.ndarray, dev: Sequence[float] | None, ks_max: float) -> dict:
    scores, pred = scores[np.isfinite(scores)], pred[np.isfinite(pred)]
    stats: dict = {
        "flagged_share": float(pred.mean()) if len(pred) else None,
        "quantiles": {f"q{int(q * 100):02d}": float(np.quantile(scores, q)) for q in QUANTILES} if len(scores) else {},
        "ks": None,
        "drift": False,
    }
    if dev is not None and len(scores) and len(dev):
        stats["ks"] = float(ks_2samp(scores, np.asarray(dev, dtype=np.float64)).statistic)
        stats["drift"] = stats["ks"] > ks_max
    return stats


def batch_status(n_files: int, n_scored: int, n_quarantined: int) -> str:
    if n_scored + n_quarantined != n_files:
        return "count mismatch"
    if n_scored == 0:
        return "empty" if n_files == 0 else "nothing scorable"
    return "ok"


def summarize_batch_step(
    batch: str,
    scores_path: str,
    manifest_path: str,
    model_paths: Mapping[str, str],
    ks_max: float,
    out: str,
    *,
    thumbnails_out: str | None = None,
    field_pattern: str | None = None,
    thumbnail_width: int = 160,
) -> dict:
    """Write ``summary.json`` of one gathered batch (see module doc) and, with ``thumbnails_out``, the
    thumbnails of its fields; return the summary.

    A batch's *units* are its single images and its fields: the flagged share and the agreement
    count units (a field is flagged when one of its tiles is); the score quantiles and the drift
    against the dev patches use the single images' scores and the fields' counted tiles (tiles
    are cut like the patches the dev scores come from).
    """
    from .fieldsummary import fields_summary, thumbnails
    from .scorefields import files_of, read_field_scores

    with reading(manifest_path):
        manifest = Manifest.read(manifest_path)
    with reading(scores_path):
        sf = read_score_file(scores_path, list(model_paths))
        fs = read_field_scores(scores_path, list(model_paths))
    n_files, n_quarantined = len(manifest.entries), len(sf.quarantine)
    n_scored = len(sf.ids) + files_of(fs)
    methods, preds = {}, {}
    for m, model_path in model_paths.items():
        dev = (read_sidecar(model_path) or {}).get("dev_scores")
        scores, pred = sf.score[m], sf.pred[m]
        if m in fs.methods:
            tiles = fs.methods[m].tiles
            scores = np.concatenate([scores, tiles["score"][tiles["in_area"] == 1].astype(np.float64)])
            pred = np.concatenate([pred, fs.methods[m].units["pred"].astype(np.float64)])
        preds[m] = pred
        threshold = sf.threshold[m] if np.isfinite(sf.threshold[m]) else None  # None: an empty batch has no scores
        methods[m] = {**_method_stats(scores, pred, dev, ks_max), "threshold": threshold}
        methods[m]["checkpoint_sha256"] = sf.method_attrs[m].get("checkpoint_sha256")
    jobs = collection_job_seconds(paths.batch_collection(batch), manifest.n_shards)
    summary = {
        "batch": batch,
        "status": batch_status(n_files, n_scored, n_quarantined),
        "n_files": n_files,
        "n_scored": n_scored,
        "n_quarantined": n_quarantined,
        "n_shards": manifest.n_shards,
        "gathered_utc": sf.attrs.get("created_utc", ""),
        "summarized_utc": utc_now(),
        "manifest_digest": sf.attrs.get("manifest_digest", ""),
        "methods": methods,
        "drift": any(s["drift"] for s in methods.values()),
        "agreement": agreement(preds),
        "processing_s": round(sum(sum(v) for v in jobs.values()), 2),
        "jobs": jobs,
        "quarantine": sf.quarantine,
    }
    fields = fields_summary(fs, list(model_paths), sf.quarantine, field_pattern)
    if fields is not None:
        summary["fields"] = fields
    if thumbnails_out is not None:
        with reading(scores_path):
            thumbs = thumbnails(fs, list(model_paths), thumbnail_width)
        atomic_write_text(thumbnails_out, json.dumps(thumbs))
    atomic_write_text(out, json.dumps(summary, indent=1, allow_nan=False))
    return summary


# --------------------------------------------------------------------------- the ledger


def _tsv_row(s: dict) -> dict:
    row = {k: s.get(k, "") for k in ("batch", "status", "n_files", "n_scored", "n_quarantined")}
    for m, st in s.get("methods", {}).items():
        row[f"{m}_flagged_share"] = _round(st.get("flagged_share"), 4)
        for q, v in st.get("quantiles", {}).items():
            row[f"{m}_{q}"] = _round(v, 5)
        row[f"{m}_ks"] = _round(st.get("ks"), 4)
        row[f"{m}_drift"] = st.get("drift", False)
    if "drift" in s:
        row["drift_flag"] = s["drift"]
    for k in ("processing_s", "gathered_utc"):
        if k in s:
            row[k] = s[k]
    return row


def _round(value, digits: int):
    return "" if value is None else round(float(value), digits)


def training_job_seconds(models: Mapping[str, Sequence[int]]) -> dict[str, list[float]]:
    """Seconds of the training jobs, by method."""
    out = {}
    for method, seeds in models.items():
        secs = [benchmark_seconds(paths.benchmark("train", method, f"seed{s}")) for s in seeds]
        out[method] = [s for s in secs if s is not None]
    return out


def job_time_summary(summaries: Sequence[dict], test_jobs: Mapping[str, list[float]], n_test: int, training) -> list[dict]:
    """Per stage: jobs, median / max / total seconds and images per second (over the collections it knows)."""
    out = []
    for method, secs in training.items():
        if secs:
            out.append(_stage_row("train", method, secs, None))
    for stage in SCORED_STAGES:
        secs, images = [], 0
        for jobs, n in [*((s.get("jobs", {}), s.get("n_scored", 0)) for s in summaries), (test_jobs, n_test)]:
            if jobs.get(stage):
                secs += jobs[stage]
                images += n
        if secs:
            out.append(_stage_row(stage, "", secs, images / sum(secs) if sum(secs) > 0 and images else None))
    return out


def _stage_row(stage: str, method: str, secs: list[float], rate: float | None) -> dict:
    return {
        "stage": stage,
        "method": method,
        "n_files": len(secs),
        "median_s": statistics.median(secs),
        "max_s": max(secs),
        "total_s": sum(secs),
        "images_per_s": rate,
    }


def retraining_pending(training: Mapping | None) -> list[dict]:
    """Models in use whose training data, config section, threshold rule or code changed since they were trained.

    ``training``: ``{"models": {method: {seed: model.pt}}, "sections": {method: config section},
    "code": {method: code digest}, "manifests": {"train": path, "dev": path}}``, optionally with
    ``"calibration"`` (the config's section: how the dev threshold is chosen).  A model is used
    as it is until retraining is asked for (``retrain`` in the config, ``wormflow retrain``); this
    says which ones would change and why.
    """
    if not training:
        return []
    from .digest import json_digest
    from .workflow import manifest_summary

    manifests = training.get("manifests", {})
    data = None
    if all(Path(p).is_file() for p in manifests.values()) and manifests:
        data = json_digest({s: manifest_summary(p)["data_digest"] for s, p in sorted(manifests.items())})
    pending = []
    for method, seeds in training["models"].items():
        for seed, path in seeds.items():
            trained = read_sidecar(path)
            if trained is None:
                continue  # no model yet: this run trains it
            reasons = []
            if trained.get("data_digest") and data and trained["data_digest"] != data:
                reasons.append("training data changed (labeled train/dev content)")
            if trained.get("config_hash") != json_digest(training["sections"][method]):
                reasons.append(f"config section methods.{method} changed")
            if (changed := _calibration_change(trained, training.get("calibration"))) is not None:
                reasons.append(changed)
            if trained.get("code_digest") and trained["code_digest"] != training["code"][method]:
                reasons.append("the code it depends on changed")
            if reasons:
                pending.append({"method": method, "seed": int(seed), "model": str(path), "reasons": reasons})
    return pending


def _calibration_change(trained: Mapping, calibration: Mapping | None) -> str | None:
    """Why a model's threshold would differ under the configured threshold rule (None: it would not).

    Models from before the rule was configurable carry no record and were calibrated by ``f1max``."""
    if calibration is None:
        return None
    from .decision import DEFAULT_THRESHOLD_RULE, N_BOOT

    had = (trained.get("extra") or {}).get("calibration") or {"threshold_rule": "f1max"}
    rule, n_boot = calibration.get("threshold_rule", DEFAULT_THRESHOLD_RULE), int(calibration.get("n_boot", N_BOOT))
    if had.get("threshold_rule") != rule:
        return f"threshold rule changed ({had.get('threshold_rule')} → {rule}, calibration.threshold_rule)"
    if rule == "robust" and had.get("n_boot") != n_boot:
        return f"bootstrap resamples of the robust threshold rule changed ({had.get('n_boot')} → {n_boot}, calibration.n_boot)"
    return None


def ledger_step(
    summary_paths: Sequence[str],
    rejected: Sequence[tuple[str, str]],
    models: Mapping[str, Sequence[int]],
    test_manifest: str | None,
    out_tsv: str,
    out_json: str,
    *,
    deferred: Sequence[tuple[str, str]] = (),
    failed: Sequence[dict] = (),
    training: Mapping | None = None,
    problems: Sequence[str] = (),
    seal: Mapping | None = None,
) -> dict:
    """Write ``batches.tsv`` and ``ledger.json`` from the batch summaries (sorted by batch name = date),
    the batches that failed tonight (``failed``: rows with the failing rule, shard and log), were
    deferred or rejected, and the models whose retraining is pending.

    With ``seal`` (``{"root": batches root, "scoring": ..., "models": {method: model.pt}, "recheck": bool,
    "drop_stores": bool}``, see :mod:`wormflow.seal`) the ledger *appends*: a sealed batch's row is taken
    from the previous ``ledger.json`` when the seal vouches for the very summary that row was read from
    (its sha256), so only new and changed summaries are read; then every batch not sealed yet is sealed
    (and its shard stores dropped with ``drop_stores``).  A missing or damaged ledger, or ``recheck``,
    reads every summary: the result is the same either way (test_sealing)."""
    summaries, digests = _read_summaries(summary_paths, out_json, seal)
    not_processed = [
        *({"batch": name, "status": f"rejected: {reason}", "kind": "rejected"} for name, reason in rejected),
        *({"batch": name, "status": reason, "kind": "deferred"} for name, reason in deferred),
        *({**row, "kind": "failed"} for row in failed),
    ]
    test_jobs, n_test = {}, 0
    if test_manifest and Path(test_manifest).is_file():
        manifest = Manifest.read(test_manifest)
        test_jobs, n_test = collection_job_seconds(paths.TEST, manifest.n_shards), len(manifest.candidates)
    ledger = {
        "generated_utc": utc_now(),
        "batches": summaries,
        "not_processed": sorted(not_processed, key=lambda r: r["batch"]),
        "retraining_pending": retraining_pending(training),
        "problems": list(problems),
        "job_times": job_time_summary(summaries, test_jobs, n_test, training_job_seconds(models)),
        "summary_sha256": digests,
    }
    rows = [_tsv_row(s) for s in summaries] + [{k: v for k, v in r.items() if k != "kind"} for r in ledger["not_processed"]]
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys or ["batch"], delimiter="\t", restval="")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out_tsv, buf.getvalue())
    atomic_write_text(out_json, json.dumps(ledger, indent=1, allow_nan=False))
    if seal is not None:
        seal_complete_batches([s["batch"] for s in summaries], seal)
    return ledger


def _summary_batch(path: str) -> str:
    return Path(path).parent.name  # results/batches/<batch>/summary.json


def _previous_rows(out_json: str) -> dict[str, tuple[dict, str]]:
    """``{batch: (summary, sha256)}`` of the previous ledger (empty when it is missing or damaged)."""
    try:
        data = json.loads(Path(out_json).read_text(encoding="utf-8"))
        digests = data["summary_sha256"]
        return {s["batch"]: (s, digests[s["batch"]]) for s in data["batches"] if s["batch"] in digests}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _read_summaries(summary_paths: Sequence[str], out_json: str, seal: Mapping | None) -> tuple[list[dict], dict[str, str]]:
    """The summaries sorted by batch and ``{batch: sha256 of its summary.json}``: sealed batches from the
    previous ledger (see :func:`ledger_step`), every other one read from its file."""
    import hashlib

    from .seal import check, identity

    previous, ident = {}, None
    if seal is not None and not seal.get("recheck"):
        previous = _previous_rows(out_json)
        if previous:
            ident = identity(seal["scoring"], seal["models"])
    rows, digests = [], {}
    for p in summary_paths:
        batch = _summary_batch(p)
        if batch in previous:
            sealed, _ = check(batch, Path(seal["root"]) / batch, ident)
            row, sha = previous[batch]
            if sealed is not None and sealed["outputs"]["summary"]["sha256"] == sha:
                rows.append(row)
                digests[batch] = sha
                continue
        data = Path(p).read_bytes()
        rows.append(json.loads(data))
        digests[rows[-1]["batch"]] = hashlib.sha256(data).hexdigest()
    return sorted(rows, key=lambda s: s["batch"]), digests


def seal_complete_batches(batches: Sequence[str], seal: Mapping) -> dict[str, str]:
    """Seal every batch of ``batches`` that is not sealed yet (:func:`wormflow.seal.seal_batch`); drop the
    shard stores of sealed batches with ``seal["drop_stores"]``.  Returns ``{batch: why not sealed}``."""
    import logging

    from .seal import check, identity, seal_batch

    log = logging.getLogger(__name__)
    ident = identity(seal["scoring"], seal["models"])
    not_sealed = {}
    for b in batches:
        root = Path(seal["root"]) / b
        ok = check(b, root, ident)[0] is not None and not seal.get("recheck")
        if not ok:
            ok, why = seal_batch(b, root, ident)
            if not ok:
                not_sealed[b] = why
                log.warning("batch %s not sealed: %s", b, why)
        if ok and seal.get("drop_stores"):
            for store in Path(paths.store(paths.batch_collection(b), 0)).parent.glob("*.images.h5"):
                store.unlink(missing_ok=True)
    return not_sealed


def read_ledger(path: str) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))
