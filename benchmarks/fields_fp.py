#!/usr/bin/env python3
"""Where a fields-benchmark run's false-positive pixels lie (test wells, rim setting, dev-wells threshold).

    python benchmarks/fields_fp.py benchmarks/results/fields-<date>.json [--work benchmarks/work/fields]

Reads the thresholds from the run's JSON and the methods' stitched maps from its score files under
``--work`` (the local-contrast floor is recomputed) and splits each method's false-positive pixels
into: the rim band (specimen area outside derive.py's eroded well), a 3 px halo around annotated worms
(blur), and the rest.  Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

import fields as B  # noqa: E402

from wormflow.scorefields import read_field_scores  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "fields")
    ap.add_argument("--halo", type=float, default=3.0)
    a = ap.parse_args(argv)
    res = json.loads(a.results.read_text())
    fields_root = Path(res["params"]["fields"])
    wells = B.load_wells(fields_root, splits=("test",))
    methods = [*res.get("learned", {}).get("training", {}), "local_contrast"]
    near = {n: ndi.distance_transform_edt(~w.mask) <= a.halo for n, w in wells.items()}
    out = {}
    for m in methods:
        t = res["methods"]["rim"][m]["pixels"]["threshold"]["value"]
        if m == "local_contrast":
            maps = {n: B.F.local_contrast(w.rgb[..., 1]) for n, w in wells.items()}
        else:
            maps = {}
            for scores in sorted(a.work.glob(f"batches/*/scores.{m}.h5")):
                fs = read_field_scores(str(scores), [m])
                maps |= {u.well: fs.map(m, k) for k, u in enumerate(fs.units) if u.well in wells}
        c = np.zeros(5, np.int64)  # fp, fp in the rim band, fp in the halo, tp, fn
        for n, w in wells.items():
            pred, worm = (maps[n] >= t) & w.area, w.mask & w.area
            fp = pred & ~worm
            c += [fp.sum(), (fp & ~w.region).sum(), (fp & w.region & near[n]).sum(), (pred & worm).sum(), (~pred & worm).sum()]
        fp, rim, halo, tp, fn = (int(v) for v in c)
        out[m] = {
            "threshold": t,
            "fp": fp,
            "tp": tp,
            "fn": fn,
            "fp_per_tp": fp / max(tp, 1),
            "fp_share_rim_band": rim / max(fp, 1),
            "fp_share_halo": halo / max(fp, 1),
            "fp_share_other": (fp - rim - halo) / max(fp, 1),
        }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
