#!/usr/bin/env python3
"""Whole-field worm maps on the real BBBC010 fields: the hand-made floors, evaluated as methods will be.

    python benchmarks/fields.py /work/shared/data/bbbc010/fields --json out.json --sheet worst.png

For every dev and test well (``wells.csv``): group the channel files, compose
the RGB field exactly as the training patches were made, compute the specimen
area (the well, not eroded, grown by ``--margin`` px) and the floors' per-pixel
maps (``wormflow.fields.floors``).  Every threshold is chosen on the dev wells
(``--rule``, default the robust rule) and applied unchanged to the test wells:

* **pixels** in the evaluation area: AUROC and AP (pooled over test wells),
  Dice and IoU at the dev threshold, pooled and the mean over wells;
* **tiles** (``--tile``/``--stride`` grid) of the tile set, labelled by the
  patch rule (ambiguous tiles left out): F1, precision, recall, AUROC, AP;
  a method's tile score is its own per-tile score when it has one, otherwise
  ``tile_share_score`` of its map: the largest t that at least 5 % of the
  tile's pixels reach (so a tile passes a threshold exactly when the patch
  rule's 5 % of its pixels do; rank-based, like every other metric here);
* **wells**: the estimated worm share (area pixels at or above the pixel
  threshold, over the field's pixels) against the mask's: Pearson r, MAE.

Two settings are evaluated:

* ``rim`` (the workflow's definition): pixels of the specimen area; tiles
  with at least ``--min-share`` of their pixels in it.
* ``team``: the settings that reproduce the numbers the team measured:
  pixels of derive.py's *eroded* well region grown by ``--margin`` px; tiles
  lying wholly inside the (un-eroded) well.

The learned methods (``benchmarks/fields_methods.py``) are trained once with
the workflow's own code (the ``--preset``, seed ``--seed``; cached under
``--work``) and the batch directories' fields are scored through the
workflow's own field path (manifest, decode with tiling, score, gather,
``read_field_scores``); each method's stitched map is evaluated as the floors'
maps are and its own per-tile scores as tile scores, beside the floors, with
its speed end to end.  ``--no-methods``: the floors only.  ``--smoke``
(32 px inputs, with ``--epochs-scale`` and ``--max-wells``): a quick check.  The script also checks that the composed fields reproduce the dev/test
wells' labeled patches, and measures over all wells how many annotated worm
pixels lie in the specimen area.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wormflow import __version__  # noqa: E402
from wormflow import fields as F  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
import fields_methods as FM  # noqa: E402
from fields_report import FLOOR_LABELS, contact_sheet, report_text  # noqa: E402


@dataclass
class Well:
    name: str
    split: str
    rgb: np.ndarray  # H×W×3 uint8, the composite
    region: np.ndarray  # derive.py's well region (eroded 6 px)
    inside: np.ndarray  # the well region not eroded
    area: np.ndarray  # the specimen area: not eroded, grown by the margin
    area_team: np.ndarray  # the eroded region grown by the margin
    mask: np.ndarray  # annotated worm pixels
    ys: np.ndarray
    xs: np.ndarray
    tile_labels: np.ndarray
    seconds: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Setting:
    name: str
    pixel_area: str  # attribute of Well
    tile_area: str  # attribute of Well
    min_share: float
    note: str


def settings(min_share: float) -> list[Setting]:
    return [
        Setting("rim", "area", "area", min_share, f"specimen area; tiles ≥ {min_share:g} in it"),
        Setting("team", "area_team", "inside", 1.0, "eroded well + margin; tiles wholly inside the well"),
    ]


def read_wells_csv(root: Path) -> list[dict]:
    with open(root / "wells.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def read_mask(path: Path) -> np.ndarray:
    m = np.asarray(Image.open(path))
    return (m[..., 0] if m.ndim == 3 else m) > 0


def load_wells(root: Path, splits=("dev", "test"), tile=64, stride=32, margin=20) -> dict[str, Well]:
    """Compose every well of ``splits`` from its channel files, grouped by file name as the workflow will."""
    rows = [r for r in read_wells_csv(root) if r["split"] in splits]
    grouping = F.group_fields([f for r in rows for f in (r["w1"], r["w2"]) if f])
    if grouping.problems or grouping.singles:
        raise SystemExit(f"unexpected grouping problems: {grouping.problems} {grouping.singles}")
    by_well = {f.well: f for f in grouping.fields}
    wells = {}
    for r in rows:
        s, t0 = {}, time.perf_counter()
        channels = {c: tifffile.imread(root / "images" / p) for c, p in by_well[r["well"]].channels.items()}
        mask = read_mask(root / "masks" / r["mask"])
        s["read"], t0 = time.perf_counter() - t0, time.perf_counter()
        region = F.well_region(channels["w2"])
        s["well_region"], t0 = time.perf_counter() - t0, time.perf_counter()
        rgb = F.compose_rgb(channels, region=region)
        s["compose"], t0 = time.perf_counter() - t0, time.perf_counter()
        area = F.specimen_area(channels["w2"], margin)
        s["specimen_area"], t0 = time.perf_counter() - t0, time.perf_counter()
        ys, xs = F.tile_grid(*mask.shape, tile, stride)
        labels = F.tile_labels(mask, ys, xs, tile)
        s["tiles"] = time.perf_counter() - t0
        wells[r["well"]] = Well(
            r["well"],
            r["split"],
            rgb,
            region,
            F.well_region(channels["w2"], erode=0),
            area,
            F.specimen_area(channels["w2"], margin, erode=F.compose.WELL_ERODE),
            mask,
            ys,
            xs,
            labels,
            s,
        )
    return wells


def floors(wells: dict[str, Well], tile: int) -> tuple[dict, dict]:
    """The floors' maps ``{method: {well: map}}`` and per-tile scores ``{method: {well: scores}}``."""
    maps: dict[str, dict] = {"dark_pixels": {}, "local_contrast": {}}
    tiles: dict[str, dict] = {"dark_share_tiles": {}}
    for name, w in wells.items():
        g = w.rgb[..., 1]
        t0 = time.perf_counter()
        maps["dark_pixels"][name] = F.dark_pixels(g, w.region)
        t1 = time.perf_counter()
        maps["local_contrast"][name] = F.local_contrast(g)
        t2 = time.perf_counter()
        tiles["dark_share_tiles"][name] = F.dark_share_tiles(g, w.ys, w.xs, tile)
        w.seconds.update(dark_pixels=t1 - t0, local_contrast=t2 - t1, dark_share_tiles=time.perf_counter() - t2)
    return maps, tiles


def _split(wells: dict[str, Well], split: str) -> list[Well]:
    return [w for w in wells.values() if w.split == split]


def evaluate_method(
    maps: dict[str, np.ndarray] | None,
    wells: dict[str, Well],
    setting: Setting,
    *,
    tile_scores: dict[str, np.ndarray] | None = None,
    tile: int = 64,
    rule: str = "robust",
) -> dict:
    """Evaluate one method: pixel maps ``{well: H×W}`` (any monotone score) and/or per-tile scores
    ``{well: (N,)}`` on each well's tile grid.  Thresholds on dev wells, metrics on test wells."""
    out: dict = {"setting": setting.name}
    if maps is not None:
        area = {n: getattr(w, setting.pixel_area) for n, w in wells.items()}
        dev = _split(wells, "dev")
        s = np.concatenate([maps[w.name][area[w.name]] for w in dev])
        y = np.concatenate([w.mask[area[w.name]] for w in dev])
        th = {r: F.choose_threshold(s, y, r) for r in ("robust", "f1max")}
        t = th[rule].value
        pooled = np.zeros(3, np.int64)
        per_well, scores, truth = {}, [], []
        for w in _split(wells, "test"):
            sc, tr = maps[w.name][area[w.name]], w.mask[area[w.name]]
            scores.append(sc)
            truth.append(tr)
            c = F.counts(sc >= t, tr)
            pooled += c
            per_well[w.name] = {
                **{k: v for k, v in F.overlap(*c).items() if k in ("f1", "iou")},
                "estimate": float((sc >= t).sum() / w.mask.size),
                "truth": float(w.mask.mean()),
            }
        rank = F.ranking_metrics(np.concatenate(scores), np.concatenate(truth))
        ov = F.overlap(*pooled)
        f1max_counts = sum(
            (np.array(F.counts(s_ >= th["f1max"].value, t_)) for s_, t_ in zip(scores, truth)), np.zeros(3, np.int64)
        )
        out["pixels"] = {
            **rank,
            "dice": ov["f1"],
            "iou": ov["iou"],
            "precision": ov["precision"],
            "recall": ov["recall"],
            "dice_per_well_mean": float(np.mean([v["f1"] for v in per_well.values()])),
            "iou_per_well_mean": float(np.mean([v["iou"] for v in per_well.values()])),
            "dice_f1max_threshold": F.overlap(*f1max_counts)["f1"],
            "threshold": th[rule].to_dict(),
            "threshold_f1max": th["f1max"].to_dict(),
            "per_well": per_well,
        }
        est = [v["estimate"] for v in per_well.values()]
        tru = [v["truth"] for v in per_well.values()]
        out["wells"] = F.agreement(est, tru) | {"estimate_mean": float(np.mean(est)), "truth_mean": float(np.mean(tru))}
    per_tile = {}
    for name, w in wells.items():
        if tile_scores is not None:
            per_tile[name] = np.asarray(tile_scores[name], dtype=np.float64)
        elif maps is not None:
            per_tile[name] = F.tile_share_score(maps[name], w.ys, w.xs, tile)
    if per_tile:

        def tiles_of(split):
            keep = [
                F.tile_in_area(getattr(w, setting.tile_area), w.ys, w.xs, tile, setting.min_share) & (w.tile_labels >= 0)
                for w in _split(wells, split)
            ]
            s = np.concatenate([per_tile[w.name][k] for w, k in zip(_split(wells, split), keep)])
            y = np.concatenate([w.tile_labels[k] for w, k in zip(_split(wells, split), keep)])
            return s, y

        ds, dy = tiles_of("dev")
        ts, ty = tiles_of("test")
        th = F.choose_threshold(ds, dy, rule)
        ov = F.overlap(*F.counts(ts >= th.value, ty == 1))
        out["tiles"] = {
            "f1": ov["f1"],
            "precision": ov["precision"],
            "recall": ov["recall"],
            **F.ranking_metrics(ts, ty),
            "n_test": int(ty.size),
            "n_test_wormed": int(ty.sum()),
            "n_dev": int(dy.size),
            "threshold": th.to_dict(),
            "f1_f1max_threshold": F.overlap(*F.counts(ts >= F.choose_threshold(ds, dy, "f1max").value, ty == 1))["f1"],
        }
    return out


def evaluate_all(
    wells: dict[str, Well],
    maps: dict[str, dict],
    tile_scores: dict[str, dict],
    setting_list,
    *,
    tile: int,
    rule: str,
    map_tiles: dict[str, dict] | None = None,
) -> dict:
    """``{setting: {method: evaluate_method(...)}}`` for methods with maps (``{method: {well: map}}``) and
    methods with per-tile scores only (``{method: {well: scores}}``); a learned method's maps go in ``maps``,
    its own per-tile scores in ``map_tiles`` (without them its tiles are scored from its map)."""
    out, map_tiles = {}, map_tiles or {}
    for s in setting_list:
        per = {m: evaluate_method(v, wells, s, tile_scores=map_tiles.get(m), tile=tile, rule=rule) for m, v in maps.items()}
        per |= {m: evaluate_method(None, wells, s, tile_scores=v, tile=tile, rule=rule) for m, v in tile_scores.items()}
        out[s.name] = per
    return out


def check_patches(bbbc010: Path, wells: dict[str, Well]) -> dict:
    """Re-cut the labeled patches of these wells from the composed fields; the largest grey-level difference."""
    path = bbbc010 / "labeled" / "patches.csv"
    if not path.is_file():
        return {"checked": 0, "note": f"{path} not found"}
    worst, n, label_ok = 0, 0, 0
    with open(path, newline="") as fh:
        for p in csv.DictReader(fh):
            w = wells.get(p["well"])
            if w is None:
                continue
            y, x, s = int(p["y"]), int(p["x"]), int(p["size"])
            png = np.asarray(Image.open(bbbc010 / "labeled" / p["file"]).convert("RGB")).astype(int)
            worst = max(worst, int(np.abs(w.rgb[y : y + s, x : x + s].astype(int) - png).max()))
            label_ok += int(F.tile_labels(w.mask, np.array([y]), np.array([x]), s)[0] == (p["label"] == "wormed"))
            n += 1
    return {"checked": n, "max_abs_difference": worst, "labels_reproduced": label_ok}


def rim_inclusion(root: Path, margins=(0, 10, 20, 40, 60)) -> dict:
    """Over all wells with both channels and a mask: the share of annotated worm pixels inside derive.py's
    eroded well region, the un-eroded well, and the specimen area for several margins."""
    from scipy import ndimage as ndi

    total, eroded, team, low, dist_hist = 0, 0, 0, 0, {m: 0 for m in margins}
    wells = 0
    for r in read_wells_csv(root):
        if not (r["w2"] and r["mask"]):
            continue
        bf = tifffile.imread(root / "images" / r["w2"])
        mask = read_mask(root / "masks" / r["mask"])
        full = F.well_region(bf, erode=0)
        dist = ndi.distance_transform_edt(~full)  # the same distance specimen_area thresholds
        total += int(mask.sum())
        eroded += int((mask & F.well_region(bf)).sum())
        team += int((mask & F.specimen_area(bf, 20, erode=F.compose.WELL_ERODE)).sum())
        low += int((mask & F.specimen_area(bf, 20, level=0.25)).sum())
        for m in margins:
            dist_hist[m] += int((mask & (dist <= m)).sum())
        wells += 1
    return {
        "wells": wells,
        "worm_pixels": total,
        "inside_eroded_well": eroded / total,
        "inside_eroded_well_plus_20": team / total,
        "inside_specimen_area_level_0.25": low / total,
        "inside_specimen_area_by_margin": {str(m): v / total for m, v in dist_hist.items()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fields", type=Path, help="the BBBC010 fields directory (wells.csv, images/, masks/)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path, help="write the markdown report here too")
    ap.add_argument("--sheet", type=Path, help="contact sheet PNG of the worst test wells")
    ap.add_argument("--worst", type=int, default=4, help="wells on the contact sheet")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--stride", type=int, default=32)
    ap.add_argument("--margin", type=int, default=F.compose.SPECIMEN_MARGIN)
    ap.add_argument("--min-share", type=float, default=0.5, help="share of a tile in the specimen area (rim setting)")
    ap.add_argument("--rule", choices=("robust", "f1max"), default="robust")
    ap.add_argument("--no-methods", action="store_true", help="the floors only")
    ap.add_argument("--labeled", type=Path, help="labeled patches to train on (default: <fields>/../labeled)")
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "fields", help="models (cached) and score files")
    ap.add_argument(
        "--models", type=Path, help="use a workflow run's models (its results/models) instead of training; --preset must match"
    )
    ap.add_argument("--preset", default="tuned")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="*", help="learned methods (default: the preset's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true", help="32 px model inputs (a quick check)")
    ap.add_argument("--epochs-scale", type=float, default=1.0)
    ap.add_argument("--max-wells", type=int, default=0, help="only the first N dev and N test wells (quick checks)")
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="METHOD.KEY=VALUE", help="override a preset value (e.g. gan.epochs=20)"
    )
    a = ap.parse_args(argv)
    a.labeled = a.labeled or a.fields.parent / "labeled"

    t_start = time.perf_counter()
    wells = load_wells(a.fields, tile=a.tile, stride=a.stride, margin=a.margin)
    if a.max_wells:
        keep = {n for s in ("dev", "test") for n in sorted(w.name for w in _split(wells, s))[: a.max_wells]}
        wells = {n: w for n, w in wells.items() if n in keep}
    maps, tile_scores = floors(wells, a.tile)
    t_prep = time.perf_counter() - t_start
    learned, map_tiles = {}, {}
    if not a.no_methods:
        method_maps, map_tiles, learned = FM.run_methods(a, wells, a.fields)
        maps |= method_maps
    t_methods = time.perf_counter() - t_start - t_prep
    results: dict = {
        "methods": evaluate_all(wells, maps, tile_scores, settings(a.min_share), tile=a.tile, rule=a.rule, map_tiles=map_tiles)
    }
    t_eval = time.perf_counter() - t_start - t_prep - t_methods
    patches = check_patches(a.fields.parent, wells)
    rim = rim_inclusion(a.fields)

    stages = list(next(iter(wells.values())).seconds)
    timing = {k: 1000 * float(np.mean([w.seconds[k] for w in wells.values()])) for k in stages}
    timing[f"evaluate ({len(maps) + len(tile_scores)} methods × {len(settings(a.min_share))} settings)"] = (
        1000 * t_eval / len(wells)
    )
    test = [w for w in wells.values() if w.split == "test"]
    ref = "local_contrast"
    per_well = results["methods"]["rim"][ref]["pixels"]["per_well"]
    worst = sorted(test, key=lambda w: per_well[w.name]["f1"])[: a.worst]
    if a.sheet:
        th = {m: results["methods"]["rim"][m]["pixels"]["threshold"]["value"] for m in maps}
        contact_sheet(worst, maps, th, a.sheet, {**FLOOR_LABELS, **learned.get("labels", {})})

    meta = {
        "command": "python benchmarks/fields.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "wells": {s: sorted(w.name for w in wells.values() if w.split == s) for s in ("dev", "test")},
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "settings": {s.name: s.note for s in settings(a.min_share)},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}, wormflow {__version__}",
        "seconds": {"prepare_all_wells": t_prep, "methods_train_and_score": t_methods, "evaluate": t_eval},
        "ms_per_well": timing,
        "patch_check": patches,
        "rim_inclusion": rim,
        "worst_test_wells": [w.name for w in worst],
    }
    results = {**meta, **results}
    if learned:
        scored = learned.pop("_scored")
        learned["workflow_wells"] = FM.workflow_wells(scored, wells, results["methods"]["rim"])
        results["learned"] = learned
        learned["goals"] = FM.goals(results)
    results["seconds"]["total"] = time.perf_counter() - t_start
    text = report_text(results, a.rule)
    print(text)
    if a.md:
        a.md.write_text(text + "\n")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
