"""The real BBBC010 data the tests use: the in-repository subset and the full data beside the repository.

The subset (``tests/data/bbbc010``, made by ``tests/data/make_fixture.py``) is checked in every clone:
its layout is the full data's, its split is by well, and every listed file is there.  With the full
data (fixture ``bbbc010_full``: a skip without them, a failure in CI) the subset is also checked to be
the full data's own bytes and exactly what the script makes, and the full data against their README,
including the accuracy that the README reports for the one-feature floor on all dev and test patches.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from realdata import load_split

from wormflow.decision import choose_threshold, f1_at
from wormflow.methods.dark_pixels import dark_share

REPO = Path(__file__).resolve().parents[1]
SUBSET = REPO / "tests" / "data" / "bbbc010"
SCRIPT = REPO / "tests" / "data" / "make_fixture.py"
SPLITS = ("train", "dev", "test")
CLASSES = ("no_wormed", "wormed")
TIFF_NAME = re.compile(r"^\d{4}_\d{4}_\d{4}_[^_]+_[A-Z]_\d{8}_(?P<well>[A-P]\d{2})_(?P<ch>w[12])_[0-9A-F-]{36}\.tif$")
MAX_SUBSET_BYTES = 10_000_000  # the subset stays small (it is in every clone); most of it is ten 16-bit TIFFs


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def files_below(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_layout(root: Path) -> dict:
    """What the tests rely on in either copy of the data; returns the wells per split."""
    summary = json.loads((root / "labeled" / "summary.json").read_text())
    wells = {s: set(summary["wells"][s]) for s in SPLITS}
    assert not (wells["train"] & wells["dev"] or wells["train"] & wells["test"] or wells["dev"] & wells["test"])
    patches = rows(root / "labeled" / "patches.csv")
    assert sorted(r["file"] for r in patches) == sorted(p for p in files_below(root / "labeled") if p.endswith(".png")), (
        "labeled/patches.csv lists exactly the labeled PNGs"
    )
    for r in patches:
        assert r["file"] == f"{r['split']}/{r['label']}/{Path(r['file']).name}" and r["well"] in wells[r["split"]], r
        assert Path(r["file"]).name.startswith(f"{r['well']}_"), r
    for s in SPLITS:
        for c in CLASSES:
            n = sum(1 for r in patches if r["split"] == s and r["label"] == c)
            assert n == summary["counts"][s][c] == len(list((root / "labeled" / s / c).glob("*.png"))), (s, c)

    labels = rows(root / "batches" / "labels.csv")
    batches = sorted(p.name for p in (root / "batches").iterdir() if p.is_dir())
    assert len(batches) == 3  # the nightly tests take two old batches and a new one
    assert sorted(r["file"] for r in labels) == [f"{b}/{p}" for b in batches for p in files_below(root / "batches" / b)], (
        "batches/labels.csv lists exactly the batch files"
    )
    for r in labels:
        assert r["file"].startswith(f"{r['batch']}/{r['well']}_") and r["label"] in CLASSES, r
        assert r["well"] in wells["dev"] | wells["test"], r  # never cut from a training well
    for b in batches:
        assert {r["label"] for r in labels if r["batch"] == b} == set(CLASSES), b
    labeled_bytes = {digest(root / "labeled" / r["file"]) for r in patches}
    assert not any(digest(root / "batches" / r["file"]) in labeled_bytes for r in labels)

    fields = root / "fields"
    table = rows(fields / "wells.csv")
    listed = sorted(r[ch] for r in table for ch in ("w1", "w2") if r[ch])
    assert listed == files_below(fields / "images"), "fields/wells.csv lists exactly fields/images"
    for r in table:
        assert (fields / "masks" / r["mask"]).is_file() and r["mask"] == f"{r['well']}_binary.png", r
        assert r["split"] in (*SPLITS, "none") and (r["split"] == "none" or r["well"] in wells[r["split"]]), r
        for ch in ("w1", "w2"):
            if r[ch]:
                m = TIFF_NAME.match(r[ch])
                assert m and (m["well"], m["ch"]) == (r["well"], ch), r[ch]
    assert any(r["w1"] and not r["w2"] for r in table), "a well with only its w1 file (D24)"
    split_of = {r["well"]: r["split"] for r in table}
    nights = sorted(p.name for p in (fields / "batches").iterdir() if p.is_dir())
    assert len(nights) == 2
    for night in nights:
        for name in files_below(fields / "batches" / night):
            m = TIFF_NAME.match(name)
            assert m and m["well"] in split_of, (night, name)
            assert digest(fields / "batches" / night / name) == digest(fields / "images" / name), (night, name)
    return {"wells": wells, "nights": nights, "split_of": split_of}


def test_subset_has_the_layout_of_the_full_data():
    info = check_layout(SUBSET)
    summary = json.loads((SUBSET / "labeled" / "summary.json").read_text())
    assert "fixture" in summary  # how conftest tells the subset from the full data
    for s, (wells, per_class) in {"train": (10, 20), "dev": (4, 8), "test": (4, 8)}.items():
        assert len(info["wells"][s]) == wells and summary["counts"][s] == dict.fromkeys(CLASSES, per_class), s
    # a dev night and a test night, each with a well with worms and both channels; one night with D24's w1 only
    night_wells = {}
    for night in info["nights"]:
        found = {}
        for name in files_below(SUBSET / "fields" / "batches" / night):
            m = TIFF_NAME.match(name)
            found.setdefault(m["well"], set()).add(m["ch"])
        night_wells[night] = found
    splits = [{info["split_of"][w] for w, ch in found.items() if ch == {"w1", "w2"}} for found in night_wells.values()]
    assert splits == [{"dev"}, {"test"}], night_wells
    assert [w for found in night_wells.values() for w, ch in found.items() if ch == {"w1"}] == ["D24"], night_wells
    assert all(f > 0 for f in (float(r["worm_area_frac"]) for r in rows(SUBSET / "fields" / "wells.csv")))


def test_subset_images_are_what_they_claim():
    for path in sorted((SUBSET / "labeled").rglob("*.png")) + sorted((SUBSET / "batches").rglob("*.png")):
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (64, 64)), path
    for path in sorted((SUBSET / "fields").rglob("*.tif")):
        image = tifffile.imread(path)
        assert image.shape == (520, 696) and image.dtype == np.uint16, path
    for path in sorted((SUBSET / "fields" / "masks").glob("*.png")):
        with Image.open(path) as im:
            assert im.size == (696, 520), path


def test_subset_is_small():
    total = sum(p.stat().st_size for p in SUBSET.rglob("*") if p.is_file())
    assert total < MAX_SUBSET_BYTES, f"tests/data/bbbc010 holds {total:,} bytes"


# --------------------------------------------------------------------------- with the full data


def test_subset_is_the_full_data_s_own_bytes(bbbc010_full):
    full_summary = json.loads((bbbc010_full / "labeled" / "summary.json").read_text())
    incomplete = {r["well"] for r in rows(bbbc010_full / "fields" / "wells.csv") if not (r["w1"] and r["w2"])}
    for rel in files_below(SUBSET):
        mine, theirs = SUBSET / rel, bbbc010_full / rel
        if rel == "README.md":
            continue
        if rel == "labeled/summary.json":
            summary = json.loads(mine.read_text())
            assert summary["params"] == full_summary["params"]
            assert all(set(summary["wells"][s]) <= set(full_summary["wells"][s]) for s in SPLITS)
        elif rel.endswith(".csv"):
            full_lines = theirs.read_bytes().splitlines(keepends=True)
            lines = mine.read_bytes().splitlines(keepends=True)
            assert lines[0] == full_lines[0] and set(lines[1:]) <= set(full_lines[1:]), rel
        elif not theirs.exists() and rel.startswith("fields/batches/"):
            # the one addition: the incomplete well's file, put into a night from fields/images
            assert TIFF_NAME.match(mine.name)["well"] in incomplete, rel
            assert mine.read_bytes() == (bbbc010_full / "fields" / "images" / mine.name).read_bytes(), rel
        else:
            assert mine.read_bytes() == theirs.read_bytes(), rel


def test_make_fixture_reproduces_the_subset(bbbc010_full, tmp_path):
    out = tmp_path / "bbbc010"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--shared", str(bbbc010_full), "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert files_below(out) == files_below(SUBSET)
    for rel in files_below(SUBSET):
        assert (out / rel).read_bytes() == (SUBSET / rel).read_bytes(), f"{rel}: re-run tests/data/make_fixture.py"
    # it replaces its own output, and nothing else
    subprocess.run([sys.executable, str(SCRIPT), "--shared", str(bbbc010_full), "--out", str(out)], check=True)
    other = tmp_path / "other"
    (other / "keep").mkdir(parents=True)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--shared", str(bbbc010_full), "--out", str(other)])
    assert proc.returncode != 0 and (other / "keep").is_dir()


def test_full_data_as_the_readme_describes(bbbc010_full):
    info = check_layout(bbbc010_full)
    assert {s: len(w) for s, w in info["wells"].items()} == {"train": 70, "dev": 13, "test": 14}
    patches = rows(bbbc010_full / "labeled" / "patches.csv")
    assert len(patches) == 386
    counts = {(s, c): sum(1 for r in patches if (r["split"], r["label"]) == (s, c)) for s in SPLITS for c in CLASSES}
    assert counts == {
        ("train", "no_wormed"): 138, ("train", "wormed"): 140,
        ("dev", "no_wormed"): 26, ("dev", "wormed"): 26,
        ("test", "no_wormed"): 28, ("test", "wormed"): 28,
    }  # fmt: skip
    assert len(files_below(bbbc010_full / "fields" / "images")) == 195
    # fields/README.md says "100 wells" of masks; there are 98, one per row of wells.csv (C13, C14 absent)
    assert len(files_below(bbbc010_full / "fields" / "masks")) == len(rows(bbbc010_full / "fields" / "wells.csv")) == 98


def test_dark_pixel_floor_on_all_dev_and_test_patches(bbbc010_full):
    """The README's accuracy for the one hand-made feature (test F1 ≈ 0.96-1.0, threshold tuned on dev),
    on all 52 dev and 56 test patches: too few in the subset to say anything."""
    dev, test = load_split(bbbc010_full, "dev", 64), load_split(bbbc010_full, "test", 64)
    assert (len(dev.labels), len(test.labels)) == (52, 56)
    choice = choose_threshold(dark_share(dev.images), dev.labels)
    test_f1 = float(f1_at(dark_share(test.images), test.labels, [choice.threshold])[0])
    assert test_f1 >= 0.96, (choice, test_f1)
