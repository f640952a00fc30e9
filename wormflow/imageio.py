"""Decoding images into RGB ``uint8`` arrays, the same way every time.

Every image that enters the workflow goes through :func:`decode_image`.  The
rules, in order:

1. A zero-byte file, a file whose header no reader recognises, a format other
   than PNG / JPEG / TIFF, an image with fewer than ``min_side`` pixels on a
   side, or one with more than ``max_pixels`` pixels (a decompression bomb)
   raises :class:`ImageLoadError` naming the file and the reason.  So do more
   than four samples per pixel and pixel data that would decode to more than
   ``max_decoded_bytes`` (width x height x samples per pixel x bytes per
   sample: a small file can claim hundreds of samples per pixel, or float
   samples, within ``max_pixels``).  All of these are refused from the header,
   *before* any pixel data is decoded.  So is truncated or corrupt pixel data
   (when it is met).
2. Explicit policies, never a silent choice (each refusal is a quarantine
   reason with the numbers):

   * **Multi-frame files** - an animated PNG (APNG), a multi-page TIFF, an MPO
     with more than one real image - are refused: "multi-frame image (N
     frames/pages): not scored; save one image per file".  Scoring only the
     first frame would silently ignore the rest.  Thumbnails are not frames: a
     TIFF's sub-IFDs, TIFF pages marked as reduced-resolution copies
     (``NewSubfileType``) or masks, and an MPO's "Large Thumbnail" previews
     are ignored, and the one real image is scored.
   * **Extreme aspect ratios**: scoring squashes every image to a square, so a
     longer side more than ``max_aspect`` (default 4) times the shorter one
     is refused from the header.
   * **Mostly non-finite data**: a float image with more than
     ``max_nonfinite_fraction`` (default 1 %) NaN/inf values is refused (one
     finite pixel among NaNs would otherwise become an all-black image); below
     that share NaN/inf are handled as described in 4.
3. EXIF orientation (or the TIFF ``Orientation`` tag) is applied.
4. Colour modes are converted to RGB:

   * 8-bit grayscale, bilevel, palette, CMYK and YCbCr images use Pillow's
     standard conversion.
   * Alpha channels (RGBA, LA, palette transparency) are dropped, never
     composited, so the colour under a transparent pixel is kept.
   * Images with more than 8 bits per sample (16-bit and 32-bit integer,
     float) are scaled linearly from their *real* range (the minimum and
     maximum finite value over all channels) to 0..255, so a 12-bit camera
     image stored in 16 bits is not crushed to black.  NaN becomes the
     minimum, +/-inf the maximum/minimum; a constant image becomes 0.
     Such TIFFs must be gray or RGB (another colour model is refused);
     ``MINISWHITE`` (0 is white) is inverted at every depth, as Pillow does
     for 8-bit files.
   * Grayscale is replicated to three channels.

   Multi-channel 16-bit or float TIFFs (which Pillow cannot represent) are read
   with ``tifffile``.
   Pillow reduces 16-bit *colour* PNGs to their high byte; store such data as
   TIFF to keep its full range.

Memory: conversions work on blocks of rows (:data:`CONVERT_BLOCK_ELEMENTS`),
never on a full-size float64 copy, so decoding one image peaks at about its
decoded size plus the ``H x W x 3`` output (``benchmarks/decode_memory.py``).

(Longer than the package's ~400-line guideline on purpose: every limit that keeps hostile input out —
bytes, pixels, samples, frames, aspect, non-finite values — is checked inside the reader it guards, before
that reader allocates; split across modules, a check and the allocation it protects would drift apart.)
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .inventory import NotRegularFileError, describe_open_error, open_beneath

ImageFile.LOAD_TRUNCATED_IMAGES = False

SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "TIFF"})
DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MIN_SIDE = 8
DEFAULT_MAX_FILE_BYTES = 1 << 30  # 1 GiB: larger files are not read into memory (read_file_verified)
DEFAULT_MAX_DECODED_BYTES = 1 << 30  # 1 GiB: width x height x samples per pixel x bytes per sample, from the header
DEFAULT_MAX_ASPECT = 4.0  # longer side / shorter side; scoring squashes every image to a square
DEFAULT_MAX_NONFINITE_FRACTION = 0.01  # share of NaN/inf values a float image may have
MAX_SAMPLES_PER_PIXEL = 4  # gray, gray + alpha, RGB, RGB + alpha/extra: everything the channel logic uses
CONVERT_BLOCK_ELEMENTS = 1 << 18  # conversions work on blocks of rows this large: temporaries stay small
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_PIL_RGB_MODES = frozenset({"1", "L", "P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})
_PIL_BYTES_PER_SAMPLE = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4}


class ImageLoadError(Exception):
    """An image file that cannot be turned into an RGB array.

    ``path`` is the file, ``reason`` a short human-readable cause; the workflow
    writes both into its quarantine table.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_file_verified(
    root: str | os.PathLike,
    relpath: str,
    expected_sha256: str,
    max_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> bytes:
    """Read ``root/relpath`` safely and return its bytes, if they are still the bytes the manifest listed.

    A file can change between the manifest (listing and SHA-256) and decoding,
    hours later in a cluster queue, or still be written by the microscope.  The
    path is opened with :func:`wormflow.inventory.open_beneath`: each directory
    relative to its parent's fd with ``O_NOFOLLOW``, the file with
    ``O_NOFOLLOW | O_NONBLOCK`` and checked with ``fstat``, so a symbolic link
    swapped in anywhere is refused (nothing outside ``root`` is read), a FIFO
    cannot hang the job, and paths longer than ``PATH_MAX`` work.  A file larger
    than ``max_bytes`` is refused before reading.  The bytes read are hashed;
    a different SHA-256 raises ``ImageLoadError("changed after listing: ...")``.
    Decode the result with ``decode_image(root / relpath, data=...)``, so that
    exactly the verified bytes are decoded.
    """
    path = Path(root) / relpath
    if not expected_sha256:
        raise ValueError(f"{path}: no expected SHA-256 to verify against")
    try:
        fd = open_beneath(root, relpath)
    except ValueError as exc:
        raise ImageLoadError(path, f"unsafe path in the manifest: {exc}") from None
    except FileNotFoundError:
        raise ImageLoadError(path, "changed after listing: no longer exists (deleted or renamed)") from None
    except NotRegularFileError as exc:
        raise ImageLoadError(path, f"changed after listing: {exc.strerror}") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ImageLoadError(path, f"changed after listing: {describe_open_error(exc)}") from None
        raise ImageLoadError(path, f"cannot open file: {describe_open_error(exc)}") from None
    try:
        with open(fd, "rb") as fh:  # closes fd
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise ImageLoadError(path, f"file too large: {size} bytes, above the limit of {max_bytes} bytes (max_file_bytes)")
            data = fh.read(size + 1)  # one allocation; a byte more than listed shows a file still growing
            if len(data) > max_bytes:
                raise ImageLoadError(path, f"file too large: grew beyond the limit of {max_bytes} bytes while being read")
    except OSError as exc:
        raise ImageLoadError(path, f"cannot read file: {exc.strerror or exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ImageLoadError(
            path,
            f"changed after listing: its SHA-256 is {actual[:12]}, the manifest recorded {expected_sha256[:12]} "
            "(modified, replaced or still being written)",
        )
    return data


def decode_image(
    path: str | os.PathLike,
    *,
    data: bytes | bytearray | memoryview | io.BufferedIOBase | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    min_output_side: int | None = None,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    max_aspect: float | None = DEFAULT_MAX_ASPECT,
    max_nonfinite_fraction: float = DEFAULT_MAX_NONFINITE_FRACTION,
) -> np.ndarray:
    """Decode one image file into an ``(H, W, 3)`` ``uint8`` array (see module doc).

    ``data``: the file's content (bytes, or a seekable binary file object) to
    decode instead of opening ``path``, which then only names the image in
    errors; the workflow passes the bytes :func:`read_file_verified` checked.
    Without it, ``path`` is opened once (non-blocking; a FIFO, directory or
    device is refused via ``fstat`` of that open file).

    ``min_output_side``: the caller only needs images this large (it resizes
    them down afterwards).  JPEGs are then decoded at the smallest DCT scale
    (1/2, 1/4, 1/8) that keeps both sides at least this large, which is several
    times faster for large photos; other formats are decoded in full.

    ``max_decoded_bytes``: refuse, from the header, an image whose pixel data
    decodes to more bytes (width x height x samples per pixel x bytes per
    sample).  The conversion to RGB works in blocks, so decoding peaks at about
    the decoded size plus the ``H x W x 3`` output, never at a float64 copy.

    ``max_aspect``: refuse images whose longer side is more than this many
    times the shorter one (``None``: no limit).  ``max_nonfinite_fraction``:
    refuse float images with a larger share of NaN/inf values.
    """
    limits = _Limits(max_pixels, min_side, max_decoded_bytes, max_aspect, max_nonfinite_fraction)
    path = Path(path)
    try:
        with _open_image(path, data) as fh:
            magic = _magic(path, fh)
            if magic in _TIFF_MAGIC:
                _check_frames(path, _tiff_frames(fh))
                fh.seek(0)
            try:
                return _decode_with_pillow(path, fh, limits, min_output_side)
            except _PillowCannot as exc:
                if magic in _TIFF_MAGIC:
                    fh.seek(0)
                    return _decode_tiff(path, fh, limits)
                raise ImageLoadError(path, exc.reason) from None
    except (ImageLoadError, MemoryError):
        raise
    except OSError as exc:
        raise ImageLoadError(path, f"cannot read file: {exc.strerror or exc}") from None
    except Exception as exc:  # a hostile file must be quarantined, never crash the batch
        raise ImageLoadError(path, f"unreadable image: {type(exc).__name__}: {exc}") from None


def _magic(path: Path, fh) -> bytes:
    """The first four bytes (the format's signature), the file rewound; ImageLoadError for an empty file."""
    magic = fh.read(4)
    if not magic:
        raise ImageLoadError(path, "empty file (0 bytes)")
    fh.seek(0)
    return magic


def _open_image(path: Path, data):
    """A binary file object for ``data`` (bytes or a file object, left open) or for ``path`` (opened once here)."""
    if data is not None:
        if hasattr(data, "read"):
            return _Unclosed(data)
        return io.BytesIO(data)  # bytes are shared, not copied
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageLoadError(path, f"cannot open file: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise ImageLoadError(path, f"cannot stat file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO could block, a device be endless
        os.close(fd)
        raise ImageLoadError(path, "not a regular file")
    return open(path, "rb", opener=lambda *_: fd)  # the checked fd, under the path's name (tifffile uses it)


class _Unclosed(io.BufferedIOBase):
    """A caller's file object, used in a ``with`` block without being closed."""

    def __init__(self, fh):
        self._fh = fh

    def read(self, size=-1):
        return self._fh.read(size)

    def readinto(self, b):
        return self._fh.readinto(b)

    def seek(self, offset, whence=0):
        return self._fh.seek(offset, whence)

    def tell(self):
        return self._fh.tell()

    def seekable(self):
        return True

    def readable(self):
        return True

    def close(self):
        pass


class _PillowCannot(Exception):
    def __init__(self, reason: str):
        self.reason = reason


class _NonFinitePixels(ValueError):
    """Too many NaN/inf values to scale an image meaningfully (the message is the quarantine reason)."""


@dataclass(frozen=True)
class _Limits:
    max_pixels: int
    min_side: int
    max_decoded_bytes: int
    max_aspect: float | None = DEFAULT_MAX_ASPECT
    max_nonfinite_fraction: float = DEFAULT_MAX_NONFINITE_FRACTION


def _check_geometry(path: Path, width: int, height: int, limits: _Limits) -> None:
    if width * height > limits.max_pixels:
        raise ImageLoadError(
            path,
            f"decompression bomb refused: {width}x{height} = {width * height} pixels exceeds the limit of {limits.max_pixels}",
        )
    if min(width, height) < limits.min_side:
        raise ImageLoadError(path, f"image too small: {width}x{height} (minimum side {limits.min_side} px)")
    long, short = max(width, height), min(width, height)
    if limits.max_aspect is not None and long > limits.max_aspect * short:
        raise ImageLoadError(
            path,
            f"extreme aspect ratio: {width}x{height} is {long / short:.1f}:1, above the limit of {limits.max_aspect:g}:1 "
            "(max_aspect); scoring would squash it to a square",
        )


def _check_frames(path: Path, frames: int) -> None:
    if frames > 1:
        raise ImageLoadError(path, f"multi-frame image ({frames} frames/pages): not scored; save one image per file")


MAX_TIFF_PAGES_EXAMINED = 1000


def _tiff_frames(fh) -> int:
    """Images in a TIFF's main page chain, not counting reduced-resolution copies (thumbnails) and masks.

    Sub-IFDs (pyramid levels, thumbnails) are not in the main chain at all.  Only tags are read.  A file
    tifffile cannot parse counts as one image here: decoding then reports what is wrong with it.
    """
    import tifffile

    try:
        with tifffile.TiffFile(fh) as tif:
            n_pages = len(tif.pages)
            if n_pages < 2:
                return 1
            full = 0
            for index in range(min(n_pages, MAX_TIFF_PAGES_EXAMINED)):
                page = tif.pages[index]
                if not int(getattr(page, "subfiletype", 0) or 0) & 0b101:  # REDUCEDIMAGE | MASK
                    full += 1
            return full + max(0, n_pages - MAX_TIFF_PAGES_EXAMINED)
    except Exception:  # tifffile raises many types on corrupt files
        return 1


def _pil_frames(im: Image.Image) -> int:
    """Images in a (non-TIFF) file Pillow opened: APNG frames; MPO images other than previews ("Large Thumbnail")."""
    if im.format == "MPO":
        entries = (getattr(im, "mpinfo", None) or {}).get(0xB002) or []
        kinds = [str(e.get("Attribute", {}).get("MPType", "")) for e in entries if isinstance(e, dict)]
        if kinds:
            return max(1, sum(1 for kind in kinds if "Thumbnail" not in kind))
    if im.format == "TIFF":
        return 1  # counted before Pillow opens it (_tiff_frames), without thumbnail pages
    return int(getattr(im, "n_frames", 1) or 1)


def _check_decoded_size(path: Path, width: int, height: int, samples: int, bytes_per_sample: int, limits: _Limits) -> None:
    """Refuse, before any pixel data is decoded, absurd sample counts and images that decode to too many bytes."""
    if samples > MAX_SAMPLES_PER_PIXEL:
        raise ImageLoadError(
            path,
            f"{samples} samples per pixel: at most {MAX_SAMPLES_PER_PIXEL} (gray, gray + alpha, RGB, RGB + alpha) are read",
        )
    decoded = width * height * samples * bytes_per_sample
    if decoded > limits.max_decoded_bytes:
        raise ImageLoadError(
            path,
            f"image too large to decode: {width}x{height} pixels x {samples} samples x {bytes_per_sample} bytes "
            f"decodes to {decoded} bytes and exceeds the limit of {limits.max_decoded_bytes} bytes (max_decoded_bytes)",
        )


def _decode_with_pillow(path: Path, fh, limits: _Limits, min_output_side: int | None = None) -> np.ndarray:
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
            _check_geometry(path, im.width, im.height, limits)
            _check_frames(path, _pil_frames(im))
            if im.mode not in _HIGH_DEPTH_MODES and im.mode not in _PIL_RGB_MODES:
                raise _PillowCannot(f"unsupported colour mode {im.mode!r}")
            if im.format == "TIFF" and im.mode not in _HIGH_DEPTH_MODES and _tiff_max_bits(im) > 8:
                # Pillow opens 16-bit RGB(A) TIFFs as 8-bit "RGB" (high byte only); tifffile keeps the range.
                raise _PillowCannot(f"{_tiff_max_bits(im)}-bit {im.mode} TIFF")
            _check_decoded_size(path, im.width, im.height, *_pil_samples_and_bytes(im), limits)
            if min_output_side and im.format in ("JPEG", "MPO"):
                im.draft(None, (min_output_side, min_output_side))  # DCT-domain downscale, never below the request
            try:
                im.load()
                orientation = _exif_orientation(im)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ImageLoadError(path, f"decompression bomb refused: {exc}") from None
            except (OSError, SyntaxError, ValueError, EOFError, Image.UnidentifiedImageError) as exc:
                if im.format == "TIFF":
                    raise _PillowCannot(f"corrupt or truncated image data: {exc}") from None
                raise ImageLoadError(path, f"corrupt or truncated image data: {exc}") from None
            rgb = _to_rgb_or_fail(path, functools.partial(_pil_to_rgb, im, limits.max_nonfinite_fraction))
            if im.format == "TIFF" and im.mode in _HIGH_DEPTH_MODES and im.tag_v2.get(262) == 0:
                np.subtract(255, rgb, out=rgb)  # MINISWHITE: Pillow inverts only 8-bit data itself
    # Pillow's copy of the pixels is gone; a rotation copies only the uint8 output.
    return np.ascontiguousarray(apply_orientation(rgb, orientation))


def _tiff_max_bits(im: Image.Image) -> int:
    bits = im.tag_v2.get(258, (8,))
    if isinstance(bits, int):
        bits = (bits,)
    return max((int(b) for b in bits), default=8)


def _pil_samples_and_bytes(im: Image.Image) -> tuple[int, int]:
    """Samples per pixel and bytes per sample of an opened (not decoded) image, from its header."""
    if im.format == "TIFF":
        samples = im.tag_v2.get(277, 1)
        return int(samples if isinstance(samples, int) else samples[0]), max(1, -(-_tiff_max_bits(im) // 8))
    return len(im.getbands()), _PIL_BYTES_PER_SAMPLE.get(im.mode, 1)


def _exif_orientation(im: Image.Image) -> int:
    """The EXIF (or TIFF) orientation, read as :func:`PIL.ImageOps.exif_transpose` reads it (1: none)."""
    value = im.getexif().get(0x0112, 1)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def _row_blocks(height: int, row_elements: int):
    """Slices of at most :data:`CONVERT_BLOCK_ELEMENTS` elements (at least one row) covering ``height`` rows."""
    rows = max(1, CONVERT_BLOCK_ELEMENTS // max(1, row_elements))
    for start in range(0, height, rows):
        yield slice(start, min(start + rows, height))


def _pil_bands(im: Image.Image):
    """Yield ``(rows, band)``: horizontal bands of a decoded Pillow image, cropped (copied) one at a time."""
    for rows in _row_blocks(im.height, im.width * 4):
        yield rows, im.crop((0, rows.start, im.width, rows.stop))


def _pil_to_rgb(im: Image.Image, max_nonfinite_fraction: float = 1.0) -> np.ndarray:
    """A decoded Pillow image as a new ``(H, W, 3)`` ``uint8`` array, converted band by band (no full-size temporary)."""
    out = np.empty((im.height, im.width, 3), dtype=np.uint8)
    if im.mode in _HIGH_DEPTH_MODES:
        scaler = _Scaler(max_nonfinite_fraction)
        for _, band in _pil_bands(im):
            scaler.update(np.asarray(band))
        scaler.finish()
        for rows, band in _pil_bands(im):
            scaler.convert(np.asarray(band), out[rows, :, 0])
        out[..., 1] = out[..., 0]
        out[..., 2] = out[..., 0]
        return out
    via = "RGBA" if im.mode == "P" and "transparency" in im.info else None
    for rows, band in _pil_bands(im):
        if via:
            band = band.convert(via)
        if band.mode != "RGB":
            band = band.convert("RGB")
        out[rows] = np.frombuffer(band.tobytes(), dtype=np.uint8).reshape(rows.stop - rows.start, im.width, 3)
    return out


def _decode_tiff(path: Path, fh, limits: _Limits) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(fh) as tif:
            page = tif.pages[0]
            shape = page.shape
            if len(shape) < 2:
                raise ImageLoadError(path, f"unsupported TIFF layout with shape {shape}")
            height, width = _tiff_hw(page)
            _check_geometry(path, width, height, limits)
            depth = int(getattr(page, "imagedepth", 1) or 1)
            if depth > 1:
                raise ImageLoadError(path, f"3-D TIFF volume ({depth} planes deep): not scored; save one 2-D image per file")
            samples = int(page.samplesperpixel)
            bits = page.bitspersample if isinstance(page.bitspersample, int) else max(page.bitspersample)
            bytes_per_sample = page.dtype.itemsize if page.dtype is not None else max(1, -(-int(bits) // 8))
            _check_decoded_size(path, width, height, samples, bytes_per_sample, limits)
            photometric = _tiff_photometric(path, page, bits)
            arr = page.asarray()
            orientation = page.tags.get(274)
            orientation = int(orientation.value) if orientation is not None else 1
    except ImageLoadError:
        raise
    except Exception as exc:  # tifffile raises many types on corrupt files
        raise ImageLoadError(path, f"corrupt or unsupported TIFF: {exc}") from None
    arr = _channels_last(np.asarray(arr), page)
    rgb = _to_rgb_or_fail(path, functools.partial(_array_to_rgb, arr, limits.max_nonfinite_fraction))
    del arr  # the decoded samples are no longer needed; a rotation copies only the uint8 output
    if photometric == "MINISWHITE":  # 0 is white: invert, as Pillow does for 8-bit files
        np.subtract(255, rgb, out=rgb)
    return np.ascontiguousarray(apply_orientation(rgb, orientation))


def _tiff_photometric(path: Path, page, bits) -> str:
    """The page's colour model, if the tifffile path can turn it into RGB (Pillow reads the others at 8 bits)."""
    photometric = getattr(page.photometric, "name", str(page.photometric))
    if photometric not in ("MINISBLACK", "MINISWHITE", "RGB"):
        raise ImageLoadError(
            path, f"unsupported TIFF colour model {photometric} with {bits}-bit samples (gray or RGB are read at this depth)"
        )
    return photometric


def _to_rgb_or_fail(path: Path, convert):
    try:
        return convert()
    except _NonFinitePixels as exc:
        raise ImageLoadError(path, str(exc)) from None
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


def _array_to_rgb(arr: np.ndarray, max_nonfinite_fraction: float = 1.0) -> np.ndarray:
    """An ``(H, W)`` or ``(H, W, 3)`` array (views welcome) as a new ``(H, W, 3)`` ``uint8`` array, block by block."""
    out = np.empty((arr.shape[0], arr.shape[1], 3), dtype=np.uint8)
    target = out[..., 0] if arr.ndim == 2 else out
    if arr.dtype == np.uint8:
        target[...] = arr
    else:
        scaler = _Scaler(max_nonfinite_fraction)
        blocks = list(_row_blocks(arr.shape[0], arr[:1].size))
        for rows in blocks:
            scaler.update(arr[rows])
        scaler.finish()
        for rows in blocks:
            scaler.convert(arr[rows], target[rows])
    if arr.ndim == 2:
        out[..., 1] = out[..., 0]
        out[..., 2] = out[..., 0]
    return out


class _Scaler:
    """Linear scaling from the finite min..max of all blocks to 0..255, in two passes over blocks.

    ``update`` every block (finds the range), ``finish``, then ``convert`` every block.  Temporaries
    are float64 copies of one block, so the results are exactly those of scaling the whole array in
    float64 while memory stays at the block size.
    """

    def __init__(self, max_nonfinite_fraction: float = 1.0):
        self.max_nonfinite_fraction = max_nonfinite_fraction
        self.lo: float | None = None
        self.hi: float | None = None
        self.n_values = 0
        self.n_nonfinite = 0

    def update(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        if block.dtype.kind not in "biuf":
            raise ValueError(f"unsupported pixel data type {block.dtype}")
        self.n_values += block.size
        if block.size == 0:
            return
        values = block
        if block.dtype.kind == "f":
            finite = np.isfinite(block)
            n_finite = int(np.count_nonzero(finite))
            self.n_nonfinite += block.size - n_finite
            if n_finite == 0:
                return
            if n_finite < block.size:
                values = block[finite]
        lo, hi = float(values.min()), float(values.max())
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)

    def finish(self) -> None:
        if self.lo is None:
            raise ValueError("no finite pixel values")
        if self.n_nonfinite > self.max_nonfinite_fraction * self.n_values:
            share = 100.0 * self.n_nonfinite / self.n_values
            raise _NonFinitePixels(
                f"too many non-finite pixel values: {self.n_nonfinite} of {self.n_values} ({share:.1f} %) are NaN or "
                f"infinite, above the limit of {100.0 * self.max_nonfinite_fraction:g} % (max_nonfinite_fraction)"
            )

    def convert(self, block: np.ndarray, out: np.ndarray) -> None:
        lo, hi = self.lo, self.hi
        if hi <= lo:
            out[...] = 0
            return
        data = np.array(block, dtype=np.float64)  # a copy of one block: the caller's array is never modified
        if block.dtype.kind == "f":
            data[np.isnan(data)] = lo
            np.clip(data, lo, hi, out=data)
        data -= lo
        data *= 255.0 / (hi - lo)
        data += 0.5
        np.floor(data, out=data)
        out[...] = data


def scale_to_uint8(arr: np.ndarray, *, max_nonfinite_fraction: float = 1.0) -> np.ndarray:
    """Scale an array linearly from its finite min..max to 0..255 (``uint8``).

    NaN becomes the minimum, +/-inf the maximum/minimum, a constant array 0; no finite value at all, or a
    larger share of NaN/inf values than ``max_nonfinite_fraction``, is a ``ValueError``.  Works block by
    block: memory is the output plus one block's float64 copy; ``arr`` is not modified.
    """
    src = np.asarray(arr)
    if src.ndim == 0:
        return scale_to_uint8(src.reshape(1), max_nonfinite_fraction=max_nonfinite_fraction).reshape(())
    out = np.empty(src.shape, dtype=np.uint8)
    scaler = _Scaler(max_nonfinite_fraction)
    blocks = list(_row_blocks(src.shape[0], src[:1].size))
    for rows in blocks:
        scaler.update(src[rows])
    scaler.finish()
    for rows in blocks:
        scaler.convert(src[rows], out[rows])
    return out


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
