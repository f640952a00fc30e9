"""Reading one channel file of a field: a greyscale image at its native bit depth.

Composing a field needs the raw values (a 16-bit channel is stretched between percentiles of the
well's pixels), not the RGB ``uint8`` that :func:`wormflow.imageio.decode_image` makes of a single
image.  The same guards apply: the bytes are the ones :func:`wormflow.imageio.read_file_verified`
checked against the manifest, the geometry and decoded size are checked from the header before
any pixel is decoded, multi-frame files are refused, and a float channel with too many NaN/inf
values is refused.  A channel must be one greyscale plane.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..imageio import (
    _TIFF_MAGIC,
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_NONFINITE_FRACTION,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    ImageLoadError,
    _check_decoded_size,
    _check_frames,
    _check_geometry,
    _Limits,
    _magic,
    _open_image,
    _tiff_frames,
    apply_orientation,
)

GREY_MODES = {"L": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}


def decode_channel(
    path: str | os.PathLike,
    *,
    data: bytes | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    max_nonfinite_fraction: float = DEFAULT_MAX_NONFINITE_FRACTION,
    **_ignored,
) -> np.ndarray:
    """One greyscale channel ``(H, W)`` at its own dtype (uint8/uint16/int32/float32); ImageLoadError otherwise."""
    limits = _Limits(max_pixels, min_side, max_decoded_bytes, None, max_nonfinite_fraction)
    path = Path(path)
    try:
        with _open_image(path, data) as fh:
            magic = _magic(path, fh)
            arr = _tiff_channel(path, fh, limits) if magic in _TIFF_MAGIC else _pil_channel(path, fh, limits)
    except (ImageLoadError, MemoryError):
        raise
    except Exception as exc:  # a hostile file must be quarantined, never crash the batch
        raise ImageLoadError(path, f"unreadable channel image: {type(exc).__name__}: {exc}") from None
    if arr.dtype.kind == "f":
        bad = float(np.mean(~np.isfinite(arr))) if arr.size else 0.0
        if bad > max_nonfinite_fraction:
            raise ImageLoadError(path, f"{100 * bad:.1f}% of the pixels are NaN or infinite")
        arr = np.nan_to_num(arr, nan=float(np.nanmin(arr)) if np.isfinite(arr).any() else 0.0)
    return arr


def _tiff_channel(path: Path, fh, limits: _Limits) -> np.ndarray:
    import tifffile

    _check_frames(path, _tiff_frames(fh))
    fh.seek(0)
    with tifffile.TiffFile(fh) as tif:
        page = tif.pages[0]
        height, width = int(page.imagelength), int(page.imagewidth)
        _check_geometry(path, width, height, limits)
        if int(page.samplesperpixel) != 1:
            raise ImageLoadError(path, f"a channel must be one greyscale plane, not {page.samplesperpixel} samples per pixel")
        _check_decoded_size(path, width, height, 1, page.dtype.itemsize if page.dtype is not None else 2, limits)
        arr = np.asarray(page.asarray())
        orientation = page.tags.get(274)
    if arr.ndim != 2:
        raise ImageLoadError(path, f"a channel must be one 2-D plane, not an array of shape {arr.shape}")
    return np.ascontiguousarray(apply_orientation(arr, int(orientation.value) if orientation is not None else 1))


def _pil_channel(path: Path, fh, limits: _Limits) -> np.ndarray:
    try:
        im = Image.open(fh)
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image: no reader recognises the file's contents") from None
    with im:
        _check_frames(path, getattr(im, "n_frames", 1))
        _check_geometry(path, im.width, im.height, limits)
        if im.mode not in GREY_MODES:
            raise ImageLoadError(path, f"a channel must be greyscale, not {im.mode}")
        _check_decoded_size(path, im.width, im.height, 1, GREY_MODES[im.mode], limits)
        im.load()
        return np.array(im)
