"""The synthetic demo dataset (wormflow.demo)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from wormflow import demo
from wormflow.demo import generate_demo

CLASSES = ("no_wormed", "wormed")
SPLITS = ("train", "dev", "test")
SMALL = {"size": 48, "n_train": 3, "n_dev": 2, "n_test": 2, "batches": (("b1", 5), ("b2", 4))}


def _pngs(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (relative path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_labels(root: Path) -> list[dict[str, str]]:
    with open(root / "batches" / "labels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _dark_fraction(rgb: np.ndarray) -> float:
    """Hand feature: share of brightfield pixels darker than 70 % of the image's 75th percentile."""
    g = rgb[..., 1].astype(np.float64)
    return float((g < 0.7 * np.percentile(g, 75)).mean())


def _no_temp_leftovers(parent: Path) -> bool:
    return not [p.name for p in parent.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("default") / "demo"
    return out, generate_demo(out)


def test_layout_and_counts(default_demo):
    out, summary = default_demo
    assert sorted(p.name for p in out.iterdir()) == ["batches", "labeled"]
    assert sorted(p.name for p in (out / "labeled").iterdir()) == sorted(SPLITS)
    expected = {"train": 24, "dev": 12, "test": 12}
    for split in SPLITS:
        assert sorted(p.name for p in (out / "labeled" / split).iterdir()) == list(CLASSES)
        for cls in CLASSES:
            files = sorted(p.name for p in (out / "labeled" / split / cls).iterdir())
            assert files == [f"demo_{split}_{cls}_{i:03d}.png" for i in range(expected[split])]
            assert summary["labeled"][split][cls] == expected[split]
    assert sorted(p.name for p in (out / "batches").iterdir()) == ["demo-batch-1", "demo-batch-2", "labels.csv"]
    for batch in ("demo-batch-1", "demo-batch-2"):
        files = sorted(p.name for p in (out / "batches" / batch).iterdir())
        assert files == [f"img_{i:04d}.png" for i in range(30)]
        assert summary["batches"][batch] == {"no_wormed": 15, "wormed": 15}
    assert summary["n_images"] == 2 * (24 + 12 + 12) + 60
    assert summary["seed"] == 0 and summary["size"] == 96
    assert Path(summary["out_dir"]) == out.absolute()
    json.dumps(summary)  # plain JSON-able data
    assert _no_temp_leftovers(out.parent)


def test_labels_csv_consistent_with_files(default_demo):
    out, summary = default_demo
    rows = _read_labels(out)
    assert list(rows[0]) == ["batch", "file", "label", "well", "worm_frac"]  # the columns of the real labels.csv
    on_disk = sorted(p.relative_to(out / "batches").as_posix() for p in (out / "batches").rglob("*.png"))
    assert sorted(r["file"] for r in rows) == on_disk
    for r in rows:
        assert r["file"].split("/")[0] == r["batch"]
        assert r["label"] in CLASSES
        assert (float(r["worm_frac"]) > 0) == (r["label"] == "wormed")
    for batch, counts in summary["batches"].items():
        labels = [r["label"] for r in rows if r["batch"] == batch]
        assert {cls: labels.count(cls) for cls in CLASSES} == counts
        # file order must not reveal the label: the wormed images are not simply the first (or last) ones
        assert labels != sorted(labels) and labels != sorted(labels, reverse=True)


def test_images_are_rgb_pngs_of_the_right_size(default_demo):
    out, _ = default_demo
    files = sorted(out.rglob("*.png"))
    assert len(files) == 156
    digests = set()
    for f in files:
        with Image.open(f) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (96, 96)
            assert not im.info, f"{f} carries PNG metadata {im.info}"
            rgb = np.asarray(im)
        assert np.array_equal(rgb[..., 1], rgb[..., 2]), "brightfield: G == B"
        assert rgb[..., 1].mean() > 80, "bright brightfield background"
        digests.add(hashlib.sha256(rgb.tobytes()).hexdigest())
    assert len(digests) == len(files), "no two images are identical"


def test_classes_learnable_by_dark_pixel_fraction(default_demo):
    out, _ = default_demo
    scores, labels = [], []
    for label, cls in enumerate(CLASSES):
        for f in sorted((out / "labeled").glob(f"*/{cls}/*.png")):
            scores.append(_dark_fraction(np.asarray(Image.open(f))))
            labels.append(label)
    assert roc_auc_score(labels, scores) > 0.85
    scores = np.array(scores)
    labels = np.array(labels)
    # not trivially identical within a class: the feature varies, and some no_wormed patches have dark pixels too
    assert scores[labels == 1].std() > 0.01
    assert (scores[labels == 0] > 0).any()


def test_some_worms_glow_red(default_demo):
    out, _ = default_demo
    red_share = {
        cls: np.mean([(np.asarray(Image.open(f))[..., 0] > 100).mean() > 0.01 for f in (out / "labeled").glob(f"*/{cls}/*.png")])
        for cls in CLASSES
    }
    assert 0.15 < red_share["wormed"] < 0.8
    assert red_share["no_wormed"] == 0


def test_same_seed_gives_identical_bytes_other_seed_differs(tmp_path):
    a = _pngs(Path(generate_demo(tmp_path / "a", seed=7, **SMALL)["out_dir"]))
    b = _pngs(Path(generate_demo(tmp_path / "b", seed=7, **SMALL)["out_dir"]))
    c = _pngs(Path(generate_demo(tmp_path / "c", seed=8, **SMALL)["out_dir"]))
    assert a == b
    assert sorted(a) == sorted(c)
    differing = [name for name in a if name.endswith(".png") and a[name] != c[name]]
    assert len(differing) == sum(name.endswith(".png") for name in a)


def test_each_image_has_its_own_seed(tmp_path):
    """Asking for more images does not change the ones already there."""
    small = _pngs(Path(generate_demo(tmp_path / "small", seed=3, size=32, n_train=2, n_dev=1, n_test=1, batches=())["out_dir"]))
    large = _pngs(Path(generate_demo(tmp_path / "large", seed=3, size=32, n_train=4, n_dev=1, n_test=1, batches=())["out_dir"]))
    pngs = {k: v for k, v in small.items() if k.endswith(".png")}
    assert pngs and all(large[k] == v for k, v in pngs.items())


def test_rerun_replaces_existing_out_dir(tmp_path):
    out = tmp_path / "demo"
    generate_demo(out, seed=1, **SMALL)
    stray = out / "labeled" / "train" / "wormed" / "stray.png"
    stray.write_bytes(b"not a png")
    (out / "batches" / "old-batch").mkdir()
    summary = generate_demo(out, seed=2, size=32, n_train=1, n_dev=1, n_test=1, batches=(("new", 2),))
    assert not stray.exists() and not (out / "batches" / "old-batch").exists()
    assert sorted(p.name for p in (out / "batches").iterdir()) == ["labels.csv", "new"]
    assert len(list(out.rglob("*.png"))) == 2 * 3 + 2
    assert summary["labeled"]["train"] == {"no_wormed": 1, "wormed": 1}
    with Image.open(next(out.rglob("*.png"))) as im:
        assert im.size == (32, 32)
    assert _no_temp_leftovers(tmp_path)
    fresh = _pngs(
        Path(generate_demo(tmp_path / "fresh", seed=2, size=32, n_train=1, n_dev=1, n_test=1, batches=(("new", 2),))["out_dir"])
    )
    assert _pngs(out) == fresh


def test_empty_existing_dir_is_filled(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    generate_demo(out, size=32, n_train=1, n_dev=1, n_test=1, batches=())
    assert len(list(out.rglob("*.png"))) == 6


def test_refuses_to_replace_an_unrelated_directory(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(FileExistsError):
        generate_demo(out, size=32, n_train=1, n_dev=1, n_test=1, batches=())
    assert (out / "thesis.tex").read_text() == "do not delete"
    assert _no_temp_leftovers(tmp_path)


def test_interrupted_run_keeps_the_old_dataset(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    generate_demo(out, seed=1, **SMALL)
    before = _pngs(out)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "write_batches", boom)
    with pytest.raises(KeyboardInterrupt):
        generate_demo(out, seed=2, **SMALL)
    assert _pngs(out) == before
    assert _no_temp_leftovers(tmp_path)


def test_interrupted_first_run_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "write_batches", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        generate_demo(tmp_path / "demo", **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 8},
        {"n_train": -1},
        {"batch_worm_share": 1.5},
        {"batches": (("a", 2), ("a", 3))},
        {"batches": (("../escape", 2),)},
        {"batches": ((".hidden", 2),)},
        {"batches": (("a", -1),)},
        {"seed": -1},
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_demo(tmp_path / "demo", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_batch_worm_share(tmp_path):
    summary = generate_demo(tmp_path / "d", size=32, n_train=0, n_dev=0, n_test=0, batches=(("x", 10),), batch_worm_share=0.2)
    assert summary["batches"]["x"] == {"no_wormed": 8, "wormed": 2}
    for split in SPLITS:
        for cls in CLASSES:
            assert (tmp_path / "d" / "labeled" / split / cls).is_dir()


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [str(out), "--seed", "5", "--size", "32", "--n-train", "2", "--n-dev", "1", "--n-test", "1"]
    assert demo.main([*argv, "--batch", "night-1:4", "--batch", "night-2:2", "--batch-worm-share", "0.5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["batches"] == {"night-1": {"no_wormed": 2, "wormed": 2}, "night-2": {"no_wormed": 1, "wormed": 1}}
    assert summary["labeled"]["train"] == {"no_wormed": 2, "wormed": 2}
    api = generate_demo(tmp_path / "api", seed=5, size=32, n_train=2, n_dev=1, n_test=1, batches=(("night-1", 4), ("night-2", 2)))
    assert _pngs(out) == _pngs(Path(api["out_dir"]))
    with pytest.raises(SystemExit):
        demo.main([str(tmp_path / "bad"), "--batch", "no-count"])
    with pytest.raises(SystemExit):
        demo.main([str(tmp_path / "bad"), "--size", "4"])
