#!/usr/bin/env python3
"""A harder labeled patch split, cut from the real BBBC010 fields by derive.py's recipe with other label limits.

    python benchmarks/harder_patches.py ../shared/data/bbbc010/fields --out benchmarks/work/harder-patches

``shared/data/bbbc010/derive.py`` made the labeled patches: 64 px windows on an 8 px grid lying
wholly inside the well region (the brightfield's, eroded 6 px); ``wormed`` when at least 5 % of
the window is annotated worm and its central half holds worm, ``no_wormed`` when no worm lies
within 8 px of it, ambiguous otherwise; up to two patches per class and well, drawn with the
well's seeded generator (``no_wormed`` first), never overlapping; RGB composite R = w1,
G = B = w2, stretched per well.  This script follows that recipe with the workflow's own
functions (``wormflow.fields``: ``well_region``, ``compose_rgb``, ``tile_in_area``,
``tile_labels``) and other limits — by default worm share ≥ 1 % and margin 4 px: worm tips and
small worm parts become ``wormed`` patches, and ``no_wormed`` patches may lie 4 px from a worm.
The wells keep their split (``wells.csv``: the labeled split's wells).

Deterministic: the same seed and limits give the same patches (the PNGs and ``patches.csv`` are
written to ``--out`` as an ImageFolder ``{train,dev,test}/{no_wormed,wormed}/``; not committed).
With derive.py's own limits the selection equals ``labeled/patches.csv`` position for position;
every run checks that (``summary.json``: ``standard_recipe_check``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wormflow import fields as F  # noqa: E402

SEED = 20240601  # derive.py's
PATCH, STRIDE, PER_CLASS = 64, 8, 2
STANDARD = {"worm_frac_min": 0.05, "margin": 8}
CLASSES = ("no_wormed", "wormed")


def read_mask(path: Path) -> np.ndarray:
    m = np.asarray(Image.open(path))
    return (m[..., 0] if m.ndim == 3 else m) > 0


def candidates(region: np.ndarray, mask: np.ndarray, worm_frac_min: float, margin: int, patch: int = PATCH, stride: int = STRIDE):
    """derive.py's candidate windows of one well: ``{class: [(y, x), ...]}`` in its (row-major grid) order."""
    h, w = mask.shape
    ys, xs = np.mgrid[0 : h - patch + 1 : stride, 0 : w - patch + 1 : stride]
    ys, xs = ys.ravel(), xs.ravel()
    inside = F.tile_in_area(region, ys, xs, patch, 1.0)  # wholly inside the (eroded) well region
    labels = F.tile_labels(mask, ys, xs, patch, worm_frac_min, margin)
    return {
        cls: list(zip(ys[inside & (labels == k)].tolist(), xs[inside & (labels == k)].tolist())) for k, cls in enumerate(CLASSES)
    }


def draw(well: str, cand: dict, seed: int = SEED, per_class: int = PER_CLASS, patch: int = PATCH) -> list[tuple[str, int, int]]:
    """derive.py's draw: per class (``no_wormed`` first) up to ``per_class`` windows in the well generator's
    random order, skipping any that overlaps a window already taken from the well."""
    rng = np.random.default_rng([seed, int.from_bytes(well.encode(), "big")])
    taken: list[tuple[int, int]] = []
    out = []
    for cls in CLASSES:
        c = cand[cls]
        k = 0
        for i in rng.permutation(len(c)):
            if k >= per_class:
                break
            y, x = c[i]
            if any(abs(y - ty) < patch and abs(x - tx) < patch for ty, tx in taken):
                continue
            taken.append((y, x))
            out.append((cls, y, x))
            k += 1
    return out


def derive(fields: Path, out: Path, worm_frac_min: float, margin: int, seed: int = SEED) -> dict:
    with open(fields / "wells.csv", newline="") as fh:
        rows_csv = list(csv.DictReader(fh))
    wells = [r for r in rows_csv if r["split"] in ("train", "dev", "test") and r["w1"] and r["w2"] and r["mask"]]
    if out.exists():
        shutil.rmtree(out)
    for split in ("train", "dev", "test"):
        for cls in CLASSES:
            (out / split / cls).mkdir(parents=True)
    rows, standard = [], []
    t0 = time.perf_counter()
    for r in wells:
        well, split = r["well"], r["split"]
        channels = {c: tifffile.imread(fields / "images" / r[c]) for c in ("w1", "w2")}
        mask = read_mask(fields / "masks" / r["mask"])
        region = F.well_region(channels["w2"])
        rgb = F.compose_rgb(channels, region=region)
        standard += [(well, cls, y, x) for cls, y, x in draw(well, candidates(region, mask, **STANDARD), seed)]
        for cls, y, x in draw(well, candidates(region, mask, worm_frac_min, margin), seed):
            name = f"{well}_y{y:03d}_x{x:03d}.png"
            Image.fromarray(rgb[y : y + PATCH, x : x + PATCH]).save(out / split / cls / name)
            ys, xs = np.array([y]), np.array([x])
            worm_px = int(round(F.tile_means(mask, ys, xs, PATCH)[0] * PATCH * PATCH))
            rows.append(
                {
                    "split": split,
                    "label": cls,
                    "file": f"{split}/{cls}/{name}",
                    "well": well,
                    "y": y,
                    "x": x,
                    "size": PATCH,
                    "worm_px": worm_px,
                    "worm_frac": round(worm_px / PATCH**2, 4),
                    # would derive.py's own limits label it so? (1 wormed, 0 no_wormed, -1 ambiguous there)
                    "standard_label": int(F.tile_labels(mask, ys, xs, PATCH, **STANDARD)[0]),
                }
            )
    with open(out / "patches.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = {
        "params": {
            "worm_frac_min": worm_frac_min,
            "margin": margin,
            "patch": PATCH,
            "stride": STRIDE,
            "per_class": PER_CLASS,
            "seed": seed,
        },
        "fields": str(fields),
        "counts": {
            s: {c: sum(1 for x in rows if x["split"] == s and x["label"] == c) for c in CLASSES} for s in ("train", "dev", "test")
        },
        "ambiguous_under_standard_limits": {
            s: {c: sum(1 for x in rows if x["split"] == s and x["label"] == c and x["standard_label"] == -1) for c in CLASSES}
            for s in ("train", "dev", "test")
        },
        "standard_recipe_check": standard_check(fields, standard),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def standard_check(fields: Path, drawn: list[tuple[str, str, int, int]]) -> dict:
    """Does the recipe with derive.py's limits draw exactly the labeled patches (well, class, position)?"""
    path = fields.parent / "labeled" / "patches.csv"
    if not path.is_file():
        return {"checked": False, "note": f"{path} not found"}
    with open(path, newline="") as fh:
        labeled = {(p["well"], p["label"], int(p["y"]), int(p["x"])) for p in csv.DictReader(fh)}
    mine = set(drawn)
    return {
        "checked": True,
        "labeled": len(labeled),
        "drawn": len(mine),
        "identical": mine == labeled,
        "common": len(mine & labeled),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fields", type=Path, help="the BBBC010 fields directory (wells.csv, images/, masks/)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "work" / "harder-patches")
    ap.add_argument("--worm-frac-min", type=float, default=0.01)
    ap.add_argument("--margin", type=int, default=4)
    ap.add_argument("--seed", type=int, default=SEED)
    a = ap.parse_args(argv)
    summary = derive(a.fields, a.out, a.worm_frac_min, a.margin, a.seed)
    print(json.dumps(summary, indent=1))
    check = summary["standard_recipe_check"]
    if check.get("checked") and not check["identical"]:
        print("the recipe with derive.py's limits does not reproduce labeled/patches.csv", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
