"""Seals, retention and the report's detail bound, on small real trees (fast; the workflow's own
nights are in test_workflow.py: test_a_sealed_batch_is_neither_listed_nor_rescored and after)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from wormflow import paths as P
from wormflow import seal
from wormflow.ledger import ledger_step
from wormflow.nightly import with_config
from wormflow.pipeline import manifest_step
from wormflow.report.sections import latest_batches
from wormflow.retention import prune_old_files

SCORING = {"shard_size": 4, "methods": ["vae"]}


@pytest.fixture
def tree(tmp_path, monkeypatch, bbbc010):
    """A working directory with two batches (real PNGs), their manifests, stand-in results and a model."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "batches"
    model = Path(P.model("vae", 0))
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights")
    model.with_name("model.json").write_text("{}")
    for b in ("b1", "b2"):
        src = sorted((bbbc010 / "batches" / "2026-11-20").iterdir())[:3]
        (root / b / "sub").mkdir(parents=True)
        for f in src[:2]:
            shutil.copy(f, root / b / f.name)
        shutil.copy(src[2], root / b / "sub" / src[2].name)
        coll = P.batch_collection(b)
        manifest = manifest_step(str(root / b), P.manifest(coll), labeled=False, shard_size=4)
        Path(P.scores(coll)).write_bytes(b"scores " + b.encode())
        Path(P.thumbnails(b)).write_text('{"size": null, "wells": {}}')
        summary = {"batch": b, "status": "ok", "n_files": 3, "n_scored": 3, "n_quarantined": 0, "methods": {}}
        summary["manifest_digest"] = manifest.content_digest()
        Path(P.summary(b)).write_text(json.dumps(summary))
    params = {"root": str(root), "scoring": SCORING, "models": {"vae": str(model)}, "recheck": False, "drop_stores": False}
    return root, params


def _ident(params):
    return seal.identity(params["scoring"], params["models"])


def _sealed(root, params):
    return seal.sealed_batches(root, ["b1", "b2"], _ident(params))


def test_sealing_and_what_reopens_a_batch(tree):
    root, params = tree
    assert _sealed(root, params) == ([], {"b1": "no seal", "b2": "no seal"})
    assert seal.seal_batch("b1", root / "b1", _ident(params)) == (True, "")
    assert seal.seal_batch("b2", root / "b2", _ident(params)) == (True, "")
    assert _sealed(root, params) == (["b1", "b2"], {})
    # a file added in a sub-directory: only that directory changes
    shutil.copy(next((root / "b1").glob("*.png")), root / "b1" / "sub" / "new.png")
    sealed, why = _sealed(root, params)
    assert sealed == ["b2"] and "directory sub changed" in why["b1"]
    # a corrupt seal (valid JSON, wrong checksum) is no seal
    text = Path(P.seal("b2")).read_text()
    Path(P.seal("b2")).write_text(text.replace('"n_files": 3', '"n_files": 4'))
    assert _sealed(root, params)[1]["b2"] == "seal unreadable or corrupt"
    Path(P.seal("b2")).write_text(text)
    assert _sealed(root, params)[0] == ["b2"]
    # a retrained model or another scoring config reopens every batch
    other = {**params, "scoring": {**SCORING, "shard_size": 8}}
    assert _sealed(root, other)[0] == []
    time.sleep(0.01)
    Path(params["models"]["vae"]).write_bytes(b"retrained")
    assert "config, models or scripts changed" in _sealed(root, params)[1]["b2"]


def test_a_batch_that_differs_from_its_manifest_or_summary_is_not_sealed(tree):
    root, params = tree
    os.utime(next((root / "b1").glob("*.png")))  # touched after the manifest
    assert seal.seal_batch("b1", root / "b1", _ident(params))[0] is False
    summary = json.loads(Path(P.summary("b2")).read_text())
    Path(P.summary("b2")).write_text(json.dumps({**summary, "status": "count mismatch"}))
    assert seal.seal_batch("b2", root / "b2", _ident(params)) == (
        False,
        "status 'count mismatch' is not sealed (checked every night)",
    )


def test_ledger_append_equals_rebuild_and_reads_only_open_summaries(tree):
    root, params = tree
    summaries = [P.summary(b) for b in ("b1", "b2")]
    first = ledger_step(summaries, [], {}, None, P.LEDGER_TSV, P.LEDGER_JSON, seal=params)
    assert all(Path(P.seal(b)).is_file() for b in ("b1", "b2"))
    # mark b1's row in the ledger: an append takes a sealed batch's row from there, not from its file
    ledger = json.loads(Path(P.LEDGER_JSON).read_text())
    ledger["batches"][0]["marker"] = "from the previous ledger"
    Path(P.LEDGER_JSON).write_text(json.dumps(ledger))
    appended = ledger_step(summaries, [], {}, None, P.LEDGER_TSV, P.LEDGER_JSON, seal=params)
    assert appended["batches"][0]["marker"] == "from the previous ledger"
    del appended["batches"][0]["marker"]
    tsv = Path(P.LEDGER_TSV).read_text()
    # a missing ledger: every summary is read
    os.unlink(P.LEDGER_JSON)
    rebuilt = ledger_step(summaries, [], {}, None, P.LEDGER_TSV, P.LEDGER_JSON, seal=params)
    for d in (first, appended, rebuilt):
        d.pop("generated_utc")
    assert first == appended == rebuilt
    assert Path(P.LEDGER_TSV).read_text() == tsv
    # a summary rewritten after sealing: its seal no longer vouches for it, so the ledger reads it
    ledger = json.loads(Path(P.LEDGER_JSON).read_text())
    ledger["batches"][0]["marker"] = "stale"
    Path(P.LEDGER_JSON).write_text(json.dumps(ledger))
    summary = json.loads(Path(P.summary("b1")).read_text())
    Path(P.summary("b1")).write_text(json.dumps({**summary, "n_scored": 2, "n_quarantined": 1}))
    again = ledger_step(summaries, [], {}, None, P.LEDGER_TSV, P.LEDGER_JSON, seal=params)
    assert "marker" not in again["batches"][0] and again["batches"][0]["n_scored"] == 2


def test_drop_stores_only_of_sealed_batches(tree):
    root, params = tree
    for coll in (P.batch_collection("b1"), P.TEST):
        Path(P.store(coll, 0)).parent.mkdir(parents=True, exist_ok=True)
        Path(P.store(coll, 0)).write_bytes(b"store")
    os.utime(next((root / "b2").glob("*.png")))  # b2 cannot be sealed: it keeps its stores
    Path(P.store(P.batch_collection("b2"), 0)).parent.mkdir(parents=True, exist_ok=True)
    Path(P.store(P.batch_collection("b2"), 0)).write_bytes(b"store")
    ledger_step(
        [P.summary(b) for b in ("b1", "b2")], [], {}, None, P.LEDGER_TSV, P.LEDGER_JSON, seal={**params, "drop_stores": True}
    )
    assert not Path(P.store(P.batch_collection("b1"), 0)).exists()
    assert Path(P.store(P.batch_collection("b2"), 0)).exists()
    assert Path(P.store(P.TEST, 0)).exists()


def test_prune_old_files(tmp_path):
    logs = tmp_path / "logs" / "slurm"
    (logs / "rule_a" / "x").mkdir(parents=True)
    (logs / "rule_b").mkdir(parents=True)
    old, new = logs / "rule_a" / "x" / "1.log", logs / "rule_b" / "2.log"
    old.write_text("o")
    new.write_text("n")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    assert prune_old_files(logs, 1) == [str(old)]
    assert not (logs / "rule_a").exists() and new.is_file() and logs.is_dir()
    assert prune_old_files(tmp_path / "missing", 1) == []


def test_latest_batches_keeps_unprocessed_rows():
    rows = [{"batch": f"d{i}"} for i in range(5)] + [{"batch": "zz", "unprocessed": True}]
    shown, older = latest_batches(rows, 2)
    assert [r["batch"] for r in shown] == ["d3", "d4", "zz"] and older == ["d0", "d1", "d2"]
    assert latest_batches(rows, None) == (rows, [])


def test_recheck_joins_an_existing_config():
    assert with_config(["-n"], "recheck=true") == ["-n", "--config", "recheck=true"]
    assert with_config(["--config", "a=1", "-n"], "recheck=true") == ["--config", "recheck=true", "a=1", "-n"]
