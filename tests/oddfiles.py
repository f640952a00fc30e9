"""Odd-but-valid and bad image files, with what decoding each must give.

``make_odd_and_bad_files(directory)`` writes a small, deterministic collection
(well under a second) and returns::

    {"valid": {name: ValidFile, ...}, "bad": {name: reason_substring, ...}}

where ``name`` is the file name inside ``directory``.  A ``ValidFile`` holds
the expected ``(H, W, 3)`` ``uint8`` array and, for lossy JPEGs, a tolerance;
``ValidFile.assert_matches(actual)`` checks a decoded array against it.  Each
bad file must raise ``ImageLoadError`` whose ``reason`` contains the substring.

Expected arrays are built independently of ``wormflow.imageio``: the high-depth
images use values ``lo + step * k`` with ``k`` covering 0..255, so scaling them
by their real range must give exactly ``k``.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

EXIF_ORIENTATION = 0x0112

NAME_SPACE = "with space.png"
NAME_UNICODE = "wörm 🪱.png"
NAME_QUOTES = 'it\'s "q".png'
NAME_HTML = "x<img src=x onerror=alert(1)>.png"


@dataclass(frozen=True)
class ValidFile:
    """What decoding a valid file must give: ``expected`` exactly, or within a tolerance for lossy JPEG."""

    expected: np.ndarray
    max_mean_abs_diff: float = 0.0
    max_abs_diff: int = 0

    def assert_matches(self, actual: np.ndarray) -> None:
        assert isinstance(actual, np.ndarray), type(actual)
        assert actual.dtype == np.uint8, actual.dtype
        assert actual.shape == self.expected.shape, (actual.shape, self.expected.shape)
        diff = np.abs(actual.astype(np.int16) - self.expected.astype(np.int16))
        assert diff.mean() <= self.max_mean_abs_diff, f"mean |diff| {diff.mean():.3f} > {self.max_mean_abs_diff}"
        assert diff.max() <= self.max_abs_diff, f"max |diff| {diff.max()} > {self.max_abs_diff}"


def ramp_k(height: int, width: int) -> np.ndarray:
    """``(H, W)`` integers cycling through 0..255 (both ends present when ``H * W >= 256``)."""
    return (np.arange(height * width) % 256).reshape(height, width)


def blocky_rgb(height: int, width: int, seed: int, block: int = 8) -> np.ndarray:
    """Solid-colour ``block`` x ``block`` tiles: survives JPEG (4:4:4, high quality) almost unchanged."""
    rng = np.random.default_rng(seed)
    tiles = rng.integers(30, 226, size=(-(-height // block), -(-width // block), 3), dtype=np.uint8)
    return np.repeat(np.repeat(tiles, block, axis=0), block, axis=1)[:height, :width]


def noisy_rgb(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def rgb3(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png_bytes(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG (valid CRCs) whose IHDR claims ``width`` x ``height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def save_jpeg(im: Image.Image, path: Path, **kwargs) -> None:
    im.save(path, format="JPEG", quality=95, subsampling=0, **kwargs)


def jpeg_with_orientation(src: np.ndarray, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    save_jpeg(Image.fromarray(src), path, exif=exif.tobytes())


def _save_png(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(arr).save(path, format="PNG")


def _valid_files(d: Path) -> dict[str, ValidFile]:
    valid: dict[str, ValidFile] = {}

    def png(name: str, arr: np.ndarray) -> None:
        _save_png(arr, d / name)
        valid[name] = ValidFile(arr.copy())

    png("rgb8.png", noisy_rgb(24, 32, seed=1))

    gray = np.random.default_rng(2).integers(0, 256, size=(20, 28), dtype=np.uint8)
    _save_png(gray, d / "gray8.png")
    valid["gray8.png"] = ValidFile(rgb3(gray))

    k = ramp_k(16, 32)
    Image.fromarray((300 + 100 * k).astype(np.uint16)).save(d / "gray16.png")  # 300..25800 → 0..255
    valid["gray16.png"] = ValidFile(rgb3(k))

    k = ramp_k(24, 16)[::-1]
    tifffile.imwrite(d / "gray16_partial_range.tif", (1000 + 16 * k).astype(np.uint16))  # 1000..5080 of 0..65535
    valid["gray16_partial_range.tif"] = ValidFile(rgb3(k))

    k = np.stack([ramp_k(16, 24), ramp_k(16, 24)[:, ::-1], ramp_k(16, 24)[::-1]], axis=-1)
    tifffile.imwrite(d / "rgb16.tif", (2000 + 8 * k).astype(np.uint16), photometric="rgb")  # 2000..4040
    valid["rgb16.tif"] = ValidFile(k.astype(np.uint8))

    k = ramp_k(16, 32)
    data = (-0.5 + 2.0 * k / 255.0).astype(np.float32)  # -0.5..1.5
    data[5, 7] = np.nan  # NaN becomes the minimum
    expected = k.copy()
    expected[5, 7] = 0
    tifffile.imwrite(d / "float32_nan.tif", data)
    valid["float32_nan.tif"] = ValidFile(rgb3(expected))

    rgba = noisy_rgb(16, 20, seed=3)
    alpha = np.zeros((16, 20, 1), dtype=np.uint8)
    alpha[::2] = 255  # half the rows fully transparent: their colour must be kept, not composited
    _save_png(np.concatenate([rgba, alpha], axis=-1), d / "rgba.png")
    valid["rgba.png"] = ValidFile(rgba)

    palette = np.array([[200, 10, 10], [10, 200, 10], [10, 10, 200], [250, 250, 0]], dtype=np.uint8)
    index = (np.arange(16 * 16).reshape(16, 16) // 5) % 4
    pim = Image.fromarray(index.astype(np.uint8), mode="P")
    pim.putpalette(palette.flatten().tolist())
    pim.save(d / "palette_transparency.png", transparency=0)  # index 0 (red) fully transparent
    valid["palette_transparency.png"] = ValidFile(palette[index])

    src = blocky_rgb(24, 32, seed=4)
    save_jpeg(Image.fromarray(src).convert("CMYK"), d / "cmyk.jpg")
    valid["cmyk.jpg"] = ValidFile(src, max_mean_abs_diff=3.0, max_abs_diff=24)

    src = blocky_rgb(24, 40, seed=5)  # stored 40 wide; orientation 6 displays it rotated 90° clockwise
    jpeg_with_orientation(src, d / "exif_orientation6.jpg", 6)
    valid["exif_orientation6.jpg"] = ValidFile(np.rot90(src, -1), max_mean_abs_diff=3.0, max_abs_diff=24)

    png("wide_4to1.png", noisy_rgb(16, 64, seed=6))  # exactly the default max_aspect: scored

    src = noisy_rgb(32, 32, seed=7)
    with tifffile.TiffWriter(d / "thumbnail_subifd.tif") as tw:  # one image; its thumbnail is a sub-IFD
        tw.write(src, photometric="rgb", subifds=1)
        tw.write(src[::4, ::4], photometric="rgb", subfiletype=1)
    valid["thumbnail_subifd.tif"] = ValidFile(src)

    k = np.stack([ramp_k(16, 16), ramp_k(16, 16).T, ramp_k(16, 16)[::-1]], axis=-1)
    with tifffile.TiffWriter(d / "thumbnail_page16.tif") as tw:  # second page: a reduced-resolution copy
        tw.write((100 + 3 * k).astype(np.uint16), photometric="rgb")
        tw.write((100 + 3 * k[::2, ::2]).astype(np.uint16), photometric="rgb", subfiletype=1)
    valid["thumbnail_page16.tif"] = ValidFile(k.astype(np.uint8))

    for seed, name in enumerate((NAME_SPACE, NAME_UNICODE, NAME_QUOTES, NAME_HTML), start=10):
        png(name, noisy_rgb(12, 14, seed=seed))

    arr = noisy_rgb(10, 12, seed=20)
    _save_png(arr, d / "png_content.dat")
    valid["png_content.dat"] = ValidFile(arr)
    return valid


def _bad_files(d: Path) -> dict[str, str]:
    bad: dict[str, str] = {}

    (d / "empty.png").write_bytes(b"")
    bad["empty.png"] = "empty file"

    (d / "text.jpg").write_text("this is a text file, not a JPEG\n")
    bad["text.jpg"] = "not an image"

    _save_png(noisy_rgb(64, 64, seed=30), d / "full.tmp")
    data = (d / "full.tmp").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) * 3 // 5])
    bad["truncated.png"] = "corrupt or truncated"

    save_jpeg(Image.fromarray(noisy_rgb(64, 64, seed=31)), d / "full.tmp")
    data = (d / "full.tmp").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) * 3 // 5])
    bad["truncated.jpg"] = "corrupt or truncated"
    (d / "full.tmp").unlink()

    (d / "bomb_100000x100000.png").write_bytes(bomb_png_bytes(100_000, 100_000))  # above Pillow's own limit
    bad["bomb_100000x100000.png"] = "decompression bomb"
    (d / "bomb_10000x7000.png").write_bytes(bomb_png_bytes(10_000, 7_000))  # 70 Mpx: above wormflow's 64 Mpx default
    bad["bomb_10000x7000.png"] = "decompression bomb"

    _save_png(noisy_rgb(2, 2, seed=32), d / "tiny_2x2.png")
    bad["tiny_2x2.png"] = "too small"

    Image.fromarray(noisy_rgb(16, 16, seed=33)).save(d / "image.gif")
    bad["image.gif"] = "unsupported image format 'GIF'"

    path = d / "corrupt_strip.tif"
    tifffile.imwrite(path, noisy_rgb(32, 32, seed=34), photometric="rgb", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data = bytearray(path.read_bytes())
    data[offset + 2 : offset + count] = bytes(i % 251 for i in range(count - 2))  # keep the zlib header, garble the stream
    path.write_bytes(bytes(data))
    bad["corrupt_strip.tif"] = "corrupt"

    cols = np.arange(2000)
    wide = np.stack(np.broadcast_arrays(cols % 256, np.arange(40)[:, None] * 6, (cols // 8) % 256), axis=-1)
    _save_png(wide.astype(np.uint8), d / "wide_2000x40.png")
    bad["wide_2000x40.png"] = "extreme aspect ratio: 2000x40 is 50.0:1"

    first, *rest = (Image.fromarray(noisy_rgb(16, 16, seed=35 + i)) for i in range(3))
    first.save(d / "animated.png", format="PNG", save_all=True, append_images=rest)
    bad["animated.png"] = "multi-frame image (3 frames/pages)"

    with tifffile.TiffWriter(d / "multipage.tif") as tw:
        for i in range(2):
            tw.write(noisy_rgb(16, 16, seed=38 + i), photometric="rgb")
    bad["multipage.tif"] = "multi-frame image (2 frames/pages)"

    mostly_nan = np.full((16, 16), np.nan, dtype=np.float32)
    mostly_nan[3, 4] = 1.0
    tifffile.imwrite(d / "mostly_nan.tif", mostly_nan)
    bad["mostly_nan.tif"] = "too many non-finite pixel values"

    tifffile.imwrite(  # 2 MB of zeros in 64x80 pixels: a few kB on disk
        d / "samples400.tif",
        np.zeros((64, 80, 400), dtype=np.uint8),
        photometric="minisblack",
        planarconfig="contig",
        compression="zlib",
    )
    bad["samples400.tif"] = "400 samples per pixel"

    tifffile.imwrite(d / "cmyk16.tif", np.zeros((16, 16, 4), dtype=np.uint16), photometric="separated")
    bad["cmyk16.tif"] = "unsupported TIFF colour model SEPARATED"
    return bad


def make_odd_and_bad_files(directory) -> dict:
    """Write the odd and bad files into ``directory``; return ``{"valid": {...}, "bad": {...}}`` (see module doc)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    return {"valid": _valid_files(d), "bad": _bad_files(d)}


def make_nested(root, names: list[str], filename: str, data: bytes) -> str:
    """Create ``root/names[0]/.../names[-1]/filename`` through directory file descriptors; return its relpath.

    Works where the full path is longer than PATH_MAX or too deep for recursive tools.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        file_fd = os.open(filename, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
        os.write(file_fd, data)
        os.close(file_fd)
    finally:
        os.close(fd)
    return "/".join([*names, filename])


def remove_nested(root, names: list[str]) -> None:
    """Remove what :func:`make_nested` created (deepest first, through file descriptors, without recursion)."""
    fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for name in names:
            try:
                fds.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fds[-1]))
            except FileNotFoundError:
                break
        for depth in range(len(fds) - 1, 0, -1):
            for entry in os.listdir(fds[depth]):  # files only: the next level is already gone
                os.unlink(entry, dir_fd=fds[depth])
            os.close(fds.pop())
            os.rmdir(names[depth - 1], dir_fd=fds[-1])
    finally:
        for fd in fds:
            os.close(fd)
