"""A report every morning, even when a job failed.

Snakemake runs the ledger and the report only when every batch's jobs succeeded.  When a run
fails (a decode or scoring job killed for memory or time, a node lost, a damaged input), the
workflow's ``onerror`` handler calls :func:`report_after_failure` in the head process: it renders
the ledger and the report from what did complete — every batch whose summary is current, the
last evaluation — and lists each batch that did not finish as ``failed``, with the rule, the
shard and the log of the first step that is missing.  Scored shards stay where they are (their
score parts and indexes), so the next run redoes only what failed.

"Current" means the batch's summary was made from its present manifest (same content digest):
a summary left from an earlier night, for a batch whose files changed since, does not count.

Such a ledger and report are provisional: Snakemake did not make them, and would take them for
up to date the next night (a missing summary is not redone while what depends on it exists).
The marker ``results/.provisional`` says so; the ledger rule takes its content as a param
(:func:`provisional_token`), so the next run — dry runs included — plans the ledger and what
it needs again, and the ledger step removes the marker once it has run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import paths
from .atomic import atomic_write_text
from .inventory import Manifest
from .store import utc_now

log = logging.getLogger(__name__)

PROVISIONAL = f"{paths.RESULTS}/.provisional"
OUTPUTS = (paths.LEDGER_TSV, paths.LEDGER_JSON, paths.REPORT_HTML, paths.REPORT_JSON)


def provisional_token() -> str:
    """The marker's content (when a failed run rendered the ledger and report), else ``""``."""
    try:
        return Path(PROVISIONAL).read_text()
    except OSError:
        return ""


def clear_provisional() -> None:
    Path(PROVISIONAL).unlink(missing_ok=True)


def _exists(path: str) -> bool:
    return Path(path).is_file()


def _summary_is_current(batch: str) -> bool:
    coll = paths.batch_collection(batch)
    try:
        summary = json.loads(Path(paths.summary(batch)).read_text())
        manifest = Manifest.read(paths.manifest(coll))
    except (OSError, ValueError, KeyError):
        return False
    return summary.get("manifest_digest") == manifest.content_digest()


def _slurm_log(rule: str, wildcards: Sequence[str]) -> str | None:
    """The newest SLURM log of a job (the executor plugin's ``logs/slurm/rule_<rule>/<wildcards>/<jobid>.log``)."""
    folder = Path(paths.SLURM_LOGS) / f"rule_{rule}" / "_".join(wildcards).replace("/", "_")
    logs = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return str(logs[-1]) if logs else None


def _failure(batch: str, rule: str, log_path: str, shard: int | None = None, detail: str = "") -> dict:
    coll = paths.batch_collection(batch)
    wildcards = [coll] if shard is None else [coll, str(shard)]
    row = {"batch": batch, "status": "failed", "failed_rule": rule, "failed_shard": shard, "log": log_path}
    slurm = _slurm_log(rule, wildcards)
    if slurm:
        row["slurm_log"] = slurm
    if detail:
        row["detail"] = detail
    return row


def diagnose(batch: str) -> dict:
    """The first step of a batch that did not complete: rule, shard and log path."""
    coll = paths.batch_collection(batch)
    if not _exists(paths.manifest(coll)):
        return _failure(batch, "manifest", paths.log("manifest", coll))
    manifest = Manifest.read(paths.manifest(coll))
    for k in range(manifest.n_shards):
        if not _exists(paths.store(coll, k)):
            return _failure(batch, "decode_shard", paths.log("decode_shard", coll, k), k)
    gathered = _exists(paths.scores(coll))
    for k in range(manifest.n_shards):
        if not gathered and not _exists(paths.score_index(coll, k)):
            return _failure(batch, "score_shard", paths.log("score_shard", coll, k), k)
    if not gathered:
        return _failure(batch, "gather", paths.log("gather", coll))
    return _failure(batch, "summarize", paths.log("summarize", batch))


def training_problems(models: Mapping[str, Mapping[int, str]]) -> list[str]:
    problems = []
    for method, seeds in models.items():
        for seed, path in seeds.items():
            if not _exists(path):
                problems.append(
                    f"training {method} (seed {seed}) did not complete: see {paths.log('train', method, f'seed{seed}')}"
                )
    if not _exists(paths.METRICS_JSON) or not _exists(paths.GALLERY):
        problems.append(f"no evaluation of the current models: see {paths.log('evaluate')}")
    return problems


def report_after_failure(
    *,
    batches: Sequence[str],
    rejected: Sequence[tuple[str, str]],
    deferred: Sequence[tuple[str, str]],
    runs: Mapping[str, Sequence[int]],
    models: Mapping[str, Mapping[int, str]],
    training: Mapping | None,
    methods: Sequence[str],
    config: Mapping,
    sealed: Sequence[str] = (),
) -> dict:
    """Render ``ledger.json``/``batches.tsv`` and the report from what completed (see module doc);
    ``sealed`` batches (:mod:`wormflow.seal`, checked when the DAG was built) count as complete
    without reading their manifests."""
    from .ledger import ledger_step
    from .report import report_step

    # first: even a half-rendered report is provisional; the time makes each failed run's marker new
    atomic_write_text(PROVISIONAL, json.dumps({"outputs": list(OUTPUTS), "utc": utc_now()}))
    done = [b for b in batches if b in set(sealed) or _summary_is_current(b)]
    failed = [diagnose(b) for b in batches if b not in done]
    problems = [
        "this run did not complete: the report shows what did; batches marked failed are retried by the next run",
        *training_problems(models),
    ]
    for row in failed:
        log.warning("batch %s failed in %s (log %s)", row["batch"], row["failed_rule"], row["log"])
    ledger_step(
        [paths.summary(b) for b in done],
        rejected,
        runs,
        paths.manifest(paths.TEST),
        paths.LEDGER_TSV,
        paths.LEDGER_JSON,
        deferred=deferred,
        failed=failed,
        training=training,
        problems=problems,
    )
    return report_step(
        metrics_path=paths.METRICS_JSON,
        gallery_path=paths.GALLERY,
        ledger_path=paths.LEDGER_JSON,
        methods=methods,
        config=config,
        out_html=paths.REPORT_HTML,
        out_json=paths.REPORT_JSON,
    )
