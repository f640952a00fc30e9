"""The workflow end to end: dry runs, a full run on the generated demo and one on the real BBBC010 patches.

Each full run happens once per test session (module-scoped fixtures, in
temporary working directories; never in the repository).  The demo run uses
the tiny overlays (``tests/configs/tiny.yaml`` + ``demo-tiny.yaml``: 48-pixel
images, 32-pixel models, one or two epochs, shards of 6 images), the real run
``config/bbbc010.yaml`` + ``tiny.yaml`` as they are: ``bbbc010.yaml`` names the
data relative to the working directory (``../shared/data/bbbc010``), so the run
directory gets a sibling ``shared/data/bbbc010`` linking to the real data: the full
data when they are beside the repository, else the in-repository subset
``tests/data/bbbc010`` (the ``bbbc010`` fixture, see ``conftest.py``).

Models: a model that exists is used as it is; a changed config section only
makes the ledger report that retraining is pending, and ``retrain: [<method>]``
(``wormflow retrain``) retrains it.  The retraining tests run without root's
permission override (``setpriv``), as any other user would run the workflow.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import yaml
from browser import HAVE_CHROMIUM, NO_CHROMIUM, browse
from workflow_helpers import BBBC010_CONFIG, DEMO_TINY, TINY, dry_run_jobs, run_snakemake, snakemake_cmd

import wormflow
from wormflow import report as rpt
from wormflow.artifact import Artifact
from wormflow.config import load_config
from wormflow.methods import get as get_method
from wormflow.store import read_strings

METHODS = ("vae", "gan", "resnet50")
BASELINE = "dark_pixels"
ALL = (*METHODS, BASELINE)
RUN_TIMEOUT = 25 * 60  # seconds, per Snakemake run
TEST_TIMEOUT = 2 * RUN_TIMEOUT  # the first test using a run fixture pays for the run (tests using one are marked slow)
DEMO_CONFIGS = (TINY, DEMO_TINY)
REAL_CONFIGS = (BBBC010_CONFIG, TINY)
# Two single-threaded scoring/training jobs at a time instead of one two-threaded one: these tiny
# jobs spend most of their time starting Python and importing torch, which uses one core.
# Threads are not a rerun trigger, so this changes nothing about what (re)runs.
FAST = ("--set-threads", "score_shard=1", "train=1")
FINAL_RULES = {"gather", "summarize", "evaluate", "ledger", "report", "all"}
TRAIN_RULES = {"train"}
CHUNKED = ("features", "recon", "error_map", "colour_mask")
MODEL = "results/models/{}/seed0/model.pt"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_below(root: Path) -> list[str]:
    """Relative POSIX paths of the (non-hidden) files below ``root``, sorted."""
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def job_counts(output: str) -> dict[str, int]:
    """Rule -> job count from Snakemake's job stats table (as ``workflow_helpers.dry_run_jobs``)."""
    counts: dict[str, int] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            counts[parts[0]] = int(parts[1])
    return counts


def real_data_workdir(base: Path, data: Path) -> Path:
    """A run directory in which ``config/bbbc010.yaml``'s ``../shared/data/bbbc010`` is ``data`` (a link to it)."""
    (base / "shared" / "data").mkdir(parents=True, exist_ok=True)
    link = base / "shared" / "data" / "bbbc010"
    if not link.exists():
        link.symlink_to(data, target_is_directory=True)
    cfg = yaml.safe_load(BBBC010_CONFIG.read_text())
    assert cfg["data"]["labeled"] == "../shared/data/bbbc010/labeled", cfg  # what the link stands in for
    workdir = base / "run"
    workdir.mkdir(exist_ok=True)
    return workdir


def write_overlay(path: Path, overlay: dict) -> Path:
    path.write_text(yaml.safe_dump(overlay))
    return path


# --------------------------------------------------------------------------- dry runs on fresh directories


def test_dry_run_demo_default_config(tmp_path):
    """``config.yaml`` alone (what `snakemake --profile profiles/local` runs): the demo set, then everything."""
    jobs = dry_run_jobs(tmp_path / "run", configfiles=())
    assert jobs.get("demo_data") == 1
    assert jobs.get("train") == len(ALL)  # one model per method (the floor too: it fits its threshold)
    assert jobs.get("manifest", 0) >= 1
    assert jobs.get("gather") == 2  # the two demo batches (the test split's gather appears after its manifest)
    assert jobs.get("summarize") == 2
    assert all(jobs.get(r) == 1 for r in ("evaluate", "ledger", "report", "all")), jobs
    # decode and score jobs are known only once the manifest checkpoints have run
    assert set(jobs) == {"demo_data", "manifest", *TRAIN_RULES, *FINAL_RULES}, jobs
    assert not (tmp_path / "run" / "results").exists()


def test_dry_run_real_data(tmp_path, bbbc010):
    workdir = real_data_workdir(tmp_path, bbbc010)
    jobs = dry_run_jobs(workdir, configfiles=REAL_CONFIGS)
    batches = sorted(p.name for p in (bbbc010 / "batches").iterdir() if p.is_dir())
    assert len(batches) == 3
    assert "demo_data" not in jobs
    assert jobs.get("train") == len(ALL)
    assert jobs.get("gather") == len(batches)  # the batches were found through ../shared/data/bbbc010
    assert all(jobs.get(r) == 1 for r in ("evaluate", "ledger", "report", "all")), jobs
    assert set(jobs) == {"manifest", *TRAIN_RULES, *FINAL_RULES}, jobs
    assert not (workdir / "results").exists()


# --------------------------------------------------------------------------- the demo, run once


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> SimpleNamespace:
    workdir = tmp_path_factory.mktemp("demo-run")
    proc = run_snakemake(workdir, *FAST, configfiles=DEMO_CONFIGS, timeout=RUN_TIMEOUT)
    return SimpleNamespace(
        workdir=workdir,
        results=workdir / "results",
        config=load_config(list(DEMO_CONFIGS)),
        output=proc.stdout + proc.stderr,
    )


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_demo_final_outputs(demo):
    r = demo.results
    for rel in ("report.html", "report.json", "batches.tsv", "eval/metrics.json", "eval/metrics.csv", "labeled/test/scores.h5"):
        assert (r / rel).is_file() and (r / rel).stat().st_size > 0, rel
    for batch in demo.config["demo"]["batches"]:
        assert (r / "batches" / batch / "scores.h5").is_file(), batch
    for m in ALL:
        d = r / "models" / m / "seed0"
        assert (d / "model.pt").stat().st_size > 0 and (d / "model.json").stat().st_size > 0
        with open(d / "history.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert (rows and "epoch" in rows[0]) if m != BASELINE else rows == [], (m, rows[:1])  # the floor has no epochs
        events = list((d / "tensorboard").glob("events.out.tfevents.*"))
        assert events and all(e.stat().st_size > 0 for e in events), m
        assert (r / "logs" / "train" / m / "seed0.log").is_file()
        assert (r / "benchmarks" / "train" / m / "seed0.tsv").is_file()
    # the scoring jobs' indexes are temp(): gone once gathered; their score parts stay for reuse
    assert not list(r.glob("**/shards/*.scores.json"))
    assert len(list(r.glob("batches/*/shards/*.parts/*.h5"))) == len(ALL) * 3  # demo-batch-1: 2 shards, -2: 1


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_demo_batch_scores_h5(demo):
    cfg = demo.config
    sizes = {m: cfg["methods"][m]["image_size"] for m in ALL}
    batches = sorted(cfg["demo"]["batches"])
    assert batches == sorted(p.name for p in (demo.results / "demo" / "batches").iterdir() if p.is_dir())
    for batch in batches:
        src = demo.results / "demo" / "batches" / batch
        files = files_below(src)
        assert len(files) == cfg["demo"]["batches"][batch]
        with h5py.File(demo.results / "batches" / batch / "scores.h5", "r") as f:
            assert f.attrs["format"] == "wormflow-batch" and f.attrs["complete"]
            n = int(f.attrs["n_scored"])
            assert n + int(f.attrs["n_quarantined"]) == len(files) == int(f.attrs["n_files"])
            ids = read_strings(f["images/ids"])
            quarantined = read_strings(f["quarantine/ids"])
            assert sorted(ids + quarantined) == files
            assert ids == files  # the demo has nothing to quarantine; one row per image, in path order
            paths = read_strings(f["images/paths"])
            assert all((demo.workdir / p).resolve() == (src / i).resolve() for i, p in zip(ids, paths))
            assert set(f["images/labels"][()].tolist()) <= {-1}  # batches are unlabeled
            assert f.attrs["methods"].tolist() == list(ALL)
            for m in ALL:
                check_method_group(f[m], m, n, ids, paths, sizes[m], demo.results, cfg)


def check_method_group(g: h5py.Group, method: str, n: int, ids: list[str], paths: list[str], size: int, results: Path, cfg):
    where = g.name
    assert read_strings(g["ids"]) == ids, where
    assert read_strings(g["paths"]) == paths, where
    score, pred, features = g["score"], g["pred"], g["features"]
    assert (score.dtype, score.shape) == (np.float32, (n,)), where
    assert (pred.dtype, pred.shape) == (np.int8, (n,)), where
    threshold = float(g.attrs["threshold"])
    s, p = score[()], pred[()]
    assert np.isfinite(s).all(), where
    decided = np.abs(s.astype(np.float64) - threshold) > 1e-6  # exactly at the threshold float32 rounding decides
    assert np.array_equal(p[decided], (s[decided] >= threshold).astype(np.int8)), where
    assert set(np.unique(p).tolist()) <= {0, 1}
    names = [str(v) for v in features.attrs["names"]]
    assert features.dtype == np.float32 and features.ndim == 2 and features.shape == (n, len(names)) and names, where
    expected = {
        "recon": ((n, size, size, 3), np.uint8),
        "error_map": ((n, size, size), np.uint8),
        "colour_mask": ((n, size, size), np.uint8),
    }
    if method in ("vae", "gan"):
        for name, (shape, dtype) in expected.items():
            assert (g[name].shape, g[name].dtype) == (shape, dtype), f"{where}/{name}"
        assert set(np.unique(g["colour_mask"][()]).tolist()) <= {0, 1}
    else:
        assert not set(expected) & set(g), where
    for name in CHUNKED:
        if name in g and n:
            assert g[name].chunks is not None, f"{where}/{name} is not chunked"
            assert g[name].compression == cfg["hdf5"]["compression"], f"{where}/{name}: {g[name].compression}"
    model = results / "models" / method / "seed0" / "model.pt"
    artifact = Artifact.load(model)
    assert g.attrs["method"] == method
    assert g.attrs["checkpoint_sha256"] == sha256(model), where
    assert threshold == artifact.threshold, where
    assert g.attrs["config_hash"] == artifact.config_hash, where
    assert g.attrs["package_version"] == wormflow.__version__, where
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", g.attrs["created_utc"]), where


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_demo_shards_concatenate_in_order(demo, tmp_path):
    """demo-batch-1 (8 images, shard_size 6) has two shards; the batch file holds shard 0's rows, then shard 1's."""
    from wormflow.pipeline import read_score_index, score_shard_step

    cfg = demo.config
    coll = demo.results / "batches" / "demo-batch-1"
    n_images = cfg["demo"]["batches"]["demo-batch-1"]
    n_shards = math.ceil(n_images / cfg["shard_size"])
    assert n_shards == 2
    stores = [coll / "shards" / f"{k}.images.h5" for k in range(n_shards)]
    assert all(p.is_file() for p in stores) and not (coll / "shards" / f"{n_shards}.images.h5").exists()
    shard_ids, shard_sha = [], []
    for p in stores:
        with h5py.File(p, "r") as f:
            shard_ids.append(read_strings(f["ids"]))
            shard_sha.append(read_strings(f["sha256"]))
    assert [len(i) for i in shard_ids] == [cfg["shard_size"], n_images - cfg["shard_size"]]
    # rescore each shard with the VAE, exactly as the score_shard job does, and find its rows in the batch file
    rescored = []
    for k, p in enumerate(stores):
        index = tmp_path / f"{k}.scores.json"
        score_shard_step(
            str(p),
            {"vae": {0: str(demo.results / "models" / "vae" / "seed0" / "model.pt")}},
            str(index),
            batch_size=cfg["scoring"]["batch_size"],
            shard_size=cfg["shard_size"],
            hdf5=cfg["hdf5"],
        )
        (part,) = read_score_index(str(index))
        with h5py.File(part.path, "r") as f:
            rescored.append({"ids": read_strings(f["ids"]), "score": f["score"][()], "recon": f["recon"][()]})
    with h5py.File(coll / "scores.h5", "r") as f:
        assert read_strings(f["images/ids"]) == shard_ids[0] + shard_ids[1]
        assert read_strings(f["images/sha256"]) == shard_sha[0] + shard_sha[1]
        assert read_strings(f["vae/ids"]) == rescored[0]["ids"] + rescored[1]["ids"]
        np.testing.assert_allclose(f["vae/score"][()], np.concatenate([r["score"] for r in rescored]), atol=1e-4)
        recon = f["vae/recon"][()].astype(int)
        assert np.abs(recon - np.concatenate([r["recon"] for r in rescored]).astype(int)).max() <= 1
        for m in ALL:  # every method's columns span both shards
            assert f[m]["score"].shape[0] == n_images


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_demo_test_split_scores(demo):
    cfg = demo.config
    split = demo.results / "demo" / "labeled" / "test"
    files = files_below(split)
    assert len(files) == 2 * cfg["demo"]["n_test"]
    with h5py.File(demo.results / "labeled" / "test" / "scores.h5", "r") as f:
        ids = read_strings(f["images/ids"])
        assert ids == files
        labels = f["images/labels"][()]
        assert labels.tolist() == [int(i.startswith("wormed/")) for i in ids]
        for m in METHODS:
            assert read_strings(f[m]["ids"]) == ids and f[m]["score"].shape == (len(ids),)


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_demo_ledger_matches_batch_files(demo):
    with open(demo.results / "batches.tsv", newline="") as fh:
        rows = {r["batch"]: r for r in csv.DictReader(fh, delimiter="\t")}
    assert sorted(rows) == sorted(demo.config["demo"]["batches"])
    for batch, row in rows.items():
        with h5py.File(demo.results / "batches" / batch / "scores.h5", "r") as f:
            for key in ("n_files", "n_scored", "n_quarantined"):
                assert int(row[key]) == int(f.attrs[key]), (batch, key)
            for m in METHODS:
                share = float(np.mean(f[m]["pred"][()] == 1))
                assert float(row[f"{m}_flagged_share"]) == pytest.approx(share, abs=1e-3), (batch, m)
        assert row["status"] == "ok"


# --------------------------------------------------------------------------- the report


def _summary_cells(html: str) -> dict[str, list[str]]:
    """Text of each summary-table row's cells, keyed by the first cell's method label."""
    section = html[html.index('<section id="summary">') : html.index('<section id="confusion">')]
    body = section[section.index("<tbody>") : section.index("</tbody>")]
    rows = {}
    for tr in re.findall(r"<tr\b.*?</tr>", body, flags=re.S):
        cells = [re.sub(r"<[^>]+>", " ", c) for c in re.findall(r"<td\b[^>]*>(.*?)</td>", tr, flags=re.S)]
        cells = [" ".join(c.split()) for c in cells]
        label = next(get_method(m).label for m in ALL if cells[0].startswith(get_method(m).label))
        rows[label] = cells
    return rows


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_report_numbers_equal_metrics(demo):
    import json

    metrics = json.loads((demo.results / "eval" / "metrics.json").read_text())["methods"]
    data = json.loads((demo.results / "report.json").read_text())
    assert set(metrics) == {*METHODS, BASELINE}
    rows = {r["method"]: r for r in data["summary"]["rows"] + data["summary"]["floors"]}
    assert set(rows) == set(metrics)
    html = (demo.results / "report.html").read_text(encoding="utf-8")
    cells = _summary_cells(html)
    assert set(cells) == {get_method(n).label for n in metrics}
    # summary columns: method, F1, AUROC, AP, precision, recall, threshold, ...
    columns = ("f1", "auroc", "average_precision", "precision", "recall")
    for name, block in metrics.items():
        row = rows[name]
        assert row["threshold"] == block["threshold"], name
        for k in (*columns, "accuracy"):
            assert row["metrics"][k] == block["metrics"][k], (name, k)
            assert row["intervals"][k] == block["intervals"][k], (name, k)
        shown = cells[get_method(name).label]
        for col, k in enumerate(columns, start=1):
            value, (lo, hi) = block["metrics"][k], block["intervals"][k]
            assert shown[col] == f"{value:.3f} [{lo:.3f}, {hi:.3f}]", (name, k, shown[col])
        assert shown[len(columns) + 1] == f"{block['threshold']:.4f}", (name, shown)
    # the CSV has the same numbers
    with open(demo.results / "eval" / "metrics.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            block = metrics[r["method"]]
            assert float(r["value"]) == pytest.approx(block["metrics"][r["metric"]], abs=1e-12), r
            assert float(r["threshold"]) == pytest.approx(block["threshold"], abs=1e-12), r
            assert [float(r["ci_low"]), float(r["ci_high"])] == pytest.approx(block["intervals"][r["metric"]], abs=1e-12), r
    # the confusion matrices, batches and models of the page are those of the run
    assert {c["method"]: c["matrix"] for c in data["confusion_matrices"]} == {
        n: b["confusion_matrix"] for n, b in metrics.items()
    }
    assert [b["batch"] for b in data["batches"]] == sorted(demo.config["demo"]["batches"])
    assert all(b["n_files"] == demo.config["demo"]["batches"][b["batch"]] for b in data["batches"])
    models = {m["method"]: m for m in data["provenance"]["models"]}
    for m in ALL:
        assert models[m]["checkpoint_sha256"] == sha256(demo.results / "models" / m / "seed0" / "model.pt")


@pytest.mark.browser
@pytest.mark.skipif(not HAVE_CHROMIUM, reason=NO_CHROMIUM)
@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_report_opens_in_headless_chromium(demo, tmp_path):
    from PIL import Image

    problems, page, png = browse(demo.results / "report.html", tmp_path)
    assert problems == []
    assert page["broken"] == 0 and page["fetched"] == [] and page["images"] > 10
    assert page["sections"] == len(rpt.SECTIONS)
    shot = tmp_path / "report.png"
    shot.write_bytes(png)
    assert shot.stat().st_size > 10_000 and shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.size[0] > 0 and np.asarray(img.convert("L")).std() > 10  # not blank


# --------------------------------------------------------------------------- reruns and retraining


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_second_run_is_a_noop(demo):
    assert dry_run_jobs(demo.workdir, configfiles=DEMO_CONFIGS) == {}


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_scoring_batch_size_rescores_nothing(demo, tmp_path):
    overlay = write_overlay(tmp_path / "scoring.yaml", {"scoring": {"batch_size": 16}})
    jobs = dry_run_jobs(demo.workdir, configfiles=(*DEMO_CONFIGS, overlay))
    # the batch size decides how fast, not what: nothing is retrained or rescored; only the report,
    # which shows the whole config, is rendered again
    assert set(jobs) <= {"report", "all"}, jobs


def regular_user_prefix() -> list[str]:
    """A command prefix under which file permissions apply as they do to any user who is not root.

    Run by root, ``setpriv`` drops the capabilities that bypass permission checks (from the bounding
    set, so the process keeps uid 0 and its files but read-only files are read-only to it).
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to run as a regular user would"
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def run_as_regular_user(workdir: Path, *args: str, configfiles, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    cmd = regular_user_prefix() + snakemake_cmd(workdir, *args, configfiles=configfiles)
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_changed_lr_keeps_the_model_and_only_reports_pending_retraining(demo, tmp_path):
    """A changed config section never retrains by itself, nor stops the night (on main the protected
    model stopped every run for any user but root): only the ledger and the report run again."""
    configs = (*DEMO_CONFIGS, write_overlay(tmp_path / "lr.yaml", {"methods": {"vae": {"lr": 1.0e-4}}}))
    proc = run_as_regular_user(demo.workdir, "-n", "--quiet", "rules", configfiles=configs)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert set(job_counts(out)) <= {"ledger", "report", "all"}, job_counts(out)


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_retrain_when_asked_retrains_only_that_method(demo, tmp_path):
    """``retrain: [vae]`` (what ``wormflow retrain --methods vae`` sets), as a regular user: the VAE
    is retrained with the changed config and everything it scored is rescored; the other models stay."""
    workdir = tmp_path / "copy"
    shutil.copytree(demo.workdir, workdir, symlinks=True)
    models = {m: workdir / MODEL.format(m) for m in ALL}
    before = {m: (sha256(p), p.stat().st_mtime_ns) for m, p in models.items()}
    configs = (*DEMO_CONFIGS, write_overlay(tmp_path / "lr.yaml", {"methods": {"vae": {"lr": 1.0e-4}}}))
    proc = run_as_regular_user(workdir, *FAST, "--config", "retrain=[vae]", configfiles=configs)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs = job_counts(out)
    assert jobs.get("train") == 1 and jobs.get("evaluate") == 1, jobs
    assert sha256(models["vae"]) != before["vae"][0]
    assert Artifact.load(models["vae"]).config["lr"] == 1.0e-4
    for m in ("gan", "resnet50", BASELINE):
        assert (sha256(models[m]), models[m].stat().st_mtime_ns) == before[m], m
    pending = json.loads((workdir / "results" / "ledger.json").read_text())["retraining_pending"]
    assert pending == []


# --------------------------------------------------------------------------- the real BBBC010 patches


@pytest.fixture(scope="module")
def real(tmp_path_factory, bbbc010) -> SimpleNamespace:
    workdir = real_data_workdir(tmp_path_factory.mktemp("bbbc010-run"), bbbc010)
    run_snakemake(workdir, *FAST, configfiles=REAL_CONFIGS, timeout=RUN_TIMEOUT)
    return SimpleNamespace(workdir=workdir, results=workdir / "results", data=bbbc010)


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_real_data_end_to_end(real):
    import json

    r = real.results
    with open(real.data / "batches" / "labels.csv", newline="") as fh:
        listed: dict[str, list[str]] = {}
        for row in csv.DictReader(fh):
            listed.setdefault(row["batch"], []).append(row["file"])
    assert len(listed) == 3
    for rel in ("report.html", "report.json", "batches.tsv", "eval/metrics.json", "eval/metrics.csv", "labeled/test/scores.h5"):
        assert (r / rel).is_file(), rel
    assert not (r / "demo").exists()
    for m in METHODS:
        assert (r / "models" / m / "seed0" / "model.pt").is_file()
    for batch, files in listed.items():
        assert sorted(f"{batch}/{p}" for p in files_below(real.data / "batches" / batch)) == sorted(files)
        with h5py.File(r / "batches" / batch / "scores.h5", "r") as f:
            assert int(f.attrs["n_scored"]) + int(f.attrs["n_quarantined"]) == len(files), batch
            ids = read_strings(f["images/ids"]) + read_strings(f["quarantine/ids"])
            assert sorted(f"{batch}/{i}" for i in ids) == sorted(files)
            for m in METHODS:
                assert f[m]["score"].shape == (int(f.attrs["n_scored"]),)
    with h5py.File(r / "labeled" / "test" / "scores.h5", "r") as f:
        assert len(read_strings(f["images/ids"])) == len(files_below(real.data / "labeled" / "test"))
    metrics = json.loads((r / "eval" / "metrics.json").read_text())
    assert set(metrics["methods"]) == set(ALL)
    for name, block in metrics["methods"].items():
        for k in ("f1", "auroc"):
            assert block["metrics"][k] is not None and math.isfinite(block["metrics"][k]), (name, k)
            assert 0 <= block["metrics"][k] <= 1
        assert block["n_test"] == len(files_below(real.data / "labeled" / "test"))
    report = json.loads((r / "report.json").read_text())
    processed = [b for b in report["batches"] if not b["unprocessed"]]
    assert [b["batch"] for b in processed] == sorted(listed)
    assert all(b["n_scored"] + b["n_quarantined"] == len(listed[b["batch"]]) for b in processed)
    # the loose labels.csv beside the batch directories is listed, not dropped
    assert [(b["batch"], b["status"]) for b in report["batches"] if b["unprocessed"]] == [
        ("labels.csv", "rejected: a file, not a batch directory")
    ]


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_real_data_second_run_is_a_noop(real):
    assert dry_run_jobs(real.workdir, configfiles=REAL_CONFIGS) == {}


# --------------------------------------------------------------------------- sealed batches and retention (issue 14.3)

SEAL_OLD = ("2026-11-20", "2026-11-21")
SEAL_NEW = "2026-11-22"
SEAL_IMAGES = 8
PER_BATCH = {"manifest", "decode_shard", "score_shard", "gather", "summarize"}


def copy_batch(data: Path, batch: str, batches: Path, n: int = SEAL_IMAGES) -> None:
    """The first ``n`` images of a real batch (two demo-sized shards: each night takes a minute, not ten)."""
    (batches / batch).mkdir(parents=True)
    for f in sorted((data / "batches" / batch).iterdir())[:n]:
        shutil.copy2(f, batches / batch / f.name)


def _jobs_by_batch(output: str) -> dict[str, set[str]]:
    """``{batch: rules}`` of the per-batch jobs Snakemake announced."""
    from nightly_helpers import jobs_in

    out: dict[str, set[str]] = {}
    for rule, path in jobs_in(output):
        if rule in PER_BATCH and path.startswith("results/batches/"):
            out.setdefault(path.split("/")[2], set()).add(rule)
    return out


def _rewrite_in_place(victim: Path, donor: Path) -> None:
    """Other bytes under the same name, the mtime forged back: the directory does not change."""
    assert victim.read_bytes() != donor.read_bytes()
    st = victim.stat()
    victim.write_bytes(donor.read_bytes())
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))


def _strace_dry_run(workdir: Path, configfiles, *args: str) -> str | None:
    """The file system calls of a dry run (None without a working strace)."""
    strace = shutil.which("strace")
    if not strace:
        return None
    trace = workdir.parent / "strace.txt"
    cmd = [strace, "-f", "-qq", "-e", "trace=%file,getdents64", "-o", str(trace)]
    cmd += snakemake_cmd(workdir, "-n", *args, configfiles=configfiles)
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if proc.returncode != 0 or not trace.is_file():
        return None
    return trace.read_text(errors="replace")


@pytest.fixture(scope="module")
def sealed(demo, bbbc010, tmp_path_factory) -> SimpleNamespace:
    """The demo's models and labeled results (a copy), real batches in a directory, and five nights:
    two old batches; a new one while an old one changes in place; a recheck; a file added to one
    sealed batch and another's seal corrupted; then retention.  Ledger rebuilt from scratch at the end."""
    base = tmp_path_factory.mktemp("sealed")
    workdir = base / "run"
    shutil.copytree(demo.workdir, workdir, symlinks=True)
    batches = base / "batches"
    for b in SEAL_OLD:
        copy_batch(bbbc010, b, batches)
    configs = (*DEMO_CONFIGS, write_overlay(base / "batches.yaml", {"data": {"batches": str(batches)}}))
    res = workdir / "results"
    ns = SimpleNamespace(workdir=workdir, batches=batches, configs=configs, results=res)

    def night(*args, configfiles=configs):
        proc = run_snakemake(workdir, *FAST, *args, configfiles=configfiles, timeout=RUN_TIMEOUT)
        return proc.stdout + proc.stderr

    def scores_state():
        found = {b: res / "batches" / b / "scores.h5" for b in sorted(p.name for p in batches.iterdir())}
        return {b: sha256(p) for b, p in found.items() if p.is_file()}

    ns.night1 = _jobs_by_batch(night())
    ns.seals1 = {b: (res / "batches" / b / "seal.json").is_file() for b in SEAL_OLD}
    # night 2: a new batch arrives; a file of a sealed batch changes in place (its directory does not)
    copy_batch(bbbc010, SEAL_NEW, batches)
    changed = batches / SEAL_OLD[0]
    ns.victim = sorted(changed.iterdir())[0]
    _rewrite_in_place(ns.victim, sorted((batches / SEAL_NEW).iterdir())[0])
    before = scores_state()
    ns.strace = _strace_dry_run(workdir, configs)
    ns.strace_recheck = _strace_dry_run(workdir, configs, "--config", "recheck=true")
    ns.night2 = _jobs_by_batch(night())
    ns.scores2 = (before, scores_state())
    # night 3: a recheck finds the changed file
    ns.night3 = _jobs_by_batch(night("--config", "recheck=true"))
    ns.scores3 = scores_state()
    ns.ids3 = json.loads((res / "batches" / SEAL_OLD[0] / "manifest.json").read_text())["entries"]
    # night 4: a file added to a sealed batch; another batch's seal corrupt (and a file changed in place)
    added = batches / SEAL_OLD[1] / "added.png"
    shutil.copy(sorted((batches / SEAL_NEW).iterdir())[1], added)
    seal_path = res / "batches" / SEAL_NEW / "seal.json"
    seal_path.write_text(seal_path.read_text().replace('"n_files": ', '"n_files": 1'))
    _rewrite_in_place(sorted((batches / SEAL_NEW).iterdir())[2], sorted((batches / SEAL_OLD[1]).iterdir())[0])
    ns.night4 = _jobs_by_batch(night())
    ns.scores4 = scores_state()
    ns.quiet = dry_run_jobs(workdir, configfiles=configs)
    # the ledger as appended, then as rebuilt from every summary
    ns.appended = {p: (res / p).read_text() for p in ("ledger.json", "batches.tsv")}
    for p in ns.appended:
        (res / p).unlink()
    night()
    ns.rebuilt = {p: (res / p).read_text() for p in ("ledger.json", "batches.tsv")}
    # retention: drop stores, prune SLURM logs older than a day, show the latest batch in detail
    logs = workdir / "logs" / "slurm" / "rule_score_shard" / "x"
    logs.mkdir(parents=True)
    (logs / "old.log").write_text("old")
    (logs / "new.log").write_text("new")
    os.utime(logs / "old.log", (time.time() - 3 * 86400,) * 2)
    retention = {"retention": {"shard_stores": "drop_after_gather", "slurm_logs_days": 1, "report_detail_batches": 1}}
    ns.retention_configs = (*configs, write_overlay(base / "retention.yaml", retention))
    ns.night5 = _jobs_by_batch(night(configfiles=ns.retention_configs))
    ns.logs = logs
    ns.after_retention = dry_run_jobs(workdir, configfiles=ns.retention_configs)
    return ns


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_a_sealed_batch_is_neither_listed_nor_rescored(sealed):
    assert set(sealed.night1) == set(SEAL_OLD) and all(sealed.seals1.values()), sealed.night1
    # night 2: only the new batch's jobs; the old batch changed in place was not looked at
    assert set(sealed.night2) == {SEAL_NEW}, sealed.night2
    before, after = sealed.scores2
    assert {b: after[b] for b in SEAL_OLD} == before
    if sealed.strace is None:
        pytest.skip("no working strace: the DAG's file system calls were not traced")
    names = [p.name for p in (sealed.batches / SEAL_OLD[0]).iterdir()]
    assert not [n for n in names if n in sealed.strace], "a sealed batch's files were listed or stat-ed"
    assert any(n in sealed.strace_recheck for n in names), "the trace does not see listing (recheck lists every batch)"


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_recheck_rescores_a_batch_changed_in_place(sealed):
    changed, other = SEAL_OLD
    assert sealed.night3.get(changed) == PER_BATCH, sealed.night3
    assert other not in sealed.night3 and SEAL_NEW not in sealed.night3, sealed.night3
    assert sealed.scores3[changed] != sealed.scores2[1][changed]
    entry = next(e for e in sealed.ids3 if e["relpath"] == sealed.victim.name)
    assert entry["sha256"] == sha256(sealed.victim)


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_added_file_and_corrupt_seal_reopen_their_batches(sealed):
    changed, grown = SEAL_OLD
    assert sealed.night4.get(grown) == PER_BATCH, sealed.night4  # a file added: the directory changed
    assert sealed.night4.get(SEAL_NEW) == PER_BATCH, sealed.night4  # a corrupt seal is no seal
    assert changed not in sealed.night4
    assert sealed.scores4[changed] == sealed.scores3[changed]
    with h5py.File(sealed.results / "batches" / grown / "scores.h5", "r") as f:
        ids = read_strings(f["images/ids"]) + read_strings(f["quarantine/ids"])
    assert "added.png" in ids
    assert sealed.quiet == {}, sealed.quiet  # everything sealed again: a quiet night does nothing
    for b in (*SEAL_OLD, SEAL_NEW):
        assert (sealed.results / "batches" / b / "seal.json").is_file(), b


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_appended_ledger_equals_a_rebuilt_one(sealed):
    assert sealed.rebuilt["batches.tsv"] == sealed.appended["batches.tsv"]
    appended, rebuilt = (json.loads(sealed.appended["ledger.json"]), json.loads(sealed.rebuilt["ledger.json"]))
    for d in (appended, rebuilt):
        d.pop("generated_utc")
    assert appended == rebuilt
    assert [b["batch"] for b in rebuilt["batches"]] == sorted((*SEAL_OLD, SEAL_NEW))


@pytest.mark.slow
@pytest.mark.timeout(TEST_TIMEOUT)
def test_retention_drops_stores_prunes_logs_and_bounds_the_report(sealed):
    r = sealed.results
    assert not sealed.night5, sealed.night5  # nothing rescored: only the ledger (drops stores) and report
    assert not [p for b in (*SEAL_OLD, SEAL_NEW) for p in r.glob(f"batches/{b}/shards/*.images.h5")]
    assert list(r.glob("batches/demo-batch-1/shards/*.images.h5"))  # not a batch of this night's root: left alone
    assert list(r.glob("labeled/test/shards/*.images.h5"))  # evaluation's stores stay
    assert list(r.glob("labeled/train/shards/*.images.h5"))
    assert not (sealed.logs / "old.log").exists() and (sealed.logs / "new.log").is_file()
    report = json.loads((r / "report.json").read_text())
    assert [b["batch"] for b in report["batches"] if not b["unprocessed"]] == [SEAL_NEW]
    assert "older batch(es) are in the trends" in (r / "report.html").read_text()
    assert not {"decode_shard", "score_shard", "gather", "summarize", "manifest"} & set(sealed.after_retention)
