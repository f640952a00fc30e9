"""The fields benchmark's method helpers (benchmarks/fields_methods.py): no training, no data."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import fields_methods as FM  # noqa: E402


def test_tile_scores_follow_the_benchmarks_grid_whatever_the_workflows_order():
    well = SimpleNamespace(ys=np.array([0, 0, 32, 32]), xs=np.array([0, 32, 0, 32]))
    ys, xs = np.array([32, 0, 32, 0]), np.array([32, 32, 0, 0])
    score = np.array([0.4, 0.2, 0.3, np.nan], np.float32)
    got = FM.tile_scores_on_grid({"W": (ys, xs, score, score == score)}, {"W": well})["W"]
    np.testing.assert_allclose(got[1:], [0.2, 0.3, 0.4], rtol=1e-6)
    assert np.isnan(got[0])  # a tile the workflow did not count stays NaN
    with pytest.raises(ValueError, match="tile grid differs"):
        FM.tile_scores_on_grid({"W": (ys[:3], xs[:3], score[:3], None)}, {"W": well})


def test_speed_is_end_to_end_and_shares_the_decode():
    scored = {"seconds": {"decode": 2.0, "score": {"a": 6.0}, "gather": {"a": 2.0}}, "n_tiles": 500, "n_fields": 5}
    s = FM.speed(scored)["a"]
    assert s["total_s"] == 10.0 and s["tiles_per_s"] == 50.0 and s["fields_per_s"] == 0.5 and s["score_tiles_per_s"] == 500 / 6
