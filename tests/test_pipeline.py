"""The pipeline steps under faults: a score never lands on another image's row.

A corrupted gzip chunk in the middle of a shard's image store (a damaged disk block, a short
read on NFS) must fail the scoring job, not end the shard early; a score part whose ids or row
counts do not match its shard's store must fail the gather, not shift every later row; and a
writer refuses columns of unequal length.  (On main these faults gave a complete-looking
``scores.h5`` with ``img048`` carrying ``img064``'s score and zeros at the end.)
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from wormflow.data import LabeledImages
from wormflow.inventory import Entry, Manifest
from wormflow.pipeline import gather_step, read_score_index, score_shard_step
from wormflow.scorefile import RowCountError, read_score_file, write_score_part
from wormflow.store import DamagedInputError, ImageStore, ImageStoreWriter
from wormflow.train import train

SIZE = 16
N = 64


def _images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def _store(path: Path, ids: list[str], images: np.ndarray) -> None:
    w = ImageStoreWriter(
        path, [SIZE], rows=16, filters={"compression": "gzip", "compression_opts": 1}, attrs={"shard_digest": "d"}
    )
    for i, img in zip(ids, images):
        w.add(i, -1, "0" * 64, (SIZE, SIZE), {SIZE: img})
    w.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """The dark-pixel floor, fitted in a second: a real artifact that scores any image."""
    out = tmp_path_factory.mktemp("model")
    imgs = _images(40, seed=1)
    imgs[20:, :4, :, 1] = 0  # a dark band: the 'wormed' half
    data = LabeledImages(imgs, np.repeat([0, 1], 20), [f"i{k}" for k in range(40)])
    train("dark_pixels", {"image_size": SIZE, "level": 0.6}, data, data, out, tensorboard=False)
    return str(out / "model.pt")


def _corrupt_chunk(path: Path, row: int) -> None:
    """Overwrite the middle of the compressed chunk holding ``row`` with garbage."""
    with h5py.File(path, "r") as f:
        ds = f[f"images/{SIZE}"]
        info = ds.id.get_chunk_info_by_coord((row, 0, 0, 0))
        offset, size = info.byte_offset, info.size
    with open(path, "r+b") as fh:
        fh.seek(offset + size // 3)
        fh.write(b"\xff" * (size // 3))


def test_a_corrupted_chunk_mid_shard_fails_the_scoring_job(tmp_path, model):
    ids = [f"img{k:03d}.png" for k in range(N)]
    store = tmp_path / "0.images.h5"
    _store(store, ids, _images(N))
    _corrupt_chunk(store, 48)  # the fourth of four chunks of 16 rows
    index = tmp_path / "0.scores.json"
    with pytest.raises(DamagedInputError, match="0.images.h5 could not be read"):
        score_shard_step(str(store), {"dark_pixels": {0: model}}, str(index), batch_size=16, shard_size=N)
    assert not index.exists(), "an index was written for a shard that could not be read whole"
    assert not list((tmp_path / "0.parts").glob("*.h5")), "a score part was written from a partial read"
    assert not store.exists(), "the damaged store was kept: every later night would fail on it"


def test_an_intact_store_scores_every_row_in_order(tmp_path, model):
    ids = [f"img{k:03d}.png" for k in range(N)]
    store = tmp_path / "0.images.h5"
    _store(store, ids, _images(N))
    index = tmp_path / "0.scores.json"
    score_shard_step(str(store), {"dark_pixels": {0: model}}, str(index), batch_size=16, shard_size=N)
    (part,) = read_score_index(str(index))
    with h5py.File(part.path, "r") as f:
        assert [s.decode() for s in f["ids"][()]] == ids and f["score"].shape == (N,)


def _manifest(path: Path, ids: list[str]) -> str:
    entries = [Entry(relpath=i, size=1, mtime_ns=0, ctime_ns=0, sha256="0" * 64) for i in ids]
    Manifest(root="/data", labeled=False, shard_size=32, entries=entries).write(path)
    return str(path)


def _part(path: Path, ids: list[str], n_rows: int) -> None:
    cols = {
        "ids": np.array(ids, dtype=object),
        "score": np.linspace(0, 1, n_rows, dtype=np.float32),
        "pred": np.zeros(n_rows, np.int8),
        "features": np.zeros((n_rows, 1), np.float32),
    }
    attrs = {"method": "dark_pixels", "threshold": 0.5, "checkpoint_sha256": "0" * 64, "feature_names": ["dark_share"]}
    write_score_part(path, cols, attrs, 16, {})


def _two_shards(tmp_path: Path, part_ids: list[list[str]]) -> tuple[list[str], list[str]]:
    ids = [f"img{k:03d}.png" for k in range(N)]
    halves = [ids[:32], ids[32:]]
    stores, indexes = [], []
    for k, (half, listed) in enumerate(zip(halves, part_ids)):
        store = tmp_path / f"{k}.images.h5"
        _store(store, half, _images(32, seed=k))
        parts = tmp_path / f"{k}.parts"
        parts.mkdir()
        _part(parts / "dark_pixels.seed0.x.h5", listed, len(listed))
        (tmp_path / f"{k}.scores.json").write_text(
            json.dumps({"parts": [{"method": "dark_pixels", "seed": 0, "file": "dark_pixels.seed0.x.h5"}]})
        )
        stores.append(str(store))
        indexes.append(str(tmp_path / f"{k}.scores.json"))
    return stores, indexes


@pytest.mark.parametrize(
    "case",
    ["short part", "ids out of order", "other images"],
)
def test_gather_refuses_parts_that_do_not_match_their_store(tmp_path, case):
    ids = [f"img{k:03d}.png" for k in range(N)]
    first = ids[:32]
    if case == "short part":
        first = first[:16]  # a shard that ended early
    elif case == "ids out of order":
        first = first[1:] + first[:1]
    else:
        first = [f"other{k}.png" for k in range(32)]
    stores, indexes = _two_shards(tmp_path, [first, ids[32:]])
    out = tmp_path / "scores.h5"
    with pytest.raises(DamagedInputError, match="do not match"):
        gather_step(_manifest(tmp_path / "m.json", ids), stores, indexes, str(out), methods=["dark_pixels"], shard_size=32)
    assert not out.exists()
    # the shard's scoring is undone (its index and the bad part removed): the next run scores it again
    assert not Path(indexes[0]).exists() and Path(indexes[1]).exists()
    assert not list((tmp_path / "0.parts").glob("*.h5"))


def test_gather_puts_each_score_on_its_own_image(tmp_path):
    ids = [f"img{k:03d}.png" for k in range(N)]
    stores, indexes = _two_shards(tmp_path, [ids[:32], ids[32:]])
    out = tmp_path / "scores.h5"
    gather_step(_manifest(tmp_path / "m.json", ids), stores, indexes, str(out), methods=["dark_pixels"], shard_size=32)
    sf = read_score_file(out)
    assert sf.ids == ids
    expected = np.concatenate([np.linspace(0, 1, 32, dtype=np.float32)] * 2)
    np.testing.assert_array_equal(sf.score["dark_pixels"], expected)
    assert len(ImageStore.open(stores[0])) == 32


def test_writers_refuse_columns_of_unequal_length(tmp_path):
    cols = {"ids": np.array(["a", "b", "c"], dtype=object), "score": np.zeros(2, np.float32)}
    with pytest.raises(RowCountError, match="3 image ids"):
        write_score_part(tmp_path / "p.h5", cols, {}, 16, {})
    assert not (tmp_path / "p.h5").exists()
