"""The imager's raw output, night by night, through the nightly runner: real BBBC010 fields.

One module-level run (``wormflow nightly``, tiny models trained on the in-repository labeled subset)
processes three nights as a lab's imager writes them:

* ``2026-11-23``: well D05 of the plate, two 16-bit channel files (real);
* ``2026-11-24``: well B04 (both channels) and D24 with only its fluorescence channel (real; the
  plate's own missing-channel well);
* ``2026-11-30``: constructed faults between those cases: a well with two files for one channel,
  a well whose channels differ in size, a big single RGB image (tiled like a field) and a small one
  (scored whole), and a stray text file.

Checked: every file of every night is part of a scored field, a scored image, or quarantined with
its reason; the HDF5 layout of each method's tiles, maps and per-field numbers holds together; the
summary and the report's plate view say the same, in headless Chromium; and ``wormflow score
--images`` scores a field night exactly as the workflow did.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from browser import browse
from nightly_helpers import nightly, pin_code, write_overlay
from PIL import Image

from wormflow.scorefields import read_field_scores
from wormflow.scorefile import read_score_file

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "data" / "bbbc010"
METHODS = ["vae", "gan", "resnet50", "dark_pixels"]
NIGHTS = ["2026-11-23", "2026-11-24", "2026-11-30"]
PLATE = "1649_1109_0003_Amp5-1_B_20070424"


def _constructed_night(dst: Path) -> dict[str, str]:
    """The faults between the real cases; returns {file: words its quarantine reason holds}."""
    dst.mkdir(parents=True)
    src = FIXTURE / "fields" / "batches" / "2026-11-23"
    w1 = tifffile.imread(next(src.glob("*_w1_*.tif")))
    w2 = tifffile.imread(next(src.glob("*_w2_*.tif")))
    expect = {}
    names = [f"{PLATE}_E07_w1_AAA.tif", f"{PLATE}_E07_w1_BBB.tif", f"{PLATE}_E07_w2_CCC.tif"]
    for name, plane in zip(names, (w1, w1[::-1], w2)):
        tifffile.imwrite(dst / name, plane)
        expect[name] = "2 files for channel w1"
    names = [f"{PLATE}_F09_w1_DDD.tif", f"{PLATE}_F09_w2_EEE.tif"]
    for name, plane in zip(names, (w1[:, :600], w2)):
        tifffile.imwrite(dst / name, plane)
        expect[name] = "differ in size"
    rgb = np.stack([w1, w2, w2], -1)
    big = (rgb[:300, :400] >> 8).astype(np.uint8)
    Image.fromarray(big).save(dst / "overview.png")
    Image.fromarray(big[100:164, 100:164]).save(dst / "patch.png")
    (dst / "notes.txt").write_text("imager log, not an image")
    expect["notes.txt"] = ""
    return expect


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fields-night")
    case = root / "case"
    batches = case / "batches"
    batches.mkdir(parents=True)
    for night in NIGHTS[:2]:
        shutil.copytree(FIXTURE / "fields" / "batches" / night, batches / night)
    expect = _constructed_night(batches / NIGHTS[2])
    write_overlay(case, FIXTURE / "labeled", {"report": {"max_well_thumbnails": 8}})
    pin_code()
    proc = nightly(case)
    return {"case": case, "results": case / "results", "expect": expect, "log": proc.stdout or "", "root": root}


def _batch(run, night: str) -> Path:
    return run["results"] / "batches" / night


def test_every_file_of_every_night_is_scored_or_quarantined_with_its_reason(run):
    for night in NIGHTS:
        files = {p.name for p in (run["case"] / "batches" / night).iterdir()}
        scores = _batch(run, night) / "scores.h5"
        sf = read_score_file(scores, METHODS)
        fs = read_field_scores(str(scores), METHODS)
        in_fields = [f for u in fs.units for f in u.files]
        quarantined = {q["id"]: q["reason"] for q in sf.quarantine}
        accounted = sf.ids + in_fields + list(quarantined)
        assert sorted(accounted) == sorted(files), night  # each file exactly once
        assert sf.attrs["n_scored"] == len(sf.ids) + len(in_fields)
        summary = json.loads((_batch(run, night) / "summary.json").read_text())
        block = summary["fields"]
        assert block["n_fields"] == len(fs.units) and len(block["wells"]) == block["n_fields"] + block["n_quarantined"]
        for m in METHODS:
            assert m in fs.methods or not fs.units
    q24 = {q["id"]: q["reason"] for q in read_score_file(_batch(run, "2026-11-24") / "scores.h5").quarantine}
    assert len(q24) == 1 and "channel w2 missing" in next(iter(q24.values()))
    q30 = {q["id"]: q["reason"] for q in read_score_file(_batch(run, "2026-11-30") / "scores.h5").quarantine}
    for name, words in run["expect"].items():
        assert words in q30[name], (name, q30[name])
    fs30 = read_field_scores(str(_batch(run, "2026-11-30") / "scores.h5"), METHODS)
    assert [(u.id, u.kind) for u in fs30.units] == [("overview.png", "image")]
    assert read_score_file(_batch(run, "2026-11-30") / "scores.h5").ids == ["patch.png"]


def test_hdf5_tiles_maps_and_field_numbers_hold_together(run):
    for night in ("2026-11-23", "2026-11-24"):
        path = _batch(run, night) / "scores.h5"
        fs = read_field_scores(str(path), METHODS)
        assert [u.well for u in fs.units] == (["D05"] if night == "2026-11-23" else ["B04"])
        assert all(tuple(u.hw) == (520, 696) and len(u.files) == 2 for u in fs.units)
        with h5py.File(path, "r") as f:
            for m in METHODS:
                res = fs.methods[m]
                n_tiles = res.units["n_tiles"]
                assert all(len(v) == n_tiles.sum() for v in res.tiles.values()), m
                for k, unit in enumerate(fs.units):
                    rows = res.tiles["unit"] == k
                    inside = res.tiles["in_area"][rows].astype(bool)
                    score, pred = res.tiles["score"][rows], res.tiles["pred"][rows]
                    assert res.units["n_in_area"][k] == inside.sum() > 0
                    assert res.units["n_wormed"][k] == (pred[inside] == 1).sum()
                    assert res.units["pred"][k] == int((pred[inside] == 1).any())
                    assert res.units["max_score"][k] == pytest.approx(float(score[inside].max()))
                    assert np.isnan(score[~inside]).all()
                    covered = np.zeros(unit.hw, bool)
                    for y, x in zip(res.tiles["y"][rows], res.tiles["x"][rows]):
                        covered[y : y + res.attrs["tile"], x : x + res.attrs["tile"]] = True
                    assert covered.all(), "the tile grid leaves pixels of the field uncovered"
                    field_map = f[f"{m}/maps/{k}"]
                    assert field_map.shape == tuple(unit.hw) and field_map.dtype == np.uint8
                    assert 0.0 <= res.units["worm_share"][k] <= 1.0
                expected_map = "error_map" if m in ("vae", "gan") else "tile scores"
                assert res.attrs["map"] == expected_map and (res.attrs["tile"], res.attrs["stride"]) == (64, 32)


def test_real_wormed_well_is_flagged_by_the_floor(run):
    """B04 holds worms (its mask): the dark-pixel floor's tiles over them are flagged."""
    path = _batch(run, "2026-11-24") / "scores.h5"
    fs = read_field_scores(str(path), ["dark_pixels"])
    res = fs.methods["dark_pixels"]
    mask = np.asarray(Image.open(FIXTURE / "fields" / "masks" / "B04_binary.png").convert("L")) > 0
    t = res.attrs["tile"]
    share = np.array([mask[y : y + t, x : x + t].mean() for y, x in zip(res.tiles["y"], res.tiles["x"])])
    inside = res.tiles["in_area"].astype(bool)
    wormy, clean = inside & (share >= 0.05), inside & (share == 0)
    assert wormy.sum() > 5 and clean.sum() > 20
    assert res.tiles["score"][wormy].min() > np.median(res.tiles["score"][clean])
    assert res.units["pred"][0] == 1


def test_summary_and_plate_view_in_headless_chromium(run, tmp_path):
    report = run["results"] / "report.html"
    html = report.read_text(encoding="utf-8")
    assert 'id="plates"' in html
    summary = json.loads((_batch(run, "2026-11-24") / "summary.json").read_text())
    wells = {w["well"]: w for w in summary["fields"]["wells"]}
    assert wells["D24"]["status"] == "quarantined" and "channel w2 missing" in wells["D24"]["reason"]
    assert wells["B04"]["status"] == "ok" and set(wells["B04"]["methods"]) == set(METHODS)
    assert "D24: channel w2 missing" in html
    thumbs = json.loads((_batch(run, "2026-11-24") / "thumbnails.json").read_text())
    assert set(thumbs["wells"]) == {w["id"] for w in summary["fields"]["wells"] if w["status"] == "ok"}
    b04 = next(iter(thumbs["wells"].values()))
    assert b04["composite"].startswith("data:image/jpeg;base64,") and set(b04["maps"]) == set(METHODS)
    assert thumbs["size"] == [160, 120]  # thumbnail_width 160, 696×520 fields
    problems, page, png = browse(report, tmp_path)
    assert problems == [], problems
    assert page["broken"] == 0 and page["images"] >= 4 and not [u for u in page["fetched"] if not u.startswith("data:")]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_wormflow_score_images_scores_a_field_night_as_the_workflow_did(run):
    from wormflow import paths as P

    model = run["case"] / P.model("dark_pixels", 0)
    out = run["root"] / "cli-scores.h5"
    night = run["case"] / "batches" / "2026-11-24"
    cmd = [sys.executable, "-m", "wormflow.cli", "score", "--model", str(model), "--images", str(night), "--out", str(out)]
    cmd += ["--configfile", str(REPO / "tests" / "configs" / "tiny.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=run["case"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = read_field_scores(str(out), ["dark_pixels"])
    theirs = read_field_scores(str(_batch(run, "2026-11-24") / "scores.h5"), ["dark_pixels"])
    assert [u.id for u in ours.units] == [u.id for u in theirs.units]
    for c in ("score", "pred", "y", "x", "in_area"):
        np.testing.assert_array_equal(ours.methods["dark_pixels"].tiles[c], theirs.methods["dark_pixels"].tiles[c])
    np.testing.assert_array_equal(ours.map("dark_pixels", 0), theirs.map("dark_pixels", 0))
    quarantined = [q["id"] for q in read_score_file(out).quarantine]
    assert len(quarantined) == 1 and "_D24_w1_" in quarantined[0]
