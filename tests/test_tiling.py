"""Fields through the pipeline's own steps: manifest → decode → score → gather, on constructed plates.

A constructed two-channel 16-bit field (a bright well, two dark worms at known positions) is
scored tile by tile with a real artifact (the dark-pixel floor, fitted in a second) and the
gathered ``scores.h5`` is checked against what is known by construction and recomputed by hand:
the worms' tiles and only they are flagged, every stored tile score is the model's score of that
crop, the stitched map is the mean of the covering tiles' scores at every pixel, the per-field
numbers follow from tiles and map, and the HDF5 layout holds together.  Faulty fields of the same
night (a channel missing, two files for one channel, mismatched sizes, mixed bit depths, an
unreadable channel, a file rewritten after listing) end in the quarantine with their reasons while
the good fields are scored: every file is accounted for exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from wormflow.artifact import Artifact
from wormflow.config import load_config
from wormflow.data import LabeledImages
from wormflow.pipeline import decode_shard_step, gather_step, manifest_step, score_shard_step
from wormflow.scorefields import read_field_scores
from wormflow.scorefile import read_score_file
from wormflow.store import ImageStore
from wormflow.tiling import Tiling, plan_unit, resize_tiles
from wormflow.train import train

H, W = 176, 240
TILE, STRIDE = 32, 16
SIZE = 32  # the model's input side
# Two worms (dark brightfield) inside the well: (y0, y1, x0, x1)
WORMS = [(60, 66, 70, 130), (90, 150, 160, 166)]
WORMS_OF = {"D11": WORMS[:1]}  # one worm only
TILING = {"tile": TILE, "stride": STRIDE, "min_in_area": 0.5, "thumbnail_width": 80}


def _cfg() -> dict:
    cfg = load_config()
    cfg["fields"]["specimen_margin"] = 4
    return cfg


def _planes(seed: int = 0, shape=(H, W), dtype=np.uint16, worms=WORMS) -> tuple[np.ndarray, np.ndarray]:
    """(w1 fluorescence, w2 brightfield): a bright well on a slightly darker plate, dark worms in the well."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    well = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (0.45 * min(h, w) * 1.3) ** 2
    bf = np.where(well, 30000, 26000) + rng.integers(-150, 150, shape)
    for y0, y1, x0, x1 in worms:
        if y1 <= h and x1 <= w:
            bf[y0:y1, x0:x1] = 6000 + rng.integers(-150, 150, (y1 - y0, x1 - x0))
    fl = 1000 + rng.integers(0, 300, shape)
    scale = 1 if dtype == np.uint16 else 1 / 256
    return (fl * scale).astype(dtype), (bf * scale).astype(dtype)


def _write_field(root: Path, well: str, planes, channels=("w1", "w2"), suffix="AB12") -> list[str]:
    names = []
    for ch, plane in zip(channels, planes):
        name = f"plate7_2026-11-30_{well}_{ch}_{suffix}{ch}.tif"
        tifffile.imwrite(root / name, plane)
        names.append(name)
    return names


def _worm_mask(well: str = "B04") -> np.ndarray:
    m = np.zeros((H, W), bool)
    for y0, y1, x0, x1 in WORMS_OF.get(well, WORMS):
        m[y0:y1, x0:x1] = True
    return m


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """The dark-pixel floor fitted on 32 px patches: wormed ones hold a dark bar (≥ 15 % of pixels)."""
    out = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(3)
    imgs = np.full((60, SIZE, SIZE, 3), 220, np.uint8) + rng.integers(0, 20, (60, SIZE, SIZE, 3)).astype(np.uint8)
    for k in range(30, 60):
        y = rng.integers(0, SIZE - 6)
        imgs[k, y : y + 6, :, 1:] = 30
    data = LabeledImages(imgs, np.repeat([0, 1], 30), [f"p{k}" for k in range(60)])
    train("dark_pixels", {"image_size": SIZE, "level": 0.6}, data, data, out, tensorboard=False)
    return str(out / "model.pt")


def _run_night(root: Path, work: Path, model: str, cfg: dict, *, before_decode=None, shard_size: int = 2):
    """manifest → every shard decoded and scored → gather; returns (scores.h5 path, manifest)."""
    manifest = manifest_step(str(root), str(work / "manifest.json"), labeled=False, shard_size=shard_size, fields=cfg["fields"])
    if before_decode:
        before_decode()
    stores, indexes = [], []
    for shard in range(manifest.n_shards):
        store, index = work / f"{shard}.h5", work / f"{shard}.json"
        decode_shard_step(
            str(work / "manifest.json"),
            shard,
            str(store),
            sizes=[SIZE],
            limits=cfg["decode"],
            fields=cfg["fields"],
            tiling=TILING,
        )
        score_shard_step(str(store), {"dark_pixels": {0: model}}, str(index), batch_size=7, shard_size=shard_size, tiling=TILING)
        stores.append(str(store))
        indexes.append(str(index))
    out = work / "scores.h5"
    gather_step(str(work / "manifest.json"), stores, indexes, str(out), methods=["dark_pixels"], shard_size=shard_size)
    return str(out), manifest


@pytest.fixture(scope="module")
def night(tmp_path_factory, model):
    """Three good fields (two worms, two worms, one worm) in two shards; tile batches cross fields and shards."""
    root = tmp_path_factory.mktemp("night")
    work = tmp_path_factory.mktemp("work")
    _write_field(root, "B04", _planes(0))
    _write_field(root, "C07", _planes(1))
    _write_field(root, "D11", _planes(2, worms=WORMS_OF["D11"]))
    path, manifest = _run_night(root, work, model, _cfg())
    return {"root": root, "work": work, "scores": path, "manifest": manifest}


def test_every_counted_tile_is_scored_and_the_worms_tiles_are_flagged(night, model):
    fs = read_field_scores(night["scores"], ["dark_pixels"])
    assert [u.well for u in fs.units] == ["B04", "C07", "D11"]
    res = fs.methods["dark_pixels"]
    for k, unit in enumerate(fs.units):
        worms = _worm_mask(unit.well)
        rows = res.tiles["unit"] == k
        ys, xs = res.tiles["y"][rows], res.tiles["x"][rows]
        inside = res.tiles["in_area"][rows].astype(bool)
        score, pred = res.tiles["score"][rows], res.tiles["pred"][rows]
        assert inside.sum() > 20 and (~inside).sum() > 0  # the plate's corners lie outside the specimen area
        assert np.isnan(score[~inside]).all() and (pred[~inside] == -1).all()
        assert np.isfinite(score[inside]).all() and set(np.unique(pred[inside])) <= {0, 1}
        share = np.array([worms[y : y + TILE, x : x + TILE].mean() for y, x in zip(ys, xs)])
        assert (pred[inside & (share >= 0.15)] == 1).all(), "a tile holding a worm is not flagged"
        assert (pred[inside & (share == 0)] == 0).all(), "a tile without worm pixels is flagged"
    units = res.units
    assert units["pred"].tolist() == [1, 1, 1]
    assert 0 < units["n_wormed"][2] < units["n_wormed"][0]
    assert units["worm_share"][2] < units["worm_share"][0]


def test_tiles_cover_the_field_and_each_score_is_the_models_score_of_its_crop(night, model):
    fs = read_field_scores(night["scores"], ["dark_pixels"])
    res = fs.methods["dark_pixels"]
    scorer = Artifact.load(model).scorer("cpu")
    stores = [ImageStore.open(str(p)) for p in sorted(night["work"].glob("[0-9].h5"))]
    images = {u.id: s.tiled_image(k) for s in stores for k, u in enumerate(s.tiled)}
    for k, unit in enumerate(fs.units):
        rows = res.tiles["unit"] == k
        ys, xs = res.tiles["y"][rows], res.tiles["x"][rows]
        covered = np.zeros(unit.hw, np.int32)
        for y, x in zip(ys, xs):
            covered[y : y + TILE, x : x + TILE] += 1
        assert covered.min() >= 1, "a pixel of the field lies in no tile"
        inside = res.tiles["in_area"][rows].astype(bool)
        rgb = images[unit.id]
        assert rgb.shape[:2] == tuple(unit.hw) == (H, W)
        crops = np.stack([rgb[y : y + TILE, x : x + TILE] for y, x in zip(ys[inside], xs[inside])])
        expected = scorer(resize_tiles(crops, SIZE)).score
        np.testing.assert_allclose(res.tiles["score"][rows][inside], expected, rtol=0, atol=1e-6)
        plan = plan_unit(stores[0].tiled_areas()[0] if k == 0 else _area_of(stores, unit.id), Tiling.from_config(TILING))
        np.testing.assert_array_equal(plan.ys, ys)
        np.testing.assert_array_equal(plan.in_area, inside)


def _area_of(stores, field_id):
    for s in stores:
        for k, u in enumerate(s.tiled):
            if u.id == field_id:
                return s.tiled_areas()[k]
    raise KeyError(field_id)


def test_stitched_map_is_the_mean_of_the_covering_tiles_at_every_pixel(night):
    fs = read_field_scores(night["scores"], ["dark_pixels"])
    res = fs.methods["dark_pixels"]
    assert res.attrs["map"] == "tile scores" and res.attrs["tile"] == TILE and res.attrs["stride"] == STRIDE
    stores = [ImageStore.open(str(p)) for p in sorted(night["work"].glob("[0-9].h5"))]
    for k, unit in enumerate(fs.units):
        rows = res.tiles["unit"] == k
        inside = res.tiles["in_area"][rows].astype(bool)
        ys, xs = res.tiles["y"][rows][inside], res.tiles["x"][rows][inside]
        values = np.clip(res.tiles["score"][rows][inside].astype(np.float64) * 255, 0, 255)
        acc, cnt = np.zeros(unit.hw), np.zeros(unit.hw)
        for y, x, v in zip(ys, xs, values):
            acc[y : y + TILE, x : x + TILE] += v
            cnt[y : y + TILE, x : x + TILE] += 1
        expected = np.where(cnt > 0, np.rint(acc / np.maximum(cnt, 1)), 0).astype(np.uint8)
        field_map = fs.map("dark_pixels", k)
        assert field_map.dtype == np.uint8 and field_map.shape == tuple(unit.hw)
        assert np.abs(field_map.astype(int) - expected.astype(int)).max() <= 1  # float32 accumulation
        # the per-field numbers follow from the map and the tiles
        area = _area_of(stores, unit.id)
        share = float((field_map[area] >= res.attrs["map_threshold"]).mean())
        assert res.units["worm_share"][k] == pytest.approx(share, abs=1e-6)
        assert res.units["n_in_area"][k] == inside.sum() and res.units["n_tiles"][k] == rows.sum()
        assert res.units["max_score"][k] == pytest.approx(float(np.max(res.tiles["score"][rows][inside])))
        # the worm pixels are where the map is high
        worms = _worm_mask(unit.well)
        assert field_map[worms].mean() > 3 * max(1.0, field_map[area & ~worms].mean())


def test_hdf5_layout_of_a_field_night(night):
    with h5py.File(night["scores"], "r") as f:
        ids = [v.decode() for v in f["fields/ids"][()]]
        n = len(ids)
        assert n == 3 and f["fields/hw"].shape == (3, 2)
        assert sorted(f["fields/thumbs"].keys(), key=int) == ["0", "1", "2"]
        assert f["fields/thumbs/0"].shape == (round(H * 80 / W), 80, 3)
        g = f["dark_pixels"]
        n_tiles = g["fields/n_tiles"][()]
        assert all(len(g[f"tiles/{c}"]) == n_tiles.sum() for c in ("unit", "y", "x", "in_area", "score", "pred"))
        assert np.array_equal(np.bincount(g["tiles/unit"][()], minlength=n), n_tiles)
        assert sorted(g["maps"].keys(), key=int) == ["0", "1", "2"]
        for k in range(n):
            assert g[f"maps/{k}"].shape == tuple(f["fields/hw"][k])
    sf = read_score_file(night["scores"], ["dark_pixels"])
    assert sf.ids == [] and sf.quarantine == []  # no single images that night, nothing quarantined
    assert sf.attrs["n_scored"] == 6 and sf.attrs["n_fields"] == 3


def _faulty_night(root: Path) -> dict[str, str]:
    """One good field and six faulty ones; returns {file name: the words its quarantine reason must hold}."""
    expect = {}
    _write_field(root, "A01", _planes(0))
    (name,) = _write_field(root, "A02", _planes(1)[1:], channels=("w2",))
    expect[name] = "w1"
    for n in _write_field(root, "A03", _planes(2)) + _write_field(root, "A03", _planes(3)[:1], channels=("w1",), suffix="ZZ"):
        expect[n] = "w1"
    fl, _ = _planes(4, shape=(H, W - 16))
    _, bf = _planes(4)
    for n in _write_field(root, "A04", (fl, bf)):
        expect[n] = "size"
    fl8, _ = _planes(5, dtype=np.uint8)
    _, bf16 = _planes(5)
    for n in _write_field(root, "A05", (fl8, bf16)):
        expect[n] = "bit"
    names = _write_field(root, "A06", _planes(6))
    (root / names[1]).write_bytes(b"II*\x00" + b"\x00" * 64)  # a truncated TIFF
    for n in names:
        expect[n] = "w2"
    for n in _write_field(root, "A07", _planes(7)):
        expect[n] = "changed"
    return expect


def test_faulty_fields_are_quarantined_with_reasons_and_every_file_is_accounted_for(tmp_path, model):
    root, work = tmp_path / "night", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    expect = _faulty_night(root)

    def rewrite_after_listing():
        target = next(p for p in root.iterdir() if "_A07_w1_" in p.name)
        fl, _ = _planes(99)
        tifffile.imwrite(target, fl)

    path, manifest = _run_night(root, work, model, _cfg(), before_decode=rewrite_after_listing)
    sf = read_score_file(path, ["dark_pixels"])
    fs = read_field_scores(path, ["dark_pixels"])
    quarantined = {q["id"]: q["reason"] for q in sf.quarantine}
    scored = {f for u in fs.units for f in u.files}
    files = {p.name for p in root.iterdir()}
    assert [u.well for u in fs.units] == ["A01"]
    assert scored | set(quarantined) == files and not scored & set(quarantined)
    for name, words in expect.items():
        assert name in quarantined, f"{name} is neither scored nor quarantined"
        assert words.lower() in quarantined[name].lower(), f"{name}: {quarantined[name]!r} does not say {words!r}"
    assert sf.attrs["n_scored"] == 2 and sf.attrs["n_quarantined"] == len(expect)
    assert json.loads(Path(work / "manifest.json").read_text())  # the manifest stays readable


def test_large_single_images_are_tiled_small_ones_scored_whole(tmp_path, model):
    from PIL import Image

    root, work = tmp_path / "night", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    rgb = np.full((100, 150, 3), 220, np.uint8)
    rgb[40:46, 20:80, 1:] = 30
    Image.fromarray(rgb).save(root / "big.png")
    Image.fromarray(rgb[:32, :32]).save(root / "small.png")
    path, _ = _run_night(root, work, model, _cfg())
    sf = read_score_file(path, ["dark_pixels"])
    fs = read_field_scores(path, ["dark_pixels"])
    assert sf.ids == ["small.png"]
    assert [(u.id, u.kind, tuple(u.hw)) for u in fs.units] == [("big.png", "image", (100, 150))]
    res = fs.methods["dark_pixels"]
    assert res.tiles["in_area"].all(), "all of a single image is specimen area"
    assert res.units["pred"][0] == 1 and sf.attrs["n_scored"] == 2


def test_a_read_error_in_a_field_mid_shard_fails_the_job_and_leaves_no_scores(tmp_path, model):
    """A damaged chunk in the second field of a shard (a bad disk block, a short NFS read): the scoring job
    fails naming the store, writes no part and no index, and removes the store so the next run decodes it
    again — never a map stitched from garbage or a part with the first field only."""
    from wormflow.store import DamagedInputError

    root, work = tmp_path / "night", tmp_path / "work"
    root.mkdir()
    work.mkdir()
    _write_field(root, "B04", _planes(0))
    _write_field(root, "C07", _planes(1))
    cfg = _cfg()
    manifest_step(str(root), str(work / "manifest.json"), labeled=False, shard_size=2, fields=cfg["fields"])
    store = work / "0.h5"
    decode_shard_step(
        str(work / "manifest.json"), 0, str(store), sizes=[SIZE], limits=cfg["decode"], fields=cfg["fields"], tiling=TILING
    )
    with h5py.File(store, "r") as f:
        info = f["tiled/rgb/1"].id.get_chunk_info_by_coord((H // 2, 0, 0))
        offset, size = info.byte_offset, info.size
    with open(store, "r+b") as fh:
        fh.seek(offset + size // 3)
        fh.write(b"\xff" * (size // 3))
    index = work / "0.json"
    with pytest.raises(DamagedInputError, match="could not be read"):
        score_shard_step(str(store), {"dark_pixels": {0: model}}, str(index), batch_size=7, shard_size=2, tiling=TILING)
    assert not index.exists()
    assert not list((work / "0.parts").glob("*.h5")), "a score part was written from a partial read"
    assert not store.exists(), "the damaged store was kept: every later night would fail on it"
