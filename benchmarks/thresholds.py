#!/usr/bin/env python3
"""Threshold rules (f1max, robust) on the real BBBC010 patches, a harder patch split, and the fields' floors.

    python benchmarks/harder_patches.py ../shared/data/bbbc010/fields            # the harder split (work dir)
    python benchmarks/thresholds.py run --methods vae dark_pixels --seeds 0 1 2  # train once, calibrate 2 × 2 ways
    python benchmarks/thresholds.py fields ../shared/data/bbbc010/fields         # the floors' tiles and pixels
    python benchmarks/thresholds.py summarize                                    # -> results/thresholds-<date>.{md,json}

``run`` trains each method (the ``tuned`` preset, :func:`accuracy.preset_config`) on the standard
labeled train split with the workflow's ``train``, once per seed; then, with that model, it does
what training does at its end — scores a dev split with the scoring code and lets the method fit
its score function (VAE, GAN: colour bounds and combiner) and choose the threshold
(``Method.calibrate``) — for both dev splits (standard, harder) and both rules, and scores both
test splits at each resulting threshold.  Calibrating on the standard dev split with ``f1max``
must give the trained model's own threshold: every run checks it.  ``fields`` evaluates the
floors of ``benchmarks/fields.py`` under both rules.  Everything resumes from ``<work>/raw.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

import accuracy  # noqa: E402
import harder_patches  # noqa: E402

from wormflow import __version__  # noqa: E402
from wormflow.decision import N_BOOT, THRESHOLD_RULES  # noqa: E402
from wormflow.methods import get, spec  # noqa: E402

DEFAULT_HARDER = REPO / "benchmarks" / "work" / "harder-patches"
SPLITS = ("standard", "harder")
RULES = ("f1max", "robust")  # today's rule first
TOLERANCE = 0.001  # robust counts as "not worse" when no cell loses more F1/Dice than this


def _command() -> str:
    return "python benchmarks/thresholds.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": [], "commands": []}


def _save(path: Path, raw: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))


# --------------------------------------------------------------------------- run


def calibrate_and_score(method: str, art, mcfg: dict, devs: dict, tests: dict, device, n_boot: int) -> list[dict]:
    """For every dev split and rule: the method's own calibration on that dev split, then both test splits scored."""
    from wormflow.evaluate import point_metrics
    from wormflow.scoring import Scorer, batches

    m = get(method)
    model = art.model()
    rows = []
    for dev_name, dev in devs.items():
        feats = Scorer(method, model, mcfg, device, combiner=None, threshold=None).features(
            batches(dev.images, mcfg.get("eval_batch_size", 256))
        )
        for rule in RULES:
            cal = m.calibrate(feats, dev, mcfg, rule=rule, n_boot=n_boot)
            calibrated = dataclasses.replace(
                art,
                config=cal.cfg,
                combiner=cal.combiner.to_dict() if cal.combiner else None,
                threshold=cal.threshold,
                threshold_rule=cal.threshold_rule,
            )
            scorer = calibrated.scorer(device)
            for test_name, test in tests.items():
                s = scorer(test.images).score.astype(np.float64)
                rows.append(
                    {
                        "dev": dev_name,
                        "rule": rule,
                        "test": test_name,
                        "threshold": float(cal.threshold),
                        "threshold_rule": cal.threshold_rule,
                        "dev_f1": float(cal.dev_f1),
                        "colour": cal.cfg.get("colour"),
                        **point_metrics(s, test.labels, cal.threshold),
                        "test_scores": [round(float(v), 7) for v in s],
                    }
                )
    return rows


def cmd_run(a) -> None:
    import torch

    from wormflow.artifact import Artifact
    from wormflow.data import load_split
    from wormflow.runtime import select_device
    from wormflow.train import train

    work = Path(a.work)
    raw_path = work / "raw.json"
    raw = _load(raw_path)
    if not (Path(a.harder) / "dev").is_dir():
        harder_patches.derive(Path(a.fields), Path(a.harder), 0.01, 4)
    cfg = accuracy.preset_config(a.preset, a.epochs_scale)
    sizes = sorted({cfg["methods"][m]["image_size"] for m in a.methods} | {128})
    stores = {
        "standard": accuracy.decode_splits(Path(a.data), work / "standard", sizes, cfg),
        "harder": accuracy.decode_splits(Path(a.harder), work / "harder", sizes, cfg),
    }
    device = select_device(a.device)
    done = {(r["method"], r["seed"]) for r in raw["runs"]}
    t_start = time.perf_counter()
    for seed in a.seeds:
        for method in a.methods:
            if not spec(method).seeded and seed != a.seeds[0]:
                continue  # deterministic (the floor): the first seed only
            if (method, seed) in done:
                continue
            mcfg = cfg["methods"][method]
            size = get(method).image_size(mcfg)
            devs = {s: load_split(stores[s]["dev"], size) for s in SPLITS}
            tests = {s: load_split(stores[s]["test"], size) for s in SPLITS}
            out = work / "runs" / method / f"seed{seed}"
            print(f"[thresholds] {method} seed {seed}", flush=True)
            t0 = time.perf_counter()
            art = train(
                method,
                mcfg,
                load_split(stores["standard"]["train"], size),
                devs["standard"],
                out,
                seed=seed,
                device=a.device,
                num_workers=a.num_workers,
                tensorboard=False,
                checkpoint_interval_s=120,
                threshold_rule="f1max",
                n_boot=a.n_boot,
            )
            train_s = time.perf_counter() - t0
            art = Artifact.load(out / "model.pt")
            rows = calibrate_and_score(method, art, mcfg, devs, tests, device, a.n_boot)
            own = next(r for r in rows if r["dev"] == "standard" and r["rule"] == "f1max")
            if own["threshold"] != art.threshold:
                raise SystemExit(f"{method} seed {seed}: recalibration gave {own['threshold']}, training {art.threshold}")
            raw["runs"].append(
                {
                    "method": method,
                    "seed": seed,
                    "train_s": train_s,
                    "epochs_run": art.epochs_run,
                    "weights_init": art.weights_init,
                    "device": art.device,
                    "trained_threshold": art.threshold,
                    "rows": rows,
                    "labels": {s: tests[s].labels.tolist() for s in SPLITS},
                    "ids": {s: tests[s].ids for s in SPLITS},
                }
            )
            _save(raw_path, raw)
            print(
                f"[thresholds]   {train_s:.0f} s; "
                + "; ".join(f"{r['dev']}/{r['rule']}→{r['test']} F1 {r['f1']:.3f}" for r in rows)
            )
    raw["run_wall_s"] = raw.get("run_wall_s", 0) + time.perf_counter() - t_start
    raw["environment"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.machine()})",
        "cpu_count": os.cpu_count(),
        "wormflow": __version__,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    raw["preset"], raw["data"], raw["harder"], raw["n_boot"] = a.preset, str(a.data), str(a.harder), a.n_boot
    raw["harder_summary"] = json.loads((Path(a.harder) / "summary.json").read_text())
    raw["commands"] = [c for c in raw["commands"] if c != _command()] + [_command()]
    _save(raw_path, raw)


# --------------------------------------------------------------------------- fields


def cmd_fields(a) -> None:
    import fields as FB

    t0 = time.perf_counter()
    wells = FB.load_wells(Path(a.fields))
    maps, tile_scores = FB.floors(wells, 64)
    out = {}
    for rule in RULES:
        res = FB.evaluate_all(wells, maps, tile_scores, FB.settings(0.5), tile=64, rule=rule)
        for setting, per in res.items():
            for method, r in per.items():
                p, t = r.get("pixels"), r.get("tiles")
                out.setdefault(setting, {}).setdefault(method, {})[rule] = {
                    "pixels": None
                    if p is None
                    else {k: p[k] for k in ("dice", "iou", "precision", "recall", "auroc", "ap", "dice_per_well_mean")}
                    | {"threshold": p["threshold"]},
                    "tiles": None
                    if t is None
                    else {k: t[k] for k in ("f1", "precision", "recall", "auroc", "ap", "n_test", "n_test_wormed")}
                    | {"threshold": t["threshold"]},
                    "wells": r.get("wells"),
                }
    raw_path = Path(a.work) / "raw.json"
    raw = _load(raw_path)
    raw["fields"] = {
        "results": out,
        "seconds": time.perf_counter() - t0,
        "wells": {s: sorted(w.name for w in wells.values() if w.split == s) for s in ("dev", "test")},
    }
    raw["commands"] = [c for c in raw["commands"] if c != _command()] + [_command()]
    _save(raw_path, raw)
    print(json.dumps(out, indent=1)[:4000])


# --------------------------------------------------------------------------- summarize


def _f(v, nd=3) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def aggregate(raw: dict) -> dict:
    """``{method: {(dev, test): {rule: {metric: [per seed]}}}}`` and the seeds."""
    agg: dict = {}
    for run in raw["runs"]:
        for r in run["rows"]:
            cell = agg.setdefault(run["method"], {}).setdefault(f"{r['dev']}→{r['test']}", {}).setdefault(r["rule"], {})
            for k in ("f1", "precision", "recall", "auroc", "average_precision", "threshold", "dev_f1"):
                cell.setdefault(k, []).append(r[k])
    return agg


def not_worse(ver: dict, fver: dict | None) -> tuple[bool, float]:
    """Whether no cell (patches, fields) loses more than :data:`TOLERANCE` under robust; the largest loss."""
    cells = ver["cells"] + (fver["cells"] if fver else [])
    worst = min((c["robust_minus_f1max"] for c in cells), default=0.0)
    return worst >= -TOLERANCE, worst


def verdict(agg: dict) -> dict:
    """Robust against f1max, cell by cell (method × dev split × test split, seed-mean F1)."""
    diffs = []
    for method, cells in agg.items():
        for cell, by_rule in cells.items():
            d = float(np.mean(by_rule["robust"]["f1"]) - np.mean(by_rule["f1max"]["f1"]))
            diffs.append({"method": method, "cell": cell, "robust_minus_f1max": d})
    worse = [d for d in diffs if d["robust_minus_f1max"] < -1e-9]
    better = [d for d in diffs if d["robust_minus_f1max"] > 1e-9]
    return {
        "cells": diffs,
        "robust_better": len(better),
        "robust_worse": len(worse),
        "equal": len(diffs) - len(better) - len(worse),
        "mean_difference": float(np.mean([d["robust_minus_f1max"] for d in diffs])) if diffs else float("nan"),
    }


def fields_verdict(fields: dict) -> dict:
    diffs = []
    for setting, per in fields["results"].items():
        for method, by_rule in per.items():
            for level, key in (("pixels", "dice"), ("tiles", "f1")):
                if by_rule["robust"][level] is not None:
                    diffs.append(
                        {
                            "setting": setting,
                            "method": method,
                            "level": level,
                            "robust_minus_f1max": by_rule["robust"][level][key] - by_rule["f1max"][level][key],
                        }
                    )
    return {
        "cells": diffs,
        "robust_better": sum(d["robust_minus_f1max"] > 1e-9 for d in diffs),
        "robust_worse": sum(d["robust_minus_f1max"] < -1e-9 for d in diffs),
        "mean_difference": float(np.mean([d["robust_minus_f1max"] for d in diffs])) if diffs else float("nan"),
    }


def diagnostics(raw: dict) -> list[dict]:
    """Per run, dev split and test split: misses at the f1max threshold (FN, FP) and the test-optimal F1 — the
    best F1 any threshold reaches on the test split itself (diagnosis only: how much a better-placed threshold
    could gain; below 1 the test classes overlap, a ranking miss no threshold removes)."""
    from wormflow.decision import f1_at, midpoints

    out = []
    for run in raw["runs"]:
        by = {(r["dev"], r["rule"], r["test"]): r for r in run["rows"]}
        for (dev, rule, test), r in by.items():
            if rule != "f1max":
                continue
            y, sc = np.asarray(run["labels"][test]), np.asarray(r["test_scores"])
            pred = sc >= r["threshold"]
            rob = by[(dev, "robust", test)]
            out.append(
                {
                    "method": run["method"],
                    "seed": run["seed"],
                    "dev": dev,
                    "test": test,
                    "fn": int((~pred & (y == 1)).sum()),
                    "fp": int((pred & (y == 0)).sum()),
                    "test_optimal_f1": float(f1_at(sc, y, midpoints(sc)).max()),
                    "same_threshold": rob["threshold"] == r["threshold"],
                }
            )
    return out


def _ms(v: list[float], nd=3) -> str:
    return _f(float(np.mean(v)), nd) + (f" ± {_f(float(np.std(v, ddof=1)), nd)}" if len(v) > 1 else "")


def render(raw: dict, agg: dict, ver: dict, fver: dict | None, diag: list[dict], date: str) -> str:
    env = raw.get("environment", {})
    hs = raw.get("harder_summary", {})
    seeds = {}
    for run in raw["runs"]:
        seeds.setdefault(run["method"], []).append(run["seed"])
    ok, worst = not_worse(ver, fver)
    lines = [
        f"# Threshold rules, {date}",
        "",
        f"**Verdict:** robust is {'not worse' if ok else 'worse'} than f1max on these benchmarks (largest loss in any cell "
        f"{-worst:.5f} F1/Dice; tolerance {TOLERANCE}), and it is not better either: on the patches both rules chose the "
        "same thresholds, on the fields' floors all but one. The misses on the harder split do not come from how the "
        "threshold is read off the dev scores (see *Where the misses come from*).",
        "",
        "Does a robust threshold rule carry over better than the dev F1 optimum? Each method is trained once per seed "
        f"(preset `{raw.get('preset')}`) on the standard labeled train split; then, as training does at its end, the "
        "method fits its score function (VAE, GAN: colour bounds and combiner) and chooses its threshold on a dev split — "
        "the standard one or the harder one — by each rule, and both test splits are scored at that threshold "
        "(`benchmarks/thresholds.py`). Rules (`wormflow.decision.choose_threshold`): **f1max** = the dev F1 optimum "
        "(the rule until now); **robust** = the middle of the dev gap when the dev classes separate, otherwise the F1 "
        f"optimum averaged over {raw.get('n_boot', N_BOOT)} stratified bootstrap resamples of dev.",
        "",
        "## Commands",
        "",
        "```",
        "python benchmarks/harder_patches.py ../shared/data/bbbc010/fields --out benchmarks/work/harder-patches",
        *raw.get("commands", []),
        "python benchmarks/thresholds.py summarize",
        "```",
        "",
        "(from the repository root, with the project's environment's Python)",
        "",
        f"- Device: {env.get('device')}; torch {env.get('torch')}; Python {env.get('python')}; wormflow {env.get('wormflow')}; "
        f"{env.get('cpu_count')} CPUs (shared with other work; load average at the end {env.get('load_average_at_end')}); "
        f"train + calibrate + score: {raw.get('run_wall_s', 0):.0f} s",
        "- Seeds: " + ", ".join(f"{m} {s}" for m, s in seeds.items()) + ". One seed for a method is one training run: its F1 "
        "differences are single observations, not estimates with an interval. Initial weights: "
        + ", ".join(sorted({f"{r['method']} {r['weights_init']}" for r in raw["runs"] if r["method"] == "resnet50"}) or ["–"])
        + ".",
        "",
        "## The harder patch split",
        "",
        f"`benchmarks/harder_patches.py`: derive.py's recipe (64 px windows on its 8 px grid wholly inside the eroded well, "
        f"two per class and well, derive.py's seeded draw, the same wells per split) with worm share ≥ "
        f"{hs.get('params', {}).get('worm_frac_min')} and margin {hs.get('params', {}).get('margin')} px instead of 0.05 and 8 px. "
        f"Counts (no_wormed/wormed): "
        + ", ".join(f"{s} {c['no_wormed']}/{c['wormed']}" for s, c in hs.get("counts", {}).items())
        + "; of these, ambiguous under derive.py's limits (no_wormed within 8 px of a worm / wormed below 5 %): "
        + ", ".join(f"{s} {c['no_wormed']}/{c['wormed']}" for s, c in hs.get("ambiguous_under_standard_limits", {}).items())
        + ". With derive.py's own limits the script draws exactly the 386 labeled patches "
        f"(check: {hs.get('standard_recipe_check', {}).get('identical')}).",
        "",
        "## Patches: F1 at the dev threshold (test split), by rule",
        "",
        "Mean ± sd over seeds. AUROC/AP do not depend on the rule (they depend on the dev split for VAE and GAN, which fit "
        "their combiner there).",
        "",
        "| method | dev → test | AUROC | AP | threshold f1max | threshold robust | F1 f1max | F1 robust | robust − f1max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, cells in agg.items():
        for cell, r in cells.items():
            d = np.mean(r["robust"]["f1"]) - np.mean(r["f1max"]["f1"])
            lines.append(
                f"| {method} | {cell} | {_ms(r['f1max']['auroc'])} | {_ms(r['f1max']['average_precision'])} | "
                f"{_ms(r['f1max']['threshold'], 4)} | {_ms(r['robust']['threshold'], 4)} | {_ms(r['f1max']['f1'])} | "
                f"{_ms(r['robust']['f1'])} | {d:+.3f} |"
            )
    lines += [
        "",
        f"Robust against f1max over these {len(ver['cells'])} cells (seed-mean F1): better in {ver['robust_better']}, "
        f"worse in {ver['robust_worse']}, equal in {ver['equal']}; mean difference {ver['mean_difference']:+.4f}.",
        "",
        "### Per seed",
        "",
        "| method | seed | dev | rule | threshold | kind | dev F1 | F1 standard test | F1 harder test | AUROC standard | AUROC harder |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    dg = {(d["method"], d["seed"], d["dev"], d["test"]): d for d in diag}
    for run in raw["runs"]:
        for dev in SPLITS:
            for rule in RULES:
                rs = {r["test"]: r for r in run["rows"] if r["dev"] == dev and r["rule"] == rule}
                if not rs:
                    continue
                any_r = next(iter(rs.values()))
                kind = any_r["threshold_rule"].split(" (")[0]
                lines.append(
                    f"| {run['method']} | {run['seed']} | {dev} | {rule} | {any_r['threshold']:.4f} | {kind} | {_f(any_r['dev_f1'])} | "
                    f"{_f(rs['standard']['f1'])} | {_f(rs['harder']['f1'])} | {_f(rs['standard']['auroc'])} | {_f(rs['harder']['auroc'])} |"
                )
    lines += [
        "",
        "### Where the misses come from (diagnosis; the test split never chooses anything)",
        "",
        "At the f1max threshold (the robust one is the same unless marked): missed wormed (FN) and flagged no_wormed (FP) "
        "test patches, and the *test-optimal* F1 — the best F1 any threshold reaches on that test split itself.",
        "",
        "| method | seed | dev → test | FN | FP | F1 at dev threshold | test-optimal F1 | same threshold under robust |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in raw["runs"]:
        for r in run["rows"]:
            if r["rule"] != "f1max":
                continue
            d = dg[(run["method"], run["seed"], r["dev"], r["test"])]
            lines.append(
                f"| {run['method']} | {run['seed']} | {r['dev']} → {r['test']} | {d['fn']} | {d['fp']} | {_f(r['f1'])} | "
                f"{_f(d['test_optimal_f1'])} | {'yes' if d['same_threshold'] else 'no'} |"
            )
    calibrations = {(d["method"], d["seed"], d["dev"]): d["same_threshold"] for d in diag}
    gap = [d["test_optimal_f1"] - next(r["f1"] for r in _rows(raw, d)) for d in diag]
    shift = [
        next(r["f1"] for r in _rows(raw, d, dev="harder")) - next(r["f1"] for r in _rows(raw, d, dev="standard"))
        for d in diag
        if d["dev"] == "standard" and d["test"] == "harder"
    ]
    lines += [
        "",
        f"- The two rules chose the same threshold in {sum(calibrations.values())} of {len(calibrations)} calibrations "
        "(run × dev split). Where the dev classes separate, F1-max's only candidate inside the gap is the gap's midpoint "
        "(candidates are midpoints of consecutive dev scores), so both rules pick it; where they overlap, the bootstrap-mean "
        "optimum fell on the in-sample optimum. The rules differ only for tied or saturated top scores, distant F1 ties, "
        "or a grid (tests/test_decision.py), none of which occurred here.",
        f"- A better-placed threshold could gain {np.mean(gap):.3f} F1 on average (test-optimal minus dev-threshold F1, "
        f"max {np.max(gap):.3f}); in {sum(d['test_optimal_f1'] < 1 - 1e-12 for d in diag)} of {len(diag)} cells even the "
        "test-optimal threshold misses (the test classes overlap: a ranking miss).",
        f"- Calibrating on the harder dev split instead of the standard one changes the harder test's F1 by "
        f"{np.mean(shift):+.3f} on average over the {len(shift)} runs (min {np.min(shift):+.3f}, max {np.max(shift):+.3f}): "
        "what the dev split holds matters more than how its threshold is read off.",
    ]
    if fver is not None:
        fr = raw["fields"]["results"]
        lines += [
            "",
            "## Fields: the floors' tiles and pixels (`benchmarks/fields.py`), by rule",
            "",
            f"Thresholds on the {len(raw['fields']['wells']['dev'])} dev wells, metrics on the {len(raw['fields']['wells']['test'])} "
            "test wells (pixels pooled over the test wells; tiles: 64 px, stride 32, ambiguous tiles left out); "
            "`benchmarks/fields.py --rule` switches the rule of the same evaluation. Settings as in "
            "`benchmarks/results/fields-2026-12-03.md`: **rim** = specimen area, tiles ≥ 0.5 in it; **team** = eroded well + "
            "20 px, tiles wholly inside the well.",
            "",
            "| setting | floor | level | threshold f1max | threshold robust (kind) | F1/Dice f1max | F1/Dice robust | robust − f1max |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for setting, per in fr.items():
            for method, by_rule in per.items():
                for level, key in (("pixels", "dice"), ("tiles", "f1")):
                    f, r = by_rule["f1max"][level], by_rule["robust"][level]
                    if f is None:
                        continue
                    lines.append(
                        f"| {setting} | {method} | {level} | {f['threshold']['value']:.4g} | {r['threshold']['value']:.4g} "
                        f"({r['threshold']['rule']}) | {_f(f[key], 4)} | {_f(r[key], 4)} | {r[key] - f[key]:+.5f} |"
                    )
        lines += [
            "",
            f"Robust against f1max over these {len(fver['cells'])} cells: better in {fver['robust_better']}, worse in "
            f"{fver['robust_worse']}; mean difference {fver['mean_difference']:+.6f}.",
        ]
    return "\n".join(lines) + "\n"


def _rows(raw: dict, d: dict, dev: str | None = None) -> list[dict]:
    run = next(r for r in raw["runs"] if r["method"] == d["method"] and r["seed"] == d["seed"])
    return [r for r in run["rows"] if r["dev"] == (dev or d["dev"]) and r["test"] == d["test"] and r["rule"] == "f1max"]


def cmd_summarize(a) -> None:
    raw = _load(Path(a.work) / "raw.json")
    agg = aggregate(raw)
    ver = verdict(agg)
    fver = fields_verdict(raw["fields"]) if "fields" in raw else None
    diag = diagnostics(raw)
    date = a.date or dt.date.today().isoformat()
    out = {
        "generated_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **{k: raw.get(k) for k in ("environment", "commands", "preset", "data", "n_boot", "harder_summary", "run_wall_s")},
        "robust_not_worse": dict(zip(("ok", "largest_loss"), not_worse(ver, fver))) | {"tolerance": TOLERANCE},
        "patches": {"seed_mean": agg, "verdict": ver, "diagnostics": diag, "runs": raw["runs"]},
        "fields": None if fver is None else {**raw["fields"], "verdict": fver},
    }
    results = Path(a.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"thresholds-{date}.json").write_text(json.dumps(out, indent=1) + "\n")
    md = render(raw, agg, ver, fver, diag, date)
    (results / f"thresholds-{date}.md").write_text(md)
    print(md)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["run", "fields", "summarize"])
    p.add_argument("fields", nargs="?", default=str(accuracy.DEFAULT_DATA.parent / "fields"), help="the BBBC010 fields directory")
    p.add_argument("--data", default=str(accuracy.DEFAULT_DATA), help="the standard labeled ImageFolder root")
    p.add_argument(
        "--harder", default=str(DEFAULT_HARDER), help="the harder split (benchmarks/harder_patches.py; derived if absent)"
    )
    p.add_argument("--preset", default="tuned")
    p.add_argument("--methods", nargs="+", default=["vae", "dark_pixels"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every epoch count (smoke tests only)")
    p.add_argument("--n-boot", type=int, default=N_BOOT)
    p.add_argument("--work", default=str(REPO / "benchmarks" / "work" / "thresholds"))
    p.add_argument("--results", default=str(accuracy.RESULTS))
    p.add_argument("--date", help="date in the result file names (default today)")
    a = p.parse_args(argv)
    assert set(RULES) == set(THRESHOLD_RULES)
    {"run": cmd_run, "fields": cmd_fields, "summarize": cmd_summarize}[a.stage](a)


if __name__ == "__main__":
    main()
