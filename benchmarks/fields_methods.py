"""The learned methods on the BBBC010 fields, through the workflow's own code (used by ``fields.py``).

* :func:`train_models`: the methods of a preset (default ``tuned``), one seed, trained on the
  labeled train/dev patches with :func:`wormflow.train.train` exactly as the ``train`` rule calls
  it (threshold rule, bootstrap count and the fields' tile size from the config); models are cached
  under ``<work>/models/<method>/seed<seed>/`` and reused while their config key is unchanged.
* :func:`score_batches`: each batch directory (a night of channel files) through the nightly
  path — :func:`~wormflow.pipeline.manifest_step` (fields grouped by the config's pattern),
  :func:`~wormflow.pipeline.decode_shard_step` (composed fields at native resolution, with the
  tiling config), :func:`~wormflow.pipeline.score_shard_step` (tiles in model batches, stitched
  maps, per-field numbers), :func:`~wormflow.pipeline.gather_step` and
  :func:`~wormflow.scorefields.read_field_scores` — one method per scoring job so that each
  method's time is its own.  Returns per method and well: the stitched uint8 map, the per-tile
  scores on the tile grid and the per-field numbers, plus the wall times of every step.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np


def method_config(preset: str, smoke: bool, epochs_scale: float) -> dict:
    """The preset's full config (``benchmarks/accuracy.py``'s overlays: ``smoke`` = 32 px inputs)."""
    from accuracy import preset_config  # benchmarks/ is on sys.path when fields.py runs

    return preset_config(preset, epochs_scale, smoke)


def learned(cfg: dict, only: list[str] | None = None) -> list[str]:
    from accuracy import learned_methods

    return [m for m in learned_methods(cfg) if not only or m in only]


def train_models(
    cfg: dict,
    methods: list[str],
    data: Path,
    work: Path,
    *,
    seed: int = 0,
    device: str = "cpu",
    key_extra: dict | None = None,
    given: Path | None = None,
) -> tuple[dict[str, str], dict]:
    """``({method: model.pt}, {method: info})``: cached models reused, the others trained now; with ``given`` (a
    workflow's ``results/models``), that run's models, none trained."""
    from accuracy import decode_splits, train_on_stores

    from wormflow.artifact import Artifact
    from wormflow.decision import DEFAULT_THRESHOLD_RULE, N_BOOT
    from wormflow.digest import json_digest

    calib = cfg.get("calibration", {})
    rule, n_boot = calib.get("threshold_rule", DEFAULT_THRESHOLD_RULE), int(calib.get("n_boot", N_BOOT))
    tile = int(cfg["tiling"]["tile"])
    models, info, stores = {}, {}, None
    for m in methods:
        mcfg = cfg["methods"][m]
        out = work / "models" / m / f"seed{seed}"
        key = json_digest(
            {"cfg": mcfg, "seed": seed, "rule": rule, "n_boot": n_boot, "tile": tile, "data": str(data), **(key_extra or {})}
        )
        key_file, model = out / "key.json", out / "model.pt"
        cached = model.is_file() and key_file.is_file() and json.loads(key_file.read_text()).get("key") == key
        if given is not None:  # a workflow's own model (results/models/<method>/seed<k>/model.pt): used as it is
            model, cached = given / m / f"seed{seed}" / "model.pt", True
            if not model.is_file():
                raise SystemExit(f"--models: {model} not found")
        t0 = time.perf_counter()
        if not cached:
            if stores is None:
                sizes = sorted({cfg["methods"][k]["image_size"] for k in methods})
                stores = decode_splits(data, work, sizes, cfg)
            print(f"[fields] training {m} (seed {seed}, {device})", flush=True)
            train_on_stores(
                m,
                mcfg,
                stores,
                out,
                seed=seed,
                device=device,
                num_workers=int(cfg["training"]["num_workers"]),
                threshold_rule=rule,
                n_boot=n_boot,
                field_tile=tile,
            )
            key_file.write_text(json.dumps({"key": key}))
        art = Artifact.load(model)
        info[m] = {
            "cached": cached,
            "model": str(model),
            "wall_s": time.perf_counter() - t0 if not cached else None,
            "train_time_s": art.train_time_s,
            "device": art.device,
            "threshold": float(art.threshold),
            "threshold_rule": art.threshold_rule,
            "dev_f1": art.dev_f1,
            "epochs_run": art.epochs_run,
            "field_map": art.extra.get("field_map"),
            "image_size": mcfg["image_size"],
        }
        models[m] = str(model)
    return models, info


def score_batches(cfg: dict, batches: list[Path], models: dict[str, str], work: Path, *, device: str = "cpu") -> dict:
    """Every batch's fields through manifest → decode → score (one job per method) → gather → read.

    Returns ``{"maps": {method: {well: uint8 H×W}}, "tiles": {method: {well: (ys, xs, score)}},
    "units": {method: {well: {column: value}}}, "attrs": {method: fields attrs},
    "seconds": {"decode": s, "gather": {method: s}, "score": {method: s}}, "n_fields": n, "n_tiles": n}``.
    """
    from wormflow.pipeline import decode_shard_step, gather_step, manifest_step, score_shard_step
    from wormflow.scorefields import read_field_scores

    shard_size = int(cfg["shard_size"])
    out = {"maps": {}, "tiles": {}, "units": {}, "attrs": {}, "seconds": {"decode": 0.0, "score": {}, "gather": {}}}
    n_fields = n_tiles = 0
    for batch in batches:
        bw = work / "batches" / batch.name
        bw.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        manifest = manifest_step(
            str(batch), str(bw / "manifest.json"), labeled=False, shard_size=shard_size, fields=cfg["fields"]
        )
        stores = []
        for k in range(manifest.n_shards):
            store = bw / f"{k}.images.h5"
            store.unlink(missing_ok=True)  # timed every run: decoding is part of the field path
            decode_shard_step(
                str(bw / "manifest.json"),
                k,
                str(store),
                sizes=[64],
                threads=int(cfg["decode"]["threads"]),
                limits=cfg["decode"],
                fields=cfg["fields"],
                tiling=cfg["tiling"],
                hdf5=cfg["hdf5"],
            )
            stores.append(str(store))
        out["seconds"]["decode"] += time.perf_counter() - t0
        for m, model in models.items():
            t0 = time.perf_counter()
            indexes = []
            for k, store in enumerate(stores):
                index = bw / f"{k}.{m}.scores.json"
                for stale in bw.glob(f"{k}.{m}.parts/*.h5"):
                    stale.unlink()  # never reuse a part: the scoring is what is timed
                score_shard_step(
                    store,
                    {m: {0: model}},
                    str(index),
                    batch_size=int(cfg["scoring"]["batch_size"]),
                    device=device,
                    shard_size=shard_size,
                    hdf5=cfg["hdf5"],
                    tiling=cfg["tiling"],
                )
                indexes.append(str(index))
            t1 = time.perf_counter()
            scores = bw / f"scores.{m}.h5"
            gather_step(
                str(bw / "manifest.json"),
                stores,
                indexes,
                str(scores),
                methods=[m],
                shard_size=shard_size,
                hdf5=cfg["hdf5"],
                batch=batch.name,
            )
            t2 = time.perf_counter()
            out["seconds"]["score"][m] = out["seconds"]["score"].get(m, 0.0) + t1 - t0
            out["seconds"]["gather"][m] = out["seconds"]["gather"].get(m, 0.0) + t2 - t1
            fs = read_field_scores(str(scores), [m])
            mf = fs.methods[m]
            out["attrs"][m] = mf.attrs
            tl = mf.tiles
            for k, u in enumerate(fs.units):
                sel = tl["unit"] == k
                out["maps"].setdefault(m, {})[u.well] = fs.map(m, k)
                out["tiles"].setdefault(m, {})[u.well] = (tl["y"][sel], tl["x"][sel], tl["score"][sel], tl["in_area"][sel])
                out["units"].setdefault(m, {})[u.well] = {c: float(v[k]) for c, v in mf.units.items()}
        n_fields += len(fs.units)
        n_tiles += int(mf.tiles["in_area"].sum())
    out["n_fields"], out["n_tiles"] = n_fields, n_tiles
    return out


def tile_scores_on_grid(tiles: dict, wells: dict) -> dict:
    """A method's per-tile scores ``{well: (ys, xs, score, in_area)}`` in the order of each well's tile grid
    (``Well.ys``/``xs``); tiles the workflow did not count (NaN) stay NaN."""
    out = {}
    for name, w in wells.items():
        ys, xs, score, _ = tiles[name]
        pos = {(int(y), int(x)): i for i, (y, x) in enumerate(zip(ys, xs))}
        if len(pos) != len(w.ys) or any((int(y), int(x)) not in pos for y, x in zip(w.ys, w.xs)):
            raise ValueError(f"{name}: the workflow's tile grid differs from the benchmark's")
        out[name] = np.array([score[pos[(int(y), int(x))]] for y, x in zip(w.ys, w.xs)], dtype=np.float64)
    return out


def speed(scored: dict) -> dict:
    """Per method, end to end (decode + tile + score + stitch + gather): seconds, tiles/s, fields/s."""
    sec = scored["seconds"]
    res = {}
    for m, s in sec["score"].items():
        total = sec["decode"] + s + sec["gather"][m]
        res[m] = {
            "decode_s": sec["decode"],
            "score_s": s,
            "gather_s": sec["gather"][m],
            "total_s": total,
            "tiles_per_s": scored["n_tiles"] / total,
            "fields_per_s": scored["n_fields"] / total,
            "score_tiles_per_s": scored["n_tiles"] / s,
        }
    return res


def method_labels(methods: list[str], attrs: dict) -> dict[str, str]:
    from wormflow.methods import get

    return {m: f"{get(m).label} ({attrs.get(m, {}).get('map', 'map')})" for m in methods}


def workflow_wells(scored: dict, wells: dict, results_rim: dict) -> dict:
    """Per method on the test wells: the workflow's own ``worm_share`` (share of the specimen area at the
    map threshold chosen on dev patches at training) against the mask's share of the same area; and the
    pixel Dice of the stitched map at that threshold (rim setting)."""
    from wormflow import fields as F

    out = {}
    test = [w for w in wells.values() if w.split == "test"]
    for m, units in scored["units"].items():
        est = [units[w.name]["worm_share"] for w in test]
        tru = [float(w.mask[w.area].mean()) for w in test]
        t = float(scored["attrs"][m]["map_threshold"])
        c = sum((np.array(F.counts(scored["maps"][m][w.name][w.area] >= t, w.mask[w.area])) for w in test), np.zeros(3, np.int64))
        preds = [int(units[w.name]["pred"]) for w in test]
        out[m] = F.agreement(est, tru) | {
            "estimate_mean": float(np.mean(est)),
            "truth_mean": float(np.mean(tru)),
            "map_threshold": t,
            "dice_at_map_threshold": F.overlap(*c)["f1"],
            "dice_at_dev_wells_threshold": results_rim[m]["pixels"]["dice"],
            "fields_flagged": f"{sum(preds)}/{len(preds)}",
        }
    return out


def subset_batches(batches: list[Path], keep: set[str], work: Path) -> list[Path]:
    """Copies of the batch directories holding only the channel files of the ``keep`` wells (SMOKE runs)."""
    import re
    import shutil

    out = []
    for b in batches:
        dst = work / "subset" / b.name
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        for f in sorted(b.iterdir()):
            m = re.search(r"_([A-P][0-9]{2})_w[0-9]+_", f.name)
            if m and m.group(1) in keep:
                shutil.copyfile(f, dst / f.name)
        out.append(dst)
    return out


def goals(results: dict, floor: str = "local_contrast") -> dict:
    """Issue 13's goals on the rim setting: each method beats the floor on pixel AP and Dice; the best reaches
    Dice ≥ 0.90 and pixel AUROC ≥ 0.99; tiles ≥ 0.99 F1 (read: the best method's tile F1)."""
    rim = results["methods"]["rim"]
    ms = list(results["learned"]["training"])
    fl = rim[floor]["pixels"]
    beats = {m: rim[m]["pixels"]["ap"] > fl["ap"] and rim[m]["pixels"]["dice"] > fl["dice"] for m in ms}
    best = max(ms, key=lambda m: rim[m]["pixels"]["dice"])
    best_tiles = max(ms, key=lambda m: rim[m]["tiles"]["f1"])
    return {
        "floor": floor,
        "beats_floor": beats,
        "all_beat_floor": all(beats.values()),
        "best_pixels": best,
        "best_dice_ge_0.90": rim[best]["pixels"]["dice"] >= 0.90,
        "best_auroc_ge_0.99": max(rim[m]["pixels"]["auroc"] for m in ms) >= 0.99,
        "best_tiles": best_tiles,
        "tiles_f1_ge_0.99": rim[best_tiles]["tiles"]["f1"] >= 0.99,
    }


def run_methods(a, wells: dict, fields_root: Path) -> tuple[dict, dict, dict]:
    """Train (or reuse) and score the learned methods for ``fields.py``'s arguments ``a``.

    Returns ``(maps {method: {well: float32 map}}, tile scores {method: {well: (N,)}}, info)``.
    """
    import torch

    cfg = method_config(a.preset, a.smoke, a.epochs_scale)
    for item in a.set:  # METHOD.KEY=VALUE (YAML value)
        import yaml

        target, value = item.split("=", 1)
        method, key = target.split(".", 1)
        cfg["methods"][method][key] = yaml.safe_load(value)
    tiling = cfg["tiling"]
    if int(tiling["tile"]) != a.tile or int(tiling["stride"]) != a.stride:
        raise SystemExit(
            f"--tile/--stride ({a.tile}/{a.stride}) must equal the config's tiling ({tiling['tile']}/{tiling['stride']})"
        )
    work = Path(a.work)
    methods = learned(cfg, a.methods)
    t0 = time.perf_counter()
    models, training = train_models(
        cfg,
        methods,
        Path(a.labeled).resolve(),
        work,
        seed=a.seed,
        device=a.device,
        key_extra={"smoke": True} if a.smoke else None,
        given=a.models,
    )
    t_train = time.perf_counter() - t0
    batches = sorted(p for p in (fields_root / "batches").iterdir() if p.is_dir())
    if a.max_wells:
        batches = subset_batches(batches, set(wells), work)
    scored = score_batches(cfg, batches, models, work, device=a.device)
    missing = set(wells) - set(next(iter(scored["maps"].values())))
    if missing:
        raise SystemExit(f"wells not scored by the workflow: {sorted(missing)}")
    maps = {m: {w: v.astype(np.float32) for w, v in per.items() if w in wells} for m, per in scored["maps"].items()}
    tiles = {m: tile_scores_on_grid(per, wells) for m, per in scored["tiles"].items()}
    device = a.device if a.device != "cuda" else f"cuda ({torch.cuda.get_device_name(0)})"
    info = {
        "preset": a.preset,
        "seed": a.seed,
        "overrides": list(a.set),
        "device": device,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "training": training,
        "train_wall_s": t_train,
        "attrs": {
            m: {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in at.items()}
            for m, at in scored["attrs"].items()
        },
        "labels": method_labels(methods, scored["attrs"]),
        "speed": speed(scored),
        "n_fields": scored["n_fields"],
        "n_tiles": scored["n_tiles"],
        "batches": [str(b) for b in batches],
        "_scored": scored,  # removed before the JSON is written
    }
    return maps, tiles, info
