#!/usr/bin/env python3
"""Peak memory of decoding one worst-case legal image, per image, in a fresh process each.

    python benchmarks/decode_memory.py [--megapixels 16] [--mode path|bytes] [--only NAME ...]
                                       [--code DIR] [--json out.json]

Builds, in a temporary directory, images that are legal (within the decode
limits) but expensive to decode: a 16-bit RGB TIFF, a float32 RGB TIFF, a
16-bit grayscale PNG, an 8-bit RGB PNG, a 4-sample float32 TIFF sized just
under the byte limit it is decoded with (at ``--megapixels 64`` that is
1 GB, just under the default 1 GiB), and a hostile 400-sample TIFF (a few
hundred kB of zlib-compressed zeros that used to decode to 312 MB).

Each image is decoded with :func:`wormflow.imageio.decode_image` in a fresh
subprocess (the images are built in another one: a child inherits its
parent's ``ru_maxrss``, so the parent must stay small).  The peak is
``getrusage(RUSAGE_SELF).ru_maxrss`` after decoding minus the same value just
before (after the imports and a warm-up decode of a tiny image of the same
kind, so that lazily imported codecs count in the baseline, not the image).
``decoded`` is the size the header announces: width x height x samples per
pixel x bytes per sample.

``--mode bytes`` reads the file first with ``read_file_verified`` (the
pipeline's no-follow, hash-checked read) and decodes from those bytes; the
file's bytes then count in the peak too.  ``--code DIR`` measures the
``wormflow`` package in ``DIR`` instead of this checkout's (e.g.
``git archive <old commit> wormflow | tar -x -C DIR``); keywords the measured
code does not have are left out, so one script measures before and after a
change.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def _side(megapixels: float, aspect: float = 1.0) -> tuple[int, int]:
    """``(height, width)`` with ``height * width`` close to ``megapixels`` million and ``width / height = aspect``."""
    n = megapixels * 1_000_000
    height = int(round((n / aspect) ** 0.5))
    return height, int(n // height)


def build(directory: Path, megapixels: float, only: list[str] | None = None) -> list[dict]:
    """Write the benchmark images (those named in ``only``, default all); return one dict per case."""
    import numpy as np
    import tifffile
    from PIL import Image

    h, w = _side(megapixels)
    ramp16 = (np.arange(h * w, dtype=np.uint32) % 65521).astype(np.uint16).reshape(h, w)
    cases = []

    def planes(n: int, dtype) -> np.ndarray:
        return np.stack([ramp16, ramp16[::-1], ramp16[:, ::-1], ramp16][:n], axis=-1).astype(dtype)

    def case(name: str, decoded: int, what: str, write, **kwargs) -> None:
        if only and name not in only:
            return
        path = directory / name
        write(path)
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
        cases.append(
            {"name": name, "path": str(path), "sha256": sha.hexdigest(), "decoded_bytes": decoded, "what": what, "kwargs": kwargs}
        )

    case(
        "rgb16.tif",
        h * w * 3 * 2,
        f"{w}x{h} 16-bit RGB TIFF (tifffile path)",
        lambda p: tifffile.imwrite(p, planes(3, np.uint16), photometric="rgb"),
    )
    case(
        "rgb_float32.tif",
        h * w * 3 * 4,
        f"{w}x{h} float32 RGB TIFF (tifffile path)",
        lambda p: tifffile.imwrite(p, planes(3, np.float32), photometric="rgb"),
    )
    case(
        "gray16.png",
        h * w * 2,
        f"{w}x{h} 16-bit grayscale PNG (Pillow path)",
        lambda p: Image.fromarray(ramp16).save(p, compress_level=1),
    )
    case(
        "rgb8.png",
        h * w * 3,
        f"{w}x{h} 8-bit RGB PNG (Pillow path)",
        lambda p: Image.fromarray(planes(3, np.uint8)).save(p, compress_level=1),
    )
    decoded = h * w * 4 * 4
    case(
        "rgba_float32.tif",
        decoded,
        f"{w}x{h} float32 RGBA TIFF, decoded with max_decoded_bytes = decoded size + 1 % (just under the limit)",
        lambda p: tifffile.imwrite(p, planes(4, np.float32), photometric="rgb", extrasamples=["unassalpha"]),
        max_decoded_bytes=decoded + decoded // 100,
    )
    # The hostile case: 400 samples per pixel, zlib-compressed zeros, within max_pixels.
    hh, ww = 800, 1024
    case(
        "samples400.tif",
        hh * ww * 400,
        f"{ww}x{hh} x 400 samples, 8-bit, zlib (hostile)",
        lambda p: tifffile.imwrite(
            p,
            np.zeros((hh, ww, 400), dtype=np.uint8),
            photometric="minisblack",
            planarconfig="contig",
            compression="zlib",
            rowsperstrip=8,
        ),
    )
    return cases


def _tiny(case_name: str, directory: Path) -> Path:
    """A small image of the same kind as the case, decoded first so that lazy imports land in the baseline."""
    import numpy as np
    import tifffile
    from PIL import Image

    path = directory / f"warmup-{case_name}"
    arr = (np.arange(64 * 64 * 4) % 251).reshape(64, 64, 4)
    if case_name.endswith(".png"):
        Image.fromarray(arr[..., :3].astype(np.uint8) if "rgb" in case_name else arr[..., 0].astype(np.uint16)).save(path)
    elif case_name == "samples400.tif":
        tifffile.imwrite(path, arr[..., :3].astype(np.uint16), photometric="rgb", compression="zlib")
    else:
        tifffile.imwrite(path, arr[..., :3].astype(np.float32), photometric="rgb")
    return path


def child(case: dict, mode: str, code: Path) -> dict:
    """Run in the fresh subprocess: warm up, measure one decode."""
    sys.path.insert(0, str(code))
    import numpy  # noqa: F401
    import PIL.Image  # noqa: F401
    import tifffile  # noqa: F401

    from wormflow import imageio

    params = inspect.signature(imageio.decode_image).parameters
    kwargs = {k: v for k, v in case["kwargs"].items() if k in params}
    path = Path(case["path"])
    if mode == "bytes" and not hasattr(imageio, "read_file_verified"):
        return {"skipped": "this code has no read_file_verified"}
    with tempfile.TemporaryDirectory() as d:
        tiny = _tiny(case["name"], Path(d))
        with contextlib.suppress(imageio.ImageLoadError):  # the 400-sample warm-up may be refused, like the case
            imageio.decode_image(tiny)
        if mode == "bytes":
            sha = hashlib.sha256(tiny.read_bytes()).hexdigest()
            imageio.decode_image(tiny, data=imageio.read_file_verified(tiny.parent, tiny.name, sha, max_bytes=1 << 40))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = {}
    try:
        if mode == "bytes":
            data = imageio.read_file_verified(path.parent, path.name, case["sha256"], max_bytes=1 << 40)
            arr = imageio.decode_image(path, data=data, **kwargs)
        else:
            arr = imageio.decode_image(path, **kwargs)
        result["result"] = f"ok {arr.shape[1]}x{arr.shape[0]}x{arr.shape[2]} {arr.dtype}"
    except imageio.ImageLoadError as exc:
        result["result"] = f"refused: {exc.reason}"
    result["seconds"] = round(time.perf_counter() - start, 3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["peak_delta_bytes"] = (peak - base) * 1024  # ru_maxrss is in KiB on Linux
    result["baseline_rss_bytes"] = base * 1024
    return result


def run_case(case: dict, mode: str, code: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(case), "--mode", mode, "--code", str(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _git_commit(directory: Path) -> str:
    proc = subprocess.run(["git", "-C", str(directory), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "(not a git checkout)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--megapixels", type=float, default=16.0, help="pixels per image, in millions (default 16)")
    ap.add_argument("--mode", choices=("path", "bytes"), default="path", help="decode from the path, or from verified bytes")
    ap.add_argument("--only", nargs="*", help="case names to run (default: all)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument(
        "--code",
        type=Path,
        default=REPO,
        help="directory holding the wormflow package to measure (default: this checkout; e.g. an older commit's "
        "`git archive` to measure before a change)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--build", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child), args.mode, args.code)))
        return
    if args.build:
        print(json.dumps(build(Path(args.build), args.megapixels, args.only)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="decode-memory-") as d:
        t0 = time.perf_counter()
        # Built in a subprocess: a child inherits its parent's peak RSS (ru_maxrss survives fork and exec),
        # so this process must stay small for the children's baselines to be theirs.
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--build",
                d,
                "--megapixels",
                str(args.megapixels),
                *(["--only", *args.only] if args.only else []),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        cases = json.loads(out.strip().splitlines()[-1])
        print(
            f"built {len(cases)} images in {time.perf_counter() - t0:.1f} s; decoding each in a fresh process (--mode {args.mode})"
        )
        for case in cases:
            res = run_case(case, args.mode, args.code.resolve())
            size = os.path.getsize(case["path"])
            row = {"name": case["name"], "what": case["what"], "file_bytes": size, "decoded_bytes": case["decoded_bytes"], **res}
            if "peak_delta_bytes" in res:
                row["peak_over_decoded"] = round(res["peak_delta_bytes"] / case["decoded_bytes"], 2)
            rows.append(row)
    print()
    print(f"{'image':<18} {'file MB':>9} {'decoded MB':>11} {'peak MB':>9} {'peak/decoded':>13} {'s':>6}  result")
    for r in rows:
        if "error" in r or "skipped" in r:
            print(f"{r['name']:<18} {r.get('error') or r.get('skipped')}")
            continue
        print(
            f"{r['name']:<18} {r['file_bytes'] / MIB:>9.1f} {r['decoded_bytes'] / MIB:>11.1f} {r['peak_delta_bytes'] / MIB:>9.1f} "
            f"{r['peak_over_decoded']:>13.2f} {r['seconds']:>6.2f}  {r['result'][:90]}"
        )
    if args.json:
        import numpy
        import PIL
        import tifffile

        meta = {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "code": str(args.code.resolve()),
            "code_commit": _git_commit(args.code),
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "pillow": PIL.__version__,
            "tifffile": tifffile.__version__,
            "cpu": platform.processor() or platform.machine(),
            "machine": platform.machine(),
            "megapixels": args.megapixels,
            "mode": args.mode,
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
