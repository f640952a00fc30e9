"""Decoding images into RGB ``uint8`` arrays, the same way every time.

Every image that enters the workflow goes through :func:`decode_image`.  The
rules, in order:

1. A zero-byte file, a file whose header no reader recognises, a format other
   than PNG / JPEG / TIFF, an image with fewer than ``min_side`` pixels on a
   side, or one with more than ``max_pixels`` pixels (a decompression bomb:
   refused from the header, *before* any pixel data is decoded) raises
   :class:`ImageLoadError` naming the file and the reason.  So does truncated
   or corrupt pixel data.
2. EXIF orientation (or the TIFF ``Orientation`` tag) is applied.
3. Colour modes are converted to RGB:

   * 8-bit grayscale, bilevel, palette, CMYK and YCbCr images use Pillow's
     standard conversion.
   * Alpha channels (RGBA, LA, palette transparency) are dropped, never
     composited, so the colour under a transparent pixel is kept.
   * Images with more than 8 bits per sample (16-bit and 32-bit integer,
     float) are scaled linearly from their *real* range (the minimum and
     maximum finite value over all channels) to 0..255, so a 12-bit camera
     image stored in 16 bits is not crushed to black.  NaN becomes the
     minimum, +/-inf the maximum/minimum; a constant image becomes 0.
   * Grayscale is replicated to three channels.

   Multi-channel 16-bit or float TIFFs (which Pillow cannot represent) are read
   with ``tifffile``; only the first page of a multi-page TIFF is used.
   Pillow reduces 16-bit *colour* PNGs to their high byte; store such data as
   TIFF to keep its full range.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageFile.LOAD_TRUNCATED_IMAGES = False

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "TIFF"})
DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MIN_SIDE = 8
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_PIL_RGB_MODES = frozenset({"1", "L", "P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})


class ImageLoadError(Exception):
    """An image file that cannot be turned into an RGB array.

    ``path`` is the file, ``reason`` a short human-readable cause; the workflow
    writes both into its quarantine table.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def decode_image(
    path: str | os.PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    min_output_side: int | None = None,
) -> np.ndarray:
    """Decode one image file into an ``(H, W, 3)`` ``uint8`` array (see module doc).

    ``min_output_side``: the caller only needs images this large (it resizes
    them down afterwards).  JPEGs are then decoded at the smallest DCT scale
    (1/2, 1/4, 1/8) that keeps both sides at least this large, which is several
    times faster for large photos; other formats are decoded in full.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise ImageLoadError(path, f"cannot stat file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):  # opening a FIFO would block, a device could be endless
        raise ImageLoadError(path, "not a regular file")
    if st.st_size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
            fh.seek(0)
            try:
                return _decode_with_pillow(path, fh, max_pixels, min_side, min_output_side)
            except _PillowCannot as exc:
                if magic in _TIFF_MAGIC:
                    fh.seek(0)
                    return _decode_tiff(path, fh, max_pixels, min_side)
                raise ImageLoadError(path, exc.reason) from None
    except (ImageLoadError, MemoryError):
        raise
    except OSError as exc:
        raise ImageLoadError(path, f"cannot read file: {exc.strerror or exc}") from None
    except Exception as exc:  # a hostile file must be quarantined, never crash the batch
        raise ImageLoadError(path, f"unreadable image: {type(exc).__name__}: {exc}") from None


class _PillowCannot(Exception):
    def __init__(self, reason: str):
        self.reason = reason


def _check_geometry(path: Path, width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise ImageLoadError(
            path,
            f"decompression bomb refused: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}",
        )
    if min(width, height) < min_side:
        raise ImageLoadError(path, f"image too small: {width}x{height} (minimum side {min_side} px)")


def _decode_with_pillow(path: Path, fh, max_pixels: int, min_side: int, min_output_side: int | None = None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(fh)
        except UnidentifiedImageError:
            raise _PillowCannot("not an image: no reader recognises the file's contents") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageLoadError(path, f"decompression bomb refused: {exc}") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise _PillowCannot(f"unreadable image header: {exc}") from None
        with im:
            if im.format not in SUPPORTED_FORMATS:
                raise ImageLoadError(path, f"unsupported image format {im.format!r} (PNG, JPEG and TIFF are read)")
            _check_geometry(path, im.width, im.height, max_pixels, min_side)
            if im.mode not in _HIGH_DEPTH_MODES and im.mode not in _PIL_RGB_MODES:
                raise _PillowCannot(f"unsupported colour mode {im.mode!r}")
            if im.format == "TIFF" and im.mode not in _HIGH_DEPTH_MODES and _tiff_max_bits(im) > 8:
                # Pillow opens 16-bit RGB(A) TIFFs as 8-bit "RGB" (high byte only); tifffile keeps the range.
                raise _PillowCannot(f"{_tiff_max_bits(im)}-bit {im.mode} TIFF")
            if min_output_side and im.format in ("JPEG", "MPO"):
                im.draft(None, (min_output_side, min_output_side))  # DCT-domain downscale, never below the request
            try:
                im.load()
                im = ImageOps.exif_transpose(im)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageLoadError(path, f"decompression bomb refused: {exc}") from None
            except (OSError, SyntaxError, ValueError, EOFError, Image.UnidentifiedImageError) as exc:
                if im.format == "TIFF":
                    raise _PillowCannot(f"corrupt or truncated image data: {exc}") from None
                raise ImageLoadError(path, f"corrupt or truncated image data: {exc}") from None
            return _to_rgb_or_fail(path, _pil_to_rgb, im)


def _tiff_max_bits(im: Image.Image) -> int:
    bits = im.tag_v2.get(258, (8,))
    if isinstance(bits, int):
        bits = (bits,)
    return max((int(b) for b in bits), default=8)


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in _HIGH_DEPTH_MODES:
        return gray_to_rgb(scale_to_uint8(np.asarray(im)))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    # np.array (not asarray): Pillow's buffer is read-only; callers get a writeable array on every path.
    return np.array(im.convert("RGB"), dtype=np.uint8, order="C")


def _decode_tiff(path: Path, fh, max_pixels: int, min_side: int) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(fh) as tif:
            page = tif.pages[0]
            shape = page.shape
            if len(shape) < 2:
                raise ImageLoadError(path, f"unsupported TIFF layout with shape {shape}")
            height, width = _tiff_hw(page)
            _check_geometry(path, width, height, max_pixels, min_side)
            arr = page.asarray()
            orientation = page.tags.get(274)
            orientation = int(orientation.value) if orientation is not None else 1
    except ImageLoadError:
        raise
    except Exception as exc:  # tifffile raises many types on corrupt files
        raise ImageLoadError(path, f"corrupt or unsupported TIFF: {exc}") from None
    arr = _channels_last(np.asarray(arr), page)
    if arr.dtype != np.uint8:
        arr = _to_rgb_or_fail(path, scale_to_uint8, arr)
    return np.ascontiguousarray(apply_orientation(gray_to_rgb(arr), orientation))


def _to_rgb_or_fail(path: Path, convert, data):
    try:
        return convert(data)
    except ValueError as exc:  # e.g. a float image without a single finite pixel
        raise ImageLoadError(path, f"cannot convert pixel values: {exc}") from None


def _tiff_hw(page) -> tuple[int, int]:
    return int(page.imagelength), int(page.imagewidth)


def _channels_last(arr: np.ndarray, page) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[0] == page.samplesperpixel and arr.shape[-1] != page.samplesperpixel:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim != 3:
        raise ValueError(f"unsupported TIFF array shape {arr.shape}")
    channels = arr.shape[-1]
    if channels in (1, 2):  # gray (+ alpha)
        return arr[..., 0]
    return arr[..., :3]  # RGB (+ alpha / extra samples)


def scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale an array linearly from its finite min..max to 0..255 (``uint8``)."""
    data = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        raise ValueError("no finite pixel values")
    lo = float(data[finite].min())
    hi = float(data[finite].max())
    data = np.where(np.isnan(data), lo, data)
    data = np.clip(data, lo, hi)
    if hi <= lo:
        return np.zeros(data.shape, dtype=np.uint8)
    return np.floor((data - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)


def gray_to_rgb(arr: np.ndarray) -> np.ndarray:
    """Replicate a 2-D array into three channels; pass 3-channel arrays through."""
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    return arr


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF/TIFF orientation value (1..8) to an ``(H, W, C)`` array."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1, :],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return ops.get(orientation, ops[1])(arr)


def resize_rgb(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` ``uint8`` image to ``(size, size, 3)``.

    Non-square images are scaled to the square (as the report's ``Resize``
    does); Pillow's bilinear filter antialiases when shrinking.
    """
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    im = Image.fromarray(arr, mode=None)
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
