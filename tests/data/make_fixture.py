#!/usr/bin/env python3
"""Make the small in-repository BBBC010 fixture (``tests/data/bbbc010``) from the full shared data.

    python tests/data/make_fixture.py --shared ../shared/data/bbbc010 --out tests/data/bbbc010

The fixture has the shared folder's layout, so that the same code paths read either; its image
files are byte-for-byte copies under their original names (nothing is re-encoded).  The selection
is deterministic (no random numbers: the same shared data always give the same fixture), re-running
replaces the previous fixture, and ``tests/test_realdata.py`` checks that a re-run reproduces the
committed fixture exactly.  Selection rule (also written into the fixture's README.md):

* labeled patches - whole wells, so the split stays by well: of each split's wells that gave
  exactly ``--per-class`` patches of each class, sorted by name, ``--train-wells`` / ``--dev-wells``
  / ``--test-wells`` evenly spaced ones (index ``floor((i + 1/2) * n / k)``), with all their patches;
* nightly patch batches (``batches/``) - every patch of a selected (dev or test) well, in each of
  the batches, with their ``labels.csv`` rows;
* ``fields/`` - of the selected dev wells and of the selected test wells, the one with the largest
  annotated worm area, both channels, plus every well that lacks a channel in the source (D24, which
  has only ``w1``); their masks and ``wells.csv`` rows; each raw night keeps the files of these
  wells it holds, and the night ``--incomplete-night`` also gets the incomplete wells' files, so that
  a night with a missing channel is real data (in the shared data D24 is in no night).

Needs only the Python standard library.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
from pathlib import Path

CLASSES = ("no_wormed", "wormed")
SPLITS = ("train", "dev", "test")
MARKER = "<!-- made by tests/data/make_fixture.py -->"


def csv_lines(path: Path) -> tuple[bytes, list[tuple[dict, bytes]]]:
    """The header line and ``(row, original line bytes)`` of a CSV file, so that kept rows keep their bytes."""
    raw = path.read_bytes().splitlines(keepends=True)
    header = raw[0]
    names = next(csv.reader([header.decode()]))
    rows = []
    for line in raw[1:]:
        if line.strip():
            rows.append((dict(zip(names, next(csv.reader([line.decode()])))), line))
    return header, rows


def write_lines(path: Path, header: bytes, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"".join(lines))


def evenly_spaced(items: list[str], k: int) -> list[str]:
    n = len(items)
    if k > n:
        raise SystemExit(f"asked for {k} wells of {n}")
    return [items[int((i + 0.5) * n / k)] for i in range(k)]


def copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)  # bytes only: no source permissions (the shared files are read-only)


def select(shared: Path, wells_per_split: dict[str, int], per_class: int) -> dict:
    summary = json.loads((shared / "labeled" / "summary.json").read_text())
    _, patches = csv_lines(shared / "labeled" / "patches.csv")
    chosen, ineligible = {}, []
    for split in SPLITS:
        eligible = []
        for well in sorted(summary["wells"][split]):
            n = [sum(1 for r, _ in patches if r["well"] == well and r["label"] == c) for c in CLASSES]
            (eligible if n == [per_class, per_class] else ineligible).append(well)
        chosen[split] = evenly_spaced(eligible, wells_per_split[split])
    _, fields = csv_lines(shared / "fields" / "wells.csv")
    frac = {r["well"]: float(r["worm_area_frac"]) for r, _ in fields}
    field_wells = [max(chosen[s], key=lambda w: (frac[w], w)) for s in ("dev", "test")]
    incomplete = sorted(r["well"] for r, _ in fields if not (r["w1"] and r["w2"]))
    return {
        "labeled": chosen,
        "ineligible": ineligible,
        "fields": field_wells,
        "incomplete": incomplete,
        "summary": summary,
    }


def make(shared: Path, out: Path, wells_per_split: dict[str, int], per_class: int, incomplete_night: str) -> dict:
    sel = select(shared, wells_per_split, per_class)
    if out.exists():
        readme = out / "README.md"
        if any(out.iterdir()) and not (readme.is_file() and MARKER in readme.read_text()):
            raise SystemExit(f"{out} exists and is not a fixture made by this script; not replacing it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    stats: dict = {}

    # ---- labeled patches: whole wells
    keep = {w for ws in sel["labeled"].values() for w in ws}
    header, patches = csv_lines(shared / "labeled" / "patches.csv")
    kept = [(r, line) for r, line in patches if r["well"] in keep]
    for r, _ in kept:
        copy(shared / "labeled" / r["file"], out / "labeled" / r["file"])
    write_lines(out / "labeled" / "patches.csv", header, [line for _, line in kept])
    counts = {s: {c: sum(1 for r, _ in kept if r["split"] == s and r["label"] == c) for c in CLASSES} for s in SPLITS}
    summary = dict(sel["summary"])
    summary["counts"] = counts
    summary["wells"] = {s: sorted(sel["labeled"][s]) for s in SPLITS}
    cand = summary.get("candidates_per_well(wormed,no_wormed)", {})
    summary["candidates_per_well(wormed,no_wormed)"] = {w: v for w, v in cand.items() if w in keep}
    summary = {
        "fixture": "subset of the full BBBC010 patches made by tests/data/make_fixture.py; see README.md",
        **summary,
    }
    (out / "labeled" / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    stats["labeled"] = counts

    # ---- nightly patch batches: the selected wells' patches
    header, labels = csv_lines(shared / "batches" / "labels.csv")
    kept = [(r, line) for r, line in labels if r["well"] in keep]
    for r, _ in kept:
        copy(shared / "batches" / r["file"], out / "batches" / r["file"])
    write_lines(out / "batches" / "labels.csv", header, [line for _, line in kept])
    batches = sorted(p.name for p in (shared / "batches").iterdir() if p.is_dir())
    stats["batches"] = {}
    for b in batches:
        per = {c: sum(1 for r, _ in kept if r["batch"] == b and r["label"] == c) for c in CLASSES}
        if min(per.values()) == 0:
            raise SystemExit(f"batch {b} would lack a class ({per}): choose other well counts")
        stats["batches"][b] = per

    # ---- fields: two complete wells (dev, test) and the incomplete ones
    fwells = sel["fields"] + sel["incomplete"]
    header, rows = csv_lines(shared / "fields" / "wells.csv")
    kept = [(r, line) for r, line in rows if r["well"] in fwells]
    files = {r["well"]: [r[ch] for ch in ("w1", "w2") if r[ch]] for r, _ in kept}
    for r, _ in kept:
        for name in files[r["well"]]:
            copy(shared / "fields" / "images" / name, out / "fields" / "images" / name)
        copy(shared / "fields" / "masks" / r["mask"], out / "fields" / "masks" / r["mask"])
    write_lines(out / "fields" / "wells.csv", header, [line for _, line in kept])
    nights = sorted(p.name for p in (shared / "fields" / "batches").iterdir() if p.is_dir())
    if incomplete_night not in nights:
        raise SystemExit(f"--incomplete-night {incomplete_night} is not one of {nights}")
    stats["nights"] = {}
    for night in nights:
        there = {p.name for p in (shared / "fields" / "batches" / night).iterdir()}
        names = [n for w in sel["fields"] for n in files[w] if n in there]
        for name in names:
            copy(shared / "fields" / "batches" / night / name, out / "fields" / "batches" / night / name)
        if night == incomplete_night:
            for w in sel["incomplete"]:
                for name in files[w]:
                    copy(shared / "fields" / "images" / name, out / "fields" / "batches" / night / name)
        stats["nights"][night] = sorted(p.name for p in (out / "fields" / "batches" / night).iterdir())
    for w in sel["fields"]:
        if not any(n in stats["nights"][night] for night in nights for n in files[w]):
            raise SystemExit(f"well {w} is in no raw night")

    (out / "README.md").write_text(readme_text(shared, sel, stats, wells_per_split, per_class, incomplete_night))
    return {"selection": {k: sel[k] for k in ("labeled", "fields", "incomplete")}, **stats}


def readme_text(shared: Path, sel: dict, stats: dict, wells_per_split: dict, per_class: int, night: str) -> str:
    source = json.loads((shared / "labeled" / "summary.json").read_text())["counts"]
    table = io.StringIO()
    table.write("| split | wells | no_wormed | wormed | (full data: no_wormed / wormed) |\n|---|---|---|---|---|\n")
    for s in SPLITS:
        c = stats["labeled"][s]
        table.write(
            f"| {s} | {', '.join(sel['labeled'][s])} | {c['no_wormed']} | {c['wormed']} "
            f"| {source[s]['no_wormed']} / {source[s]['wormed']} |\n"
        )
    batches = "\n".join(
        f"  - `batches/{b}/`: {c['no_wormed']} no_wormed + {c['wormed']} wormed patches" for b, c in stats["batches"].items()
    )
    nights = "\n".join(
        f"  - `fields/batches/{n}/`: " + (", ".join(f"`{f}`" for f in files) or "(empty)") for n, files in stats["nights"].items()
    )
    dev_well, test_well = sel["fields"]
    return f"""# BBBC010 test fixture (a small subset of the real data)

{MARKER}
A small part of the real BBBC010 data, in the layout of the full shared copy
(`../shared/data/bbbc010`, seen from a checkout of this repository), so that the tests that need
real data also run in a fresh clone without it: `tests/conftest.py`'s `bbbc010` fixture gives the
full data when they are there and this subset otherwise; the few tests that need the full data
(fixture `bbbc010_full`) skip without them (and fail in CI, `WORMFLOW_REQUIRE_ALL=1`).
Do not edit by hand; re-make it with (standard library only, deterministic)

    python tests/data/make_fixture.py --shared ../shared/data/bbbc010 --out tests/data/bbbc010

`tests/test_realdata.py` checks that a re-run gives exactly these files when the full data are present.

## Origin
Made by `tests/data/make_fixture.py` from `../shared/data/bbbc010`.  Every image and mask is a
byte-for-byte copy, under its original name, of the file at the same path there; the one exception
is the incomplete well ({", ".join(sel["incomplete"])}) in the raw night `fields/batches/{night}/`,
copied from `fields/images/` (see below).  `labeled/patches.csv`, `batches/labels.csv` and
`fields/wells.csv` are the original header and rows (bytes included) of the kept files and wells;
`labeled/summary.json` is the original with `counts`, `wells` and the per-well candidate counts
restricted to this subset and a `fixture` note added.  The shared folder's `README.md`,
`fields/README.md` and `derive.py` (how the patches were cut from the fields) describe the data;
they are not copied here.

## Licence and citation
BBBC010 ("C. elegans infection live/dead image set version 1", one 384-well plate, Fred Ausubel
lab) and the human-corrected worm foreground masks of Wählby et al., *Nature Methods* 2012, are
reported as shared under CC0 1.0 (by the collection's loaders); this subset is under the same
terms.  Cite as the collection asks: "We used the C. elegans infection live/dead image set
version 1 provided by Fred Ausubel and available from the Broad Bioimage Benchmark Collection
[Ljosa et al., Nature Methods, 2012]."

## Selection rule (deterministic, no random numbers)
- `labeled/`: whole wells, so the split stays by well and no well is in two splits.  Of each
  split's wells that gave exactly {per_class} patches of each class (all wells but
  {", ".join(sel["ineligible"]) or "none"}), sorted by name, the
  {wells_per_split["train"]} / {wells_per_split["dev"]} / {wells_per_split["test"]} (train / dev / test)
  evenly spaced ones, index `floor((i + 1/2) * n / k)` for `i < k` of `n` eligible wells; all
  their patches.

{table.getvalue()}
- `batches/`: the three nightly patch batches (in the full data cut from the dev and test wells
  only), each with every patch of a selected dev or test well, and their `labels.csv` rows:
{batches}
- `fields/`: of the selected dev wells and of the selected test wells the one with the largest
  annotated worm area ({dev_well} dev, {test_well} test), both channels (w1 fluorescence, w2
  brightfield; 16-bit 696x520 TIFFs), and every well that lacks a channel in the source
  ({", ".join(sel["incomplete"])}: only `w1`, split `none`): their TIFFs in `images/`, masks in
  `masks/`, rows in `wells.csv`.  Each raw night keeps the files of these wells that it holds;
  night {night} also gets the incomplete well's file, so that a night with a channel missing is
  real data (in the full data {", ".join(sel["incomplete"])} is in no night):
{nights}
"""


def main(argv=None) -> None:
    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=Path, default=here.parents[2] / "shared" / "data" / "bbbc010")
    p.add_argument("--out", type=Path, default=here / "bbbc010")
    p.add_argument("--train-wells", type=int, default=10)
    p.add_argument("--dev-wells", type=int, default=4)
    p.add_argument("--test-wells", type=int, default=4)
    p.add_argument("--per-class", type=int, default=2, help="patches per class of an eligible well (the source's)")
    p.add_argument("--incomplete-night", default="2026-11-24", help="the raw night that gets the incomplete well(s)")
    a = p.parse_args(argv)
    if not (a.shared / "labeled" / "summary.json").is_file():
        sys.exit(f"no BBBC010 data at {a.shared}")
    wells = {"train": a.train_wells, "dev": a.dev_wells, "test": a.test_wells}
    stats = make(a.shared.resolve(), a.out, wells, a.per_class, a.incomplete_night)
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
