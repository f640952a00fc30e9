"""Figures and thumbnails for the HTML report, as ``data:`` URIs (nothing is written to disk).

Plots are matplotlib figures (Agg backend) saved as SVG with text kept as
text (``svg.fonttype = none``: small files, the browser's own sans-serif
font) and a fixed hash salt (the same inputs give the same bytes).  Images
(gallery thumbnails) are PNGs, upscaled with nearest-neighbour to about
:data:`THUMB_PX` pixels so that single pixels stay visible; larger images
are reduced by an integer factor instead.  Plate maps draw a 96- or
384-well plate, one well a circle.  Every function returns a
``data:image/...;base64,...`` string: the report embeds it as an ``<img>``
source, so the HTML needs no external file and no inline ``<svg>`` markup.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402
from PIL import Image  # noqa: E402

THUMB_PX = 96
MAX_TICKS = 12  # batch names labelled on a trend axis (more batches: every k-th)
MAX_MARKED = 60  # trend series longer than this are drawn as lines without point markers
CLASS_COLOURS = {"no_wormed": "#4477aa", "wormed": "#cc6677"}
MARK_COLOUR = "#c0392b"
FALLBACK_COLOURS = ("#e7298a", "#66a61e", "#e6ab02", "#a6761d")
RC = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.dpi": 96,
}


def method_colour(display: Mapping[str, dict], method: str, index: int = 0) -> str:
    """The method's colour (from its module, via ``display``) in every plot and table of the report."""
    colour = display.get(method, {}).get("colour")
    return colour or FALLBACK_COLOURS[index % len(FALLBACK_COLOURS)]


def _label(display: Mapping[str, dict], method: str) -> str:
    return display.get(method, {}).get("label", method)


def _finite(values: Sequence[float | None]) -> np.ndarray:
    """Values as float64, ``None`` → NaN."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


# --------------------------------------------------------------------------- encoding


def svg_uri(fig: plt.Figure, salt: str) -> str:
    """Close ``fig`` and return it as a base64 SVG data URI (deterministic ids from ``salt``)."""
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_uri(image: np.ndarray) -> str:
    """A uint8 ``(H, W)`` or ``(H, W, 3)`` array as a base64 PNG data URI."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def resize_for_thumb(image: np.ndarray, target: int = THUMB_PX, smooth: bool = True) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor to about ``target`` px; larger images are reduced to ``target``.

    Reduction averages pixels (box filter) when ``smooth``, else keeps nearest
    values (for binary masks).
    """
    side = max(image.shape[0], image.shape[1], 1)
    if side < target:
        k = max(1, round(target / side))
        return np.repeat(np.repeat(image, k, axis=0), k, axis=1)
    if side <= target * 1.25:
        return image
    h, w = (max(1, round(d * target / side)) for d in image.shape[:2])
    resample = Image.Resampling.BOX if smooth else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), resample))


def rgb_thumb(image: np.ndarray) -> str:
    """An RGB uint8 image as a thumbnail data URI."""
    return png_uri(resize_for_thumb(np.asarray(image, dtype=np.uint8)))


def error_map_thumb(error_map: np.ndarray, cmap: str = "magma") -> str:
    """A uint8 error map (mean absolute error × 127.5) coloured with ``cmap`` (0 → dark, 255 → bright)."""
    lut = (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return png_uri(lut[resize_for_thumb(np.asarray(error_map, dtype=np.uint8))])


def mask_thumb(mask: np.ndarray) -> str:
    """A 0/1 colour mask: in-bounds pixels white on dark grey."""
    grey = np.where(np.asarray(mask) > 0, 255, 40).astype(np.uint8)
    return png_uri(resize_for_thumb(grey, smooth=False))


def colour_bar_uri(cmap: str = "magma") -> str:
    """A small horizontal colour bar (low → high) for the error-map legend."""
    lut = (matplotlib.colormaps[cmap](np.linspace(0, 1, 128))[:, :3] * 255).astype(np.uint8)
    return png_uri(np.repeat(lut[None], 10, axis=0))


# --------------------------------------------------------------------------- evaluation plots


def roc_pr_figure(
    curves: Mapping[str, dict], aurocs: Mapping[str, float], aps: Mapping[str, float], display: Mapping[str, dict]
) -> str:
    """ROC (left) and precision–recall (right) curves of all methods (floors dashed), AUROC / AP in the legends."""
    with plt.rc_context(RC):
        fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.2))
        for i, (method, c) in enumerate(curves.items()):
            style = {
                "color": method_colour(display, method, i),
                "lw": 1.6,
                "ls": "--" if display.get(method, {}).get("baseline") else "-",
            }
            if "roc" in c:
                ax_roc.plot(
                    c["roc"]["fpr"],
                    c["roc"]["tpr"],
                    label=f"{_label(display, method)} (AUROC {_fmt(aurocs.get(method))})",
                    **style,
                )
            if "pr" in c:
                ax_pr.step(
                    c["pr"]["recall"],
                    c["pr"]["precision"],
                    where="post",
                    label=f"{_label(display, method)} (AP {_fmt(aps.get(method))})",
                    **style,
                )
        ax_roc.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.8, ls=":")
        _axes(ax_roc, "ROC", "false positive rate", "true positive rate")
        _axes(ax_pr, "Precision–recall", "recall", "precision")
        for ax in (ax_roc, ax_pr):
            ax.legend(loc="lower right" if ax is ax_roc else "lower left")
        fig.tight_layout()
        return svg_uri(fig, "roc_pr")


def _axes(ax, title: str, xlabel: str, ylabel: str, unit: bool = True) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if unit:
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)


def _fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return math.ceil(max(n, 1) / cols), cols


def threshold_sweep_figure(sweeps: Mapping[str, dict], thresholds: Mapping[str, float], display: Mapping[str, dict]) -> str:
    """F1, precision and recall against the threshold, one panel per method, the chosen threshold marked."""
    rows, cols = _grid(len(sweeps))
    with plt.rc_context(RC):
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
        for ax, (method, sw) in zip(axes.flat, sweeps.items()):
            t = sw.get("threshold", [])
            ax.plot(t, sw.get("f1", []), color="#222222", lw=1.6, label="F1")
            ax.plot(t, sw.get("precision", []), color="#3182bd", lw=1.1, label="precision")
            ax.plot(t, sw.get("recall", []), color="#e6550d", lw=1.1, label="recall")
            chosen = thresholds.get(method)
            if chosen is not None and math.isfinite(chosen):
                ax.axvline(chosen, color=MARK_COLOUR, lw=1, ls="--", label=f"threshold {chosen:.3g}")
            ax.set_ylim(-0.02, 1.05)
            _axes(ax, _label(display, method), "threshold", "", unit=False)
            ax.legend(loc="best")
        for ax in list(axes.flat)[len(sweeps) :]:
            ax.set_visible(False)
        fig.tight_layout()
        return svg_uri(fig, "threshold_sweep")


def histogram_figure(hists: Mapping[str, dict], thresholds: Mapping[str, float], display: Mapping[str, dict]) -> str:
    """Score histograms per class (no_wormed / wormed), one panel per method, the threshold marked."""
    rows, cols = _grid(len(hists))
    with plt.rc_context(RC):
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
        for ax, (method, h) in zip(axes.flat, hists.items()):
            edges = np.asarray(h.get("edges", [0.0, 1.0]), dtype=np.float64)
            for cls in ("no_wormed", "wormed"):
                counts = np.asarray(h.get(cls, []), dtype=np.float64)
                if len(counts) == len(edges) - 1:
                    ax.stairs(counts, edges, fill=True, alpha=0.45, color=CLASS_COLOURS[cls], label=cls)
            chosen = thresholds.get(method)
            if chosen is not None and math.isfinite(chosen):
                ax.axvline(chosen, color=MARK_COLOUR, lw=1, ls="--", label="threshold")
            _axes(ax, _label(display, method), "score", "images", unit=False)
            ax.legend(loc="best")
        for ax in list(axes.flat)[len(hists) :]:
            ax.set_visible(False)
        fig.tight_layout()
        return svg_uri(fig, "histograms")


# --------------------------------------------------------------------------- batch trends


def trend_figure(
    batches: Sequence[str],
    flagged: Mapping[str, Sequence[float | None]],
    ks: Mapping[str, Sequence[float | None]],
    ks_max: float,
    display: Mapping[str, dict],
) -> str:
    """Flagged share (left) and KS drift (right) per method across batches; batches beyond ``ks_max`` ringed."""
    x = np.arange(len(batches))
    with plt.rc_context(RC):
        fig, (ax_f, ax_k) = plt.subplots(1, 2, figsize=(10, 3.6))
        for i, method in enumerate(flagged):
            colour, label = method_colour(display, method, i), _label(display, method)
            ax_f.plot(x, _finite(flagged[method]), color=colour, label=label, **_marker(len(batches)))
            k = _finite(ks.get(method, [None] * len(batches)))
            ax_k.plot(x, k, color=colour, label=label, **_marker(len(batches)))
            beyond = np.isfinite(k) & (k > ks_max)
            if beyond.any():
                ax_k.scatter(x[beyond], k[beyond], s=110, facecolors="none", edgecolors=MARK_COLOUR, linewidths=1.6, zorder=5)
        ax_k.axhline(ks_max, color=MARK_COLOUR, lw=1, ls="--", label=f"bound ks_max = {ks_max:g}")
        _axes(ax_f, "Flagged share (predicted wormed)", "batch", "share", unit=False)
        _axes(ax_k, "Drift against dev (KS statistic)", "batch", "KS", unit=False)
        ax_f.set_ylim(-0.02, 1.02)
        ax_k.set_ylim(0, max(1.0, ks_max * 1.1))
        for ax in (ax_f, ax_k):
            _batch_axis(ax, batches)
            ax.legend(loc="best")
        fig.tight_layout()
        return svg_uri(fig, "trends")


def _short(name: str, n: int = 16) -> str:
    """A batch name shortened for an axis tick (matplotlib's SVG writer escapes it)."""
    return name if len(name) <= n else name[: n - 1] + "…"


def _batch_axis(ax, batches: Sequence[str]) -> None:
    """Batch names as x ticks: at most :data:`MAX_TICKS` labelled (evenly spread, the last one always), rotated when many."""
    n = len(batches)
    step = max(1, math.ceil(n / MAX_TICKS))
    at = sorted({*range(0, n, step), n - 1}) if n else []
    if len(at) > 1 and at[-1] - at[-2] < step:
        at.pop(-2)  # keep the last batch's label, drop its crowded neighbour
    ax.set_xticks(
        at, [_short(batches[i]) for i in at], rotation=45 if len(at) > 6 else 0, ha="right" if len(at) > 6 else "center"
    )
    if n:
        ax.set_xlim(-0.5, n - 0.5)


def _marker(n: int) -> dict:
    """Point markers for a series of ``n`` batches (none beyond :data:`MAX_MARKED`: lines only, smaller files)."""
    return {"marker": "o", "ms": 4} if n <= MAX_MARKED else {}


def field_trend_figure(
    batches: Sequence[str],
    mean_share: Mapping[str, Sequence[float | None]],
    flagged_share: Mapping[str, Sequence[float | None]],
    display: Mapping[str, dict],
) -> str:
    """Batches of fields: mean estimated worm area share of the scored fields (left) and share of fields flagged
    (predicted wormed, right), one line per method."""
    x = np.arange(len(batches))
    with plt.rc_context(RC):
        fig, (ax_s, ax_f) = plt.subplots(1, 2, figsize=(10, 3.6))
        top = 0.0
        for i, method in enumerate(mean_share):
            colour, label = method_colour(display, method, i), _label(display, method)
            share = _finite(mean_share[method])
            ax_s.plot(x, share, color=colour, label=label, **_marker(len(batches)))
            ax_f.plot(
                x, _finite(flagged_share.get(method, [None] * len(batches))), color=colour, label=label, **_marker(len(batches))
            )
            if np.isfinite(share).any():
                top = max(top, float(np.nanmax(share)))
        _axes(ax_s, "Mean estimated worm area share per field", "batch", "worm area share", unit=False)
        _axes(ax_f, "Fields flagged (predicted wormed)", "batch", "share of scored fields", unit=False)
        ax_s.set_ylim(0, max(top * 1.15, 1e-3))
        ax_f.set_ylim(-0.02, 1.02)
        for ax in (ax_s, ax_f):
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=None))
            _batch_axis(ax, batches)
            ax.legend(loc="best")
        fig.tight_layout()
        return svg_uri(fig, "field_trends")


# --------------------------------------------------------------------------- plates

PLATE_CMAP = "viridis"
PLATE_SHAPES = {96: (8, 12), 384: (16, 24)}
PLATE_CELL_IN = {96: 0.4, 384: 0.22}
ROW_LETTERS = "ABCDEFGHIJKLMNOP"


def plate_figure(
    n_wells: int,
    shares: Mapping[tuple[int, int], float],
    fields_at: Sequence[tuple[int, int]],
    vmax: float,
    title: str,
    salt: str,
) -> str:
    """A 96- or 384-well plate (row A on top, column 1 on the left), one circle a well at ``(row, column)``
    (0-based): wells with a scored field (``shares``) filled by their estimated worm area share on the scale
    0–``vmax`` (:data:`PLATE_CMAP`, colour bar beside), the other wells that hold a field of the batch
    (``fields_at``: not scored, quarantined) light grey with a red cross, the rest (no field in the batch) an
    empty outline.

    The layout is fixed in inches (one well a cell of :data:`PLATE_CELL_IN`), so that the wells are scatter
    markers of a known size: the SVG holds one circle definition and one short reference per well.
    """
    from matplotlib.colors import Normalize

    rows, cols = PLATE_SHAPES[n_wells]
    cell = PLATE_CELL_IN[n_wells]
    vmax = vmax if vmax > 0 else 1e-3
    norm, cmap = Normalize(0.0, vmax), matplotlib.colormaps[PLATE_CMAP]
    scored = sorted(shares)
    crossed = sorted(set(fields_at) - set(shares))
    taken = {*scored, *crossed}
    empty = [(r, c) for r in range(rows) for c in range(cols) if (r, c) not in taken]
    left, top, bottom, bar_gap, bar_w, right = 0.3, 0.62, 0.42, 0.12, 0.12, 0.78
    w_in, h_in = left + cols * cell + bar_gap + bar_w + right, top + rows * cell + bottom
    size = (0.84 * cell * 72) ** 2  # marker area in points²: a circle of 84 % of the cell

    def xy(at):
        return [c for _, c in at], [r for r, _ in at]

    with plt.rc_context({**RC, "axes.grid": False}):
        fig = plt.figure(figsize=(w_in, h_in))
        ax = fig.add_axes((left / w_in, bottom / h_in, cols * cell / w_in, rows * cell / h_in))
        marks = {"marker": "o", "s": size, "clip_on": False}
        if empty:
            ax.scatter(*xy(empty), facecolors="none", edgecolors="#9aa3ab", linewidths=0.6, **marks)
        if crossed:
            ax.scatter(*xy(crossed), facecolors="#eeeeee", edgecolors="#9aa3ab", linewidths=0.6, **marks)
            ax.scatter(*xy(crossed), marker="x", s=size * 0.45, color=MARK_COLOUR, linewidths=1.4, clip_on=False)
        if scored:
            values = np.array([shares[k] for k in scored], dtype=np.float64)
            ax.scatter(*xy(scored), c=values, cmap=cmap, norm=norm, edgecolors="#4d4d4d", linewidths=0.4, **marks)
        ax.set_xlim(-0.5, cols - 0.5)
        ax.set_ylim(rows - 0.5, -0.5)
        ax.xaxis.tick_top()
        small = 6.5 if n_wells == 384 else 8
        ax.set_xticks(range(cols), [str(c + 1) for c in range(cols)], fontsize=small)
        ax.set_yticks(range(rows), list(ROW_LETTERS[:rows]), fontsize=small)
        ax.tick_params(length=0, pad=2)
        for side in ax.spines.values():
            side.set_visible(False)
        ax.set_title(title, pad=14)
        cax = fig.add_axes(((left + cols * cell + bar_gap) / w_in, bottom / h_in, bar_w / w_in, rows * cell / h_in))
        bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
        bar.solids.set_rasterized(True)
        bar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=None))
        bar.ax.tick_params(labelsize=small)
        bar.set_label("estimated worm area share", fontsize=small)
        handles = [
            Line2D([], [], ls="none", marker="x", color=MARK_COLOUR, mew=1.4, label="not scored (quarantined)"),
            Line2D([], [], ls="none", marker="o", mfc="none", mec="#9aa3ab", label="no field in this batch"),
        ]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, 0.0), ncol=2, handletextpad=0.3, borderaxespad=0.2)
        return svg_uri(fig, salt)
