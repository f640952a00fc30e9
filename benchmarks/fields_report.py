"""The fields benchmark's report: the markdown tables (floors and methods), the issue's goals in words and
the contact sheet of the worst wells (used by ``fields.py``; results from ``fields.py``/``fields_methods.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from wormflow import fields as F

FLOOR_LABELS = {
    "dark_pixels": "dark pixels (1 − G/median G of the well)",
    "local_contrast": "local contrast ((mean₃₁ − G)/std₃₁, σ 2)",
    "dark_share_tiles": "dark share per tile (patch baseline)",
}


def _display(map_: np.ndarray, area: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(map_[area], [1, 99])
    return np.clip((map_ - lo) / max(hi - lo, 1e-12), 0, 1)


def contact_sheet(
    wells: list, maps_by_method: dict[str, dict], thresholds: dict[str, float], path: Path, labels: dict | None = None
) -> None:
    """One row per well: composite (specimen area outlined) | annotated mask | each method's map.

    A map is shown in grey (1st–99th percentile of the specimen area), with, at its dev threshold,
    true-positive pixels green, false positives red and missed worm pixels blue (specimen area only).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import ndimage as ndi

    labels = labels or {}
    cols = 2 + len(maps_by_method)
    fig, axes = plt.subplots(len(wells), cols, figsize=(3.6 * cols, 2.9 * len(wells)), squeeze=False)
    for row, w in zip(axes, wells):
        comp = w.rgb.copy()
        comp[w.area ^ ndi.binary_erosion(w.area, iterations=2)] = (255, 255, 0)
        row[0].imshow(comp)
        row[0].set_title(f"{w.name} composite (area outlined)", fontsize=8)
        row[1].imshow(w.mask, cmap="gray")
        row[1].set_title(f"mask, worm share {w.mask.mean():.3f}", fontsize=8)
        for ax, (method, maps) in zip(row[2:], maps_by_method.items()):
            m = maps[w.name]
            grey = np.repeat(_display(m, w.area)[..., None] * 0.6, 3, -1)
            pred = (m >= thresholds[method]) & w.area
            truth = w.mask & w.area
            grey[pred & truth] = (0, 0.9, 0)
            grey[pred & ~truth] = (1, 0, 0)
            grey[~pred & truth] = (0.2, 0.4, 1)
            dice = F.overlap(*F.counts(pred[w.area], truth[w.area]))["f1"]
            ax.imshow(grey)
            ax.set_title(f"{labels.get(method, method)}: Dice {dice:.2f}", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)  # a palette PNG: a fifth of the bytes


def _f(v, nd=3) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{nd}f}"


def markdown(results: dict, labels: dict | None = None) -> str:
    labels = {**FLOOR_LABELS, **(labels or {})}
    lines = [
        "| setting | method | px AUROC | px AP | Dice pooled | Dice per well | IoU pooled | tile F1 | tile AUROC | tile AP | tiles (wormed) | well r | well MAE |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, per_method in results["methods"].items():
        for method, r in per_method.items():
            p, t, w = r.get("pixels", {}), r.get("tiles", {}), r.get("wells", {})
            lines.append(
                f"| {setting} | {labels.get(method, method)} | {_f(p.get('auroc'))} | {_f(p.get('ap'))} | {_f(p.get('dice'))} | "
                f"{_f(p.get('dice_per_well_mean'))} | {_f(p.get('iou'))} | {_f(t.get('f1'))} | {_f(t.get('auroc'))} | {_f(t.get('ap'))} | "
                + (f"{t['n_test']} ({t['n_test_wormed']})" if t else "–")
                + f" | {_f(w.get('pearson_r'))} | {_f(w.get('mae'), 4)} |"
            )
    return "\n".join(lines)


def report_text(results: dict, rule: str) -> str:
    """The markdown report: the table, then the patch check, the rim inclusion and the timings."""
    wells, patches, rim, timing = results["wells"], results["patch_check"], results["rim_inclusion"], results["ms_per_well"]
    sa = rim["inside_specimen_area_by_margin"]
    n_wells = len(wells["dev"]) + len(wells["test"])
    return "\n".join(
        [
            f"# Fields benchmark ({n_wells} wells: {len(wells['dev'])} dev, {len(wells['test'])} test)\n",
            f"Command: `{results['command']}`; {results['machine']}\n",
            markdown(results, results.get("learned", {}).get("labels")),
            f"\nThresholds on dev ({rule} rule), metrics on test (pixels pooled over the test wells; tiles of the tile set, "
            "ambiguous tiles left out). Settings: " + "; ".join(f"**{k}**: {v}" for k, v in results["settings"].items()) + ".",
            f"\nPatch check: {patches.get('checked')} labeled patches of these wells re-cut from the composed fields, "
            f"max difference {patches.get('max_abs_difference')} grey levels, labels reproduced {patches.get('labels_reproduced')}.",
            f"\nRim inclusion ({rim['wells']} wells, {rim['worm_pixels']:,} annotated worm pixels): inside derive.py's eroded well "
            f"{rim['inside_eroded_well']:.1%} (outside {1 - rim['inside_eroded_well']:.1%}); inside the un-eroded well {sa['0']:.1%}; "
            "inside the specimen area by margin: "
            + ", ".join(f"{m} px {v:.1%}" for m, v in sa.items())
            + f"; eroded well + 20 px (team setting) {rim['inside_eroded_well_plus_20']:.1%}; the specimen area with the well "
            f"threshold a quarter (not half) of the way from the 5th to the 95th percentile {rim['inside_specimen_area_level_0.25']:.1%}.",
            "\nms per well (mean over the dev and test wells): "
            + ", ".join(f"{k} {v:.1f}" for k, v in timing.items())
            + f" (total {sum(timing.values()):.0f})",
            f"Worst test wells (local-contrast Dice): {', '.join(results['worst_test_wells'])}",
        ]
    ) + (methods_text(results) if "learned" in results else "")


def methods_text(results: dict, floor: str = "local_contrast") -> str:
    """The methods' part of the markdown report: training, the workflow's own well numbers, speed, goals."""
    mr = results["learned"]
    labels = mr["labels"]
    lines = [
        f"\n\n## Learned methods ({mr['preset']} preset, seed {mr['seed']}, trained on the labeled train/dev patches, device {mr['device']})\n",
        "| method | train s | cached | dev F1 (patches) | map | map threshold (dev patches) |",
        "|---|---|---|---|---|---|",
    ]
    for m, i in mr["training"].items():
        fm = i.get("field_map") or {}
        lines.append(
            f"| {labels[m]} | {_f(i['train_time_s'], 0)} | {'yes' if i['cached'] else 'no'} | {_f(i['dev_f1'])} | "
            f"{mr['attrs'][m].get('map')} | {_f(float(mr['attrs'][m]['map_threshold']), 1)}"
            + (f" (dev-patch F1 {fm['dev_f1']:.3f})" if fm else "")
            + " |"
        )
    lines += [
        "\nThe workflow's own per-field numbers on the test wells: `worm_share` (specimen-area pixels at or above the map "
        "threshold chosen on the dev *patches* at training) against the mask's share of the same area; the pixel Dice "
        "at that threshold beside the Dice at the threshold chosen on the dev *wells* (the table above); fields flagged "
        "(at least one tile wormed).\n",
        "| method | worm_share r | worm_share MAE | mean estimate / truth | Dice at map threshold | Dice at dev-wells threshold | fields flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, w in mr["workflow_wells"].items():
        lines.append(
            f"| {labels[m]} | {_f(w['pearson_r'])} | {_f(w['mae'], 4)} | {w['estimate_mean']:.4f} / {w['truth_mean']:.4f} | "
            f"{_f(w['dice_at_map_threshold'])} | {_f(w['dice_at_dev_wells_threshold'])} | {w['fields_flagged']} |"
        )
    sp = mr["speed"]
    lines += [
        f"\nSpeed, end to end through the workflow's steps on {mr['device']} ({mr['n_fields']} fields, {mr['n_tiles']} counted tiles; "
        "decode = manifest + decode_shard_step, shared by the methods; score = score_shard_step for this method alone "
        "(tiling, resize, model, stitching, writing the part); gather = gather_step):\n",
        "| method | decode s | score s | gather s | total s | tiles/s (end to end) | fields/s (end to end) | tiles/s (score only) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, s in sp.items():
        lines.append(
            f"| {labels[m]} | {s['decode_s']:.1f} | {s['score_s']:.1f} | {s['gather_s']:.1f} | {s['total_s']:.1f} | "
            f"{s['tiles_per_s']:.1f} | {s['fields_per_s']:.2f} | {s['score_tiles_per_s']:.1f} |"
        )
    sec = results["seconds"]
    lines.append(
        f"\nWall times: whole run {sec['total']:.0f} s; training and scoring the methods {sec['methods_train_and_score']:.0f} s "
        f"(training {mr['train_wall_s']:.0f} s, {'some' if any(i['cached'] for i in mr['training'].values()) else 'no'} models reused "
        f"from the cache); torch {mr['torch']}, {mr['torch_threads']} threads."
    )
    lines.append("\n" + goals_text(results, floor))
    return "\n".join(lines)


def goals_text(results: dict, floor: str) -> str:
    g = results["learned"]["goals"]
    rim = results["methods"]["rim"]
    fl = rim[floor]["pixels"]
    ok = {True: "**met**", False: "**not met**"}
    per = "; ".join(
        f"{m} AP {rim[m]['pixels']['ap']:.3f}, Dice {rim[m]['pixels']['dice']:.3f} ({'beats' if b else 'does not beat'})"
        for m, b in g["beats_floor"].items()
    )
    b, bt = g["best_pixels"], g["best_tiles"]
    best_auroc = max(g["beats_floor"], key=lambda m: rim[m]["pixels"]["auroc"])
    return "\n".join(
        [
            "## Goals (issue 13, rim setting, test wells)\n",
            f"- Every method's map beats the local-contrast floor (AP {fl['ap']:.3f}, Dice {fl['dice']:.3f}) on pixel AP and Dice: "
            f"{ok[g['all_beat_floor']]} — {per}.",
            f"- The best reaches Dice ≥ 0.90: {ok[g['best_dice_ge_0.90']]} (best {b}: {rim[b]['pixels']['dice']:.3f}); "
            f"pixel AUROC ≥ 0.99: {ok[g['best_auroc_ge_0.99']]} (best {best_auroc}: {rim[best_auroc]['pixels']['auroc']:.3f}).",
            f"- Tiles ≥ 0.99 F1: {ok[g['tiles_f1_ge_0.99']]} (best {bt}: {rim[bt]['tiles']['f1']:.3f}; "
            f"floor {rim[floor]['tiles']['f1']:.3f}).",
        ]
    )
