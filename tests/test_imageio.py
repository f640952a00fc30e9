"""Decoding images into RGB uint8 arrays (wormflow.imageio)."""

from __future__ import annotations

import hashlib
import inspect
import os
import struct
import tempfile
import time
import tracemalloc

import numpy as np
import pytest
import tifffile
from oddfiles import (
    blocky_rgb,
    bomb_png_bytes,
    jpeg_with_orientation,
    make_nested,
    make_odd_and_bad_files,
    noisy_rgb,
    ramp_k,
    remove_nested,
    rgb3,
)
from PIL import Image, ImageFile, ImageOps

from wormflow import imageio
from wormflow.imageio import ImageLoadError, apply_orientation, decode_image, gray_to_rgb, resize_rgb, scale_to_uint8


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    directory = tmp_path_factory.mktemp("odd")
    return directory, make_odd_and_bad_files(directory)


def _collection_names() -> tuple[list[str], list[str]]:
    with tempfile.TemporaryDirectory() as d:
        expect = make_odd_and_bad_files(d)
    return sorted(expect["valid"]), sorted(expect["bad"])


VALID_NAMES, BAD_NAMES = _collection_names()


@pytest.fixture
def spy_on_pixel_decoding(monkeypatch):
    """Call it (after writing the test files) to record every later attempt to decode pixel data."""
    calls = []

    def start() -> list[str]:
        real_getdecoder = Image._getdecoder

        def getdecoder(*args, **kwargs):
            calls.append("Image._getdecoder")
            return real_getdecoder(*args, **kwargs)

        def refuse(name):
            def spy(*args, **kwargs):
                calls.append(name)
                raise AssertionError(f"{name} called")

            return spy

        monkeypatch.setattr(Image, "_getdecoder", getdecoder)
        monkeypatch.setattr(ImageFile.ImageFile, "load", refuse("ImageFile.load"))
        monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse("TiffPage.asarray"))
        return calls

    return start


# --- the odd-but-valid and bad collection ------------------------------------------------------------


def test_generator_covers_the_required_cases(odd):
    directory, expect = odd
    assert sorted(os.listdir(directory)) == sorted([*expect["valid"], *expect["bad"]])
    assert {"wörm 🪱.png", 'it\'s "q".png', "x<img src=x onerror=alert(1)>.png", "with space.png"} <= set(expect["valid"])
    assert len(expect["valid"]) >= 16
    assert len(expect["bad"]) >= 9


def test_generator_is_deterministic_and_fast(tmp_path):
    start = time.perf_counter()
    make_odd_and_bad_files(tmp_path / "a")
    elapsed = time.perf_counter() - start
    make_odd_and_bad_files(tmp_path / "b")
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == sorted(os.listdir(tmp_path / "b"))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert elapsed < 1.0


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_file_decodes_to_expected_rgb(odd, name):
    directory, expect = odd
    rgb = decode_image(directory / name)
    assert rgb.ndim == 3 and rgb.shape[2] == 3
    expect["valid"][name].assert_matches(rgb)


@pytest.mark.parametrize("name", VALID_NAMES)
def test_decoding_twice_gives_identical_arrays(odd, name):
    directory, _ = odd
    first = decode_image(directory / name)
    second = decode_image(str(directory / name))
    assert np.array_equal(first, second)


@pytest.mark.parametrize("name", VALID_NAMES)
def test_decoded_array_is_writeable_and_contiguous(odd, name):
    directory, _ = odd
    rgb = decode_image(directory / name)
    assert rgb.flags.c_contiguous
    assert rgb.flags.writeable
    rgb[0, 0] = 7  # callers may normalise in place


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_file_raises_image_load_error_with_path_and_reason(odd, name):
    directory, expect = odd
    path = directory / name
    with pytest.raises(ImageLoadError) as info:
        decode_image(path)
    assert info.value.path == str(path)
    assert expect["bad"][name] in info.value.reason
    assert str(path) in str(info.value) and info.value.reason in str(info.value)


# --- decompression bombs and geometry limits --------------------------------------------------------


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (10_000, 7_000)])
def test_bomb_is_refused_from_the_header_without_decoding(tmp_path, spy_on_pixel_decoding, width, height):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png_bytes(width, height))
    assert path.stat().st_size < 200
    decoding_calls = spy_on_pixel_decoding()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageLoadError, match="decompression bomb"):
            decode_image(path)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoding_calls == []
    assert elapsed < 0.5
    assert peak < 5_000_000


def test_max_pixels_is_checked_before_decoding(tmp_path, spy_on_pixel_decoding):
    path = tmp_path / "real.png"
    Image.fromarray(noisy_rgb(64, 64, seed=1)).save(path)
    decoding_calls = spy_on_pixel_decoding()
    with pytest.raises(ImageLoadError, match="4096 pixels exceeds the limit of 4000"):
        decode_image(path, max_pixels=4000)
    assert decoding_calls == []


def test_max_pixels_is_checked_before_decoding_a_tiff_read_by_tifffile(tmp_path, spy_on_pixel_decoding):
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), dtype=np.uint16), photometric="rgb")
    decoding_calls = spy_on_pixel_decoding()
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        decode_image(path, max_pixels=4000)
    assert decoding_calls == []


def test_min_side_is_configurable(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(noisy_rgb(8, 12, seed=2)).save(path)
    assert decode_image(path).shape == (8, 12, 3)
    with pytest.raises(ImageLoadError, match=r"image too small: 12x8 \(minimum side 9 px\)"):
        decode_image(path, min_side=9)


# --- orientation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil_exif_transpose(tmp_path, orientation):
    src = blocky_rgb(24, 40, seed=orientation)
    path = tmp_path / f"o{orientation}.jpg"
    jpeg_with_orientation(src, path, orientation)
    with Image.open(path) as im:
        reference = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    rgb = decode_image(path)
    assert rgb.shape == ((40, 24, 3) if orientation >= 5 else (24, 40, 3))
    assert np.array_equal(rgb, reference)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_pil_exif_transpose(orientation):
    arr = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    im = Image.fromarray(arr)
    im.getexif()[0x0112] = orientation
    reference = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(apply_orientation(arr, orientation), reference)


def test_apply_orientation_ignores_invalid_values():
    arr = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert np.array_equal(apply_orientation(arr, 0), arr)
    assert np.array_equal(apply_orientation(arr, 9), arr)


def test_tiff_orientation_tag_is_applied_on_the_tifffile_path(tmp_path):
    k = np.stack([ramp_k(16, 24)] * 3, axis=-1)
    path = tmp_path / "rgb16_rot.tif"
    tifffile.imwrite(path, (500 + 4 * k).astype(np.uint16), photometric="rgb", extratags=[(274, "H", 1, 6, False)])
    assert np.array_equal(decode_image(path), np.rot90(k, -1).astype(np.uint8))


def test_tiff_orientation_tag_is_applied_on_the_pillow_path(tmp_path):
    src = noisy_rgb(16, 24, seed=3)
    path = tmp_path / "rgb8_rot.tif"
    tifffile.imwrite(path, src, photometric="rgb", extratags=[(274, "H", 1, 8, False)])
    assert np.array_equal(decode_image(path), np.rot90(src, 1))


# --- high-depth data --------------------------------------------------------------------------------


def test_float_rgb_tiff_pillow_cannot_open_is_scaled_by_its_range(tmp_path):
    k = np.stack([ramp_k(16, 16), ramp_k(16, 16).T, ramp_k(16, 16)[::-1]], axis=-1)
    path = tmp_path / "float_rgb.tif"
    tifffile.imwrite(path, (10.0 + k / 8).astype(np.float32), photometric="rgb")
    assert np.array_equal(decode_image(path), k.astype(np.uint8))


def test_16bit_rgba_tiff_drops_alpha_and_keeps_full_range(tmp_path):
    k = np.stack([ramp_k(16, 16)] * 3, axis=-1)
    rgba = np.concatenate([(3000 + 2 * k), np.full((16, 16, 1), 65535)], axis=-1).astype(np.uint16)
    path = tmp_path / "rgba16.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    assert np.array_equal(decode_image(path), k.astype(np.uint8))


def test_all_nan_float_tiff_is_an_image_load_error(tmp_path):
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, np.full((16, 16), np.nan, dtype=np.float32))
    with pytest.raises(ImageLoadError, match="no finite pixel values"):
        decode_image(path)


def test_constant_16bit_image_decodes_to_black(tmp_path):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((10, 10), 4321, dtype=np.uint16)).save(path)
    assert np.array_equal(decode_image(path), np.zeros((10, 10, 3), dtype=np.uint8))


# --- things that are not image files ----------------------------------------------------------------


def test_missing_file_is_an_image_load_error(tmp_path):
    with pytest.raises(ImageLoadError, match="cannot open file: No such file or directory") as info:
        decode_image(tmp_path / "absent.png")
    assert info.value.path == str(tmp_path / "absent.png")


def test_directory_is_not_a_regular_file(tmp_path):
    with pytest.raises(ImageLoadError, match="not a regular file"):
        decode_image(tmp_path)


def test_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    with pytest.raises(ImageLoadError, match="not a regular file"):
        decode_image(path)


def test_unexpected_decoder_exception_becomes_image_load_error(tmp_path, monkeypatch):
    path = tmp_path / "ok.png"
    Image.fromarray(noisy_rgb(10, 10, seed=4)).save(path)

    def broken(*args, **kwargs):
        raise IndexError("decoder bug")

    monkeypatch.setattr(imageio, "_pil_to_rgb", broken)
    with pytest.raises(ImageLoadError, match="IndexError: decoder bug"):
        decode_image(path)


# --- helpers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, size", [((40, 2000, 3), 64), ((10, 12, 3), 32), ((50, 50, 3), 16)])
def test_resize_rgb_gives_square_uint8(shape, size):
    out = resize_rgb(noisy_rgb(*shape[:2], seed=5), size)
    assert out.shape == (size, size, 3)
    assert out.dtype == np.uint8


def test_resize_rgb_keeps_a_uniform_colour():
    arr = np.zeros((40, 2000, 3), dtype=np.uint8)
    arr[...] = (10, 200, 30)
    assert np.array_equal(resize_rgb(arr, 32), np.broadcast_to(np.array([10, 200, 30], dtype=np.uint8), (32, 32, 3)))


def test_resize_rgb_at_target_size_returns_the_image_unchanged():
    arr = noisy_rgb(16, 16, seed=6)
    assert np.array_equal(resize_rgb(arr, 16), arr)


def test_scale_to_uint8_maps_real_range_linearly():
    out = scale_to_uint8(np.array([1000, 3000, 5000], dtype=np.uint16))
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 128, 255]  # 127.5 rounds half up


def test_scale_to_uint8_constant_image_is_zeros():
    out = scale_to_uint8(np.full((3, 4), 7.5))
    assert out.dtype == np.uint8 and out.shape == (3, 4)
    assert not out.any()


def test_scale_to_uint8_all_nan_raises():
    with pytest.raises(ValueError, match="no finite pixel values"):
        scale_to_uint8(np.full((2, 2), np.nan))


def test_scale_to_uint8_all_inf_raises():
    with pytest.raises(ValueError, match="no finite pixel values"):
        scale_to_uint8(np.array([np.inf, -np.inf]))


def test_scale_to_uint8_infinities_clip_and_nan_is_minimum():
    out = scale_to_uint8(np.array([np.nan, -np.inf, 2.0, 4.0, 6.0, np.inf]))
    assert out.tolist() == [0, 0, 0, 128, 255, 255]


def test_scale_to_uint8_finite_range_ignores_infinities_and_nan():
    out = scale_to_uint8(np.array([[np.inf, 1.0], [np.nan, 3.0]], dtype=np.float32))
    assert out.tolist() == [[255, 0], [0, 255]]


def test_gray_to_rgb_replicates_and_passes_colour_through():
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(gray_to_rgb(gray), rgb3(gray))
    colour = noisy_rgb(2, 3, seed=7)
    assert gray_to_rgb(colour) is colour


def test_image_load_error_carries_path_and_reason(tmp_path):
    err = ImageLoadError(tmp_path / "x.png", "because")
    assert err.path == str(tmp_path / "x.png")
    assert err.reason == "because"
    assert str(err) == f"{tmp_path / 'x.png'}: because"


def test_jpeg_draft_decode_keeps_the_requested_size_and_content(tmp_path):
    """``min_output_side`` decodes large JPEGs at a DCT scale that never goes below the request."""
    yy, xx = np.mgrid[0:1000, 0:1300]
    smooth = np.stack([(xx / 1300 * 255), (yy / 1000 * 255), ((xx + yy) / 2300 * 255)], -1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(smooth).save(path, quality=95)
    full = decode_image(path)
    small = decode_image(path, min_output_side=224)
    assert full.shape == (1000, 1300, 3)
    assert min(small.shape[:2]) >= 224 and small.shape[0] < 1000  # reduced, but not below the request
    diff = np.abs(resize_rgb(full, 224).astype(int) - resize_rgb(small, 224).astype(int))
    assert diff.mean() < 2.0
    png = tmp_path / "big.png"
    Image.fromarray(smooth).save(png)
    assert decode_image(png, min_output_side=224).shape == (1000, 1300, 3)  # only JPEGs are drafted


# --- decode memory: bounded by bytes, not only pixels ------------------------------------------------


def _write_kind(path, kind: str, height: int = 32, width: int = 48) -> int:
    """Write a ``kind`` image of ``height`` x ``width``; return its decoded size from the header (W x H x samples x bytes)."""
    k = ramp_k(height, width)
    if kind == "rgb8.png":
        Image.fromarray(rgb3(k)).save(path)
        return height * width * 3
    if kind == "gray16.png":
        Image.fromarray((300 + 100 * k).astype(np.uint16)).save(path)
        return height * width * 2
    if kind == "rgb16.tif":
        tifffile.imwrite(path, rgb3(k).astype(np.uint16) * 200, photometric="rgb")
        return height * width * 3 * 2
    if kind == "float32.tif":
        tifffile.imwrite(path, (rgb3(k) / 7).astype(np.float32), photometric="rgb")
        return height * width * 3 * 4
    raise ValueError(kind)


DECODE_KINDS = ("rgb8.png", "gray16.png", "rgb16.tif", "float32.tif")


def test_default_max_decoded_bytes_is_one_gib():
    assert imageio.DEFAULT_MAX_DECODED_BYTES == 1 << 30
    assert inspect.signature(decode_image).parameters["max_decoded_bytes"].default == imageio.DEFAULT_MAX_DECODED_BYTES


@pytest.mark.parametrize("kind", DECODE_KINDS)
def test_max_decoded_bytes_is_checked_from_the_header(tmp_path, spy_on_pixel_decoding, kind):
    path = tmp_path / kind
    decoded = _write_kind(path, kind)
    assert decode_image(path, max_decoded_bytes=decoded).shape == (32, 48, 3)  # exactly at the limit: decoded
    decoding_calls = spy_on_pixel_decoding()
    with pytest.raises(ImageLoadError, match=rf"decodes to {decoded} bytes .*exceeds the limit of {decoded - 1} bytes") as info:
        decode_image(path, max_decoded_bytes=decoded - 1)
    assert "48x32" in info.value.reason
    assert decoding_calls == []


@pytest.mark.parametrize("samples", [5, 400])
def test_too_many_samples_per_pixel_are_refused_from_the_header(tmp_path, spy_on_pixel_decoding, samples):
    """400 samples of zlib-compressed zeros: a small file within max_pixels that decoded to hundreds of MB."""
    path = tmp_path / f"samples{samples}.tif"
    tifffile.imwrite(
        path, np.zeros((64, 80, samples), dtype=np.uint8), photometric="minisblack", planarconfig="contig", compression="zlib"
    )
    decoding_calls = spy_on_pixel_decoding()
    with pytest.raises(ImageLoadError, match=rf"{samples} samples per pixel: at most 4"):
        decode_image(path)
    assert decoding_calls == []


@pytest.mark.parametrize("kind", DECODE_KINDS)
def test_decoding_peak_memory_is_a_small_multiple_of_the_decoded_size(tmp_path, monkeypatch, kind):
    """Traced (numpy and Python) allocations while decoding stay below twice the header's decoded size.

    Conversions work in blocks (made small here, so that the image spans many of them): no full-size float64 copy.
    """
    monkeypatch.setattr(imageio, "CONVERT_BLOCK_ELEMENTS", 4096, raising=False)
    path = tmp_path / kind
    decoded = _write_kind(path, kind, 192, 256)
    output = 192 * 256 * 3
    decode_image(path)  # warm up: lazy imports and codec set-up are not the image's cost
    tracemalloc.start()
    try:
        rgb = decode_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rgb.shape == (192, 256, 3)
    assert peak < 2 * max(decoded, output), f"peak {peak} bytes for {decoded} decoded bytes"


def test_scale_to_uint8_results_do_not_depend_on_the_block_size(monkeypatch):
    rng = np.random.default_rng(8)
    data = rng.normal(size=(37, 29, 3)).astype(np.float32)
    data[rng.random(data.shape) < 0.005] = np.nan
    data[0, 0, 0] = np.inf
    original = data.copy()
    whole = scale_to_uint8(data)
    monkeypatch.setattr(imageio, "CONVERT_BLOCK_ELEMENTS", 7)
    assert np.array_equal(scale_to_uint8(data), whole)
    assert np.array_equal(data, original, equal_nan=True)  # the caller's array is left untouched


@pytest.mark.parametrize("layout", ["gray16", "gray16+alpha", "float32"])
def test_16bit_and_float_miniswhite_tiffs_are_inverted_like_8bit_ones(tmp_path, layout):
    """MINISWHITE means 0 is white: Pillow inverts 8-bit files; deeper ones (either reader) must not differ."""
    k = ramp_k(16, 16)
    data = (1000 + 10 * k).astype(np.float32 if layout == "float32" else np.uint16)
    kwargs = {}
    if layout == "gray16+alpha":  # Pillow cannot open this one: the tifffile path
        data = np.stack([data, np.full_like(data, 65535)], axis=-1)
        kwargs = {"extrasamples": ["unassalpha"], "planarconfig": "contig"}
    path = tmp_path / f"{layout}.tif"
    tifffile.imwrite(path, data, photometric="miniswhite", **kwargs)
    assert np.array_equal(decode_image(path), rgb3(255 - k))


def test_a_16bit_colour_model_other_than_gray_or_rgb_is_refused(tmp_path):
    path = tmp_path / "cmyk16.tif"
    tifffile.imwrite(path, np.zeros((16, 16, 4), dtype=np.uint16), photometric="separated")
    with pytest.raises(ImageLoadError, match="unsupported TIFF colour model SEPARATED with 16-bit samples"):
        decode_image(path)


# --- explicit policies: multi-frame files, extreme aspect ratios, mostly non-finite data -------------


def _frames(n: int, size: int = 16) -> list[Image.Image]:
    return [Image.fromarray(noisy_rgb(size, size, seed=40 + i)) for i in range(n)]


def _write_multi_frame(path, kind: str) -> int:
    """Write a multi-frame file of ``kind``; return its number of frames/pages."""
    if kind == "apng":
        first, *rest = _frames(3)
        first.save(path, format="PNG", save_all=True, append_images=rest)
        return 3
    if kind == "tiff8":  # Pillow reads these
        with tifffile.TiffWriter(path) as tw:
            for i in range(2):
                tw.write(noisy_rgb(16, 16, seed=50 + i), photometric="rgb")
        return 2
    if kind == "tiff16":  # tifffile reads these
        with tifffile.TiffWriter(path) as tw:
            for i in range(4):
                tw.write(np.full((16, 16, 3), 1000 * i, dtype=np.uint16), photometric="rgb")
        return 4
    if kind == "mpo":
        first, *rest = _frames(2)
        first.save(path, format="MPO", save_all=True, append_images=rest)
        return 2
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["apng", "tiff8", "tiff16", "mpo"])
def test_multi_frame_files_are_refused_not_scored_by_their_first_frame(tmp_path, spy_on_pixel_decoding, kind):
    path = tmp_path / f"multi.{kind}"
    n = _write_multi_frame(path, kind)
    decoding_calls = spy_on_pixel_decoding()
    with pytest.raises(ImageLoadError) as info:
        decode_image(path)
    assert info.value.reason == f"multi-frame image ({n} frames/pages): not scored; save one image per file"
    assert decoding_calls == []


def test_a_tiff_with_a_sub_ifd_thumbnail_is_one_image(tmp_path):
    src = noisy_rgb(32, 32, seed=60)
    path = tmp_path / "thumb_subifd.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(src, photometric="rgb", subifds=1)
        tw.write(src[::4, ::4], photometric="rgb", subfiletype=1)  # stored as the first page's sub-IFD
    assert np.array_equal(decode_image(path), src)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_tiff_with_a_reduced_resolution_second_page_is_one_image(tmp_path, dtype):
    k = np.stack([ramp_k(32, 32)] * 3, axis=-1)
    path = tmp_path / "thumb_page.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(k.astype(dtype), photometric="rgb")
        tw.write(k[::4, ::4].astype(dtype), photometric="rgb", subfiletype=1)  # NewSubfileType: reduced-resolution copy
    assert np.array_equal(decode_image(path), k.astype(np.uint8))


def test_an_mpo_whose_other_image_is_a_large_thumbnail_is_one_image(tmp_path):
    """Cameras store a preview ("Large Thumbnail") as a second MPO image: the primary image is scored."""
    path = tmp_path / "preview.mpo"
    first, second = _frames(2, size=24)
    first.save(path, format="MPO", save_all=True, append_images=[second])
    with Image.open(path) as im:
        entry = im.mpinfo[0xB002][1]
    data = path.read_bytes()
    for fmt in (">IIIHH", "<IIIHH"):  # the second MP entry: attribute (0: undefined), size, offset, dependencies
        old = struct.pack(fmt, 0, entry["Size"], entry["DataOffset"], 0, 0)
        if data.count(old) == 1:
            path.write_bytes(data.replace(old, struct.pack(fmt, 0x010001, entry["Size"], entry["DataOffset"], 0, 0)))
            break
    else:
        raise AssertionError("MP entry not found")
    with Image.open(path) as im:
        assert "Thumbnail" in im.mpinfo[0xB002][1]["Attribute"]["MPType"]
    assert decode_image(path).shape == (24, 24, 3)


def test_extreme_aspect_ratio_is_refused_from_the_header(tmp_path, spy_on_pixel_decoding):
    path = tmp_path / "wide.png"
    Image.fromarray(noisy_rgb(40, 2000, seed=61)).save(path)
    decoding_calls = spy_on_pixel_decoding()
    with pytest.raises(ImageLoadError, match=r"extreme aspect ratio: 2000x40 is 50\.0:1, above the limit of 4:1 \(max_aspect\)"):
        decode_image(path)
    assert decoding_calls == []


def test_extreme_aspect_ratio_is_refused_on_the_tifffile_path_too(tmp_path):
    path = tmp_path / "tall16.tif"
    tifffile.imwrite(path, np.zeros((100, 20, 3), dtype=np.uint16), photometric="rgb")
    with pytest.raises(ImageLoadError, match=r"20x100 is 5\.0:1, above the limit of 4:1"):
        decode_image(path)


def test_max_aspect_is_inclusive_and_configurable(tmp_path):
    path = tmp_path / "four_to_one.png"
    Image.fromarray(noisy_rgb(16, 64, seed=62)).save(path)
    assert decode_image(path).shape == (16, 64, 3)
    with pytest.raises(ImageLoadError, match="aspect ratio"):
        decode_image(path, max_aspect=3.5)
    wide = tmp_path / "wide.png"
    Image.fromarray(noisy_rgb(8, 400, seed=63)).save(wide)
    assert decode_image(wide, max_aspect=50).shape == (8, 400, 3)
    assert decode_image(wide, max_aspect=None).shape == (8, 400, 3)


@pytest.mark.parametrize("layout", ["gray", "rgb"])  # gray float: Pillow ("F"); RGB float: tifffile
def test_a_float_image_that_is_mostly_nan_is_refused(tmp_path, layout):
    data = np.full((16, 16) if layout == "gray" else (16, 16, 3), np.nan, dtype=np.float32)
    data[3, 4] = 1.0  # one finite pixel: scaled, the image would be all black
    path = tmp_path / f"nan_{layout}.tif"
    tifffile.imwrite(path, data, photometric="minisblack" if layout == "gray" else "rgb")
    n = data.size
    with pytest.raises(ImageLoadError) as info:
        decode_image(path)
    finite = 1 if layout == "gray" else 3
    assert info.value.reason == (
        f"too many non-finite pixel values: {n - finite} of {n} ({100 * (n - finite) / n:.1f} %) are NaN or infinite, "
        "above the limit of 1 % (max_nonfinite_fraction)"
    )


def test_non_finite_limit_is_a_keyword_and_a_few_nans_stay_allowed(tmp_path):
    k = ramp_k(16, 32)
    data = (k / 255.0).astype(np.float32)
    data[0, :5] = np.nan  # 5 of 512 values: 0.98 %
    path = tmp_path / "some_nan.tif"
    tifffile.imwrite(path, data)
    expected = k.copy()
    expected[0, :5] = 0
    assert np.array_equal(decode_image(path), rgb3(expected))
    with pytest.raises(ImageLoadError, match="5 of 512"):
        decode_image(path, max_nonfinite_fraction=0.005)
    mostly = np.full((16, 16), np.inf, dtype=np.float32)
    mostly[0, 0] = 2.0
    tifffile.imwrite(tmp_path / "mostly_inf.tif", mostly)
    assert decode_image(tmp_path / "mostly_inf.tif", max_nonfinite_fraction=1.0).shape == (16, 16, 3)


# --- verified reads: no-follow, non-blocking, hash-checked -------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def batch(tmp_path):
    root = tmp_path / "batch"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(noisy_rgb(12, 16, seed=70)).save(root / "sub" / "img.png")
    return root


def test_read_file_verified_returns_the_bytes_and_decoding_them_matches_the_path(batch):
    data = (batch / "sub" / "img.png").read_bytes()
    got = imageio.read_file_verified(batch, "sub/img.png", _sha(data), max_bytes=len(data))
    assert got == data
    assert np.array_equal(decode_image(batch / "sub" / "img.png", data=got), decode_image(batch / "sub" / "img.png"))
    with open(batch / "sub" / "img.png", "rb") as fh:  # a file object works too
        assert np.array_equal(decode_image(batch / "sub" / "img.png", data=fh), decode_image(batch / "sub" / "img.png"))


def test_decoding_from_bytes_names_the_path_in_errors(tmp_path):
    path = tmp_path / "named.png"
    with pytest.raises(ImageLoadError, match="empty file") as info:
        decode_image(path, data=b"")
    assert info.value.path == str(path)
    with pytest.raises(ImageLoadError, match="not an image"):
        decode_image(path, data=b"GIF89a? no: just text")


def test_a_file_changed_after_listing_is_refused(batch):
    path = batch / "sub" / "img.png"
    listed = _sha(path.read_bytes())
    Image.fromarray(noisy_rgb(12, 16, seed=71)).save(path)  # rewritten (or still being written) after the manifest
    with pytest.raises(ImageLoadError, match="changed after listing: its SHA-256 is [0-9a-f]{12}, the manifest recorded") as info:
        imageio.read_file_verified(batch, "sub/img.png", listed, max_bytes=1 << 20)
    assert info.value.path == str(path)


def test_a_symlink_swapped_in_for_the_file_is_not_followed(batch, tmp_path):
    """The link's target even has the listed content: refused all the same, nothing outside the batch is read."""
    outside = tmp_path / "outside.png"
    outside.write_bytes((batch / "sub" / "img.png").read_bytes())
    listed = _sha(outside.read_bytes())
    (batch / "sub" / "img.png").unlink()
    os.symlink(outside, batch / "sub" / "img.png")
    with pytest.raises(ImageLoadError) as info:
        imageio.read_file_verified(batch, "sub/img.png", listed, max_bytes=1 << 20)
    assert info.value.reason == "changed after listing: symbolic link (not followed): sub/img.png"


def test_a_symlink_swapped_in_for_a_directory_is_not_followed(batch, tmp_path):
    (batch / "sub").rename(tmp_path / "moved")
    os.symlink(tmp_path / "moved", batch / "sub")
    listed = _sha((tmp_path / "moved" / "img.png").read_bytes())
    with pytest.raises(ImageLoadError) as info:
        imageio.read_file_verified(batch, "sub/img.png", listed, max_bytes=1 << 20)
    assert info.value.reason == "changed after listing: symbolic link (not followed): sub"


@pytest.mark.timeout(20)
def test_a_fifo_swapped_in_is_refused_without_blocking(batch):
    (batch / "sub" / "img.png").unlink()
    os.mkfifo(batch / "sub" / "img.png")
    with pytest.raises(ImageLoadError) as info:
        imageio.read_file_verified(batch, "sub/img.png", "0" * 64, max_bytes=1 << 20)
    assert info.value.reason == "changed after listing: not a regular file (FIFO)"


def test_a_deleted_file_and_a_file_in_place_of_a_directory_are_refused(batch):
    data = (batch / "sub" / "img.png").read_bytes()
    (batch / "sub" / "img.png").unlink()
    with pytest.raises(ImageLoadError, match="changed after listing: no longer exists"):
        imageio.read_file_verified(batch, "sub/img.png", _sha(data), max_bytes=1 << 20)
    (batch / "sub").rmdir()
    (batch / "sub").write_bytes(b"a file now")
    with pytest.raises(ImageLoadError, match="changed after listing: not a directory: sub"):
        imageio.read_file_verified(batch, "sub/img.png", _sha(data), max_bytes=1 << 20)


def test_a_file_above_max_bytes_is_refused_before_reading(batch):
    size = (batch / "sub" / "img.png").stat().st_size
    with pytest.raises(ImageLoadError, match=rf"file too large: {size} bytes, above the limit of {size - 1} bytes"):
        imageio.read_file_verified(batch, "sub/img.png", "0" * 64, max_bytes=size - 1)
    assert imageio.DEFAULT_MAX_FILE_BYTES == 1 << 30


@pytest.mark.parametrize("relpath", ["../batch/sub/img.png", "/etc/passwd", "sub/../sub/img.png", "sub//img.png", ""])
def test_a_relpath_leaving_the_batch_is_refused(batch, relpath):
    with pytest.raises(ImageLoadError, match="unsafe path in the manifest"):
        imageio.read_file_verified(batch, relpath, "0" * 64, max_bytes=1 << 20)


def test_read_file_verified_works_beyond_path_max(tmp_path):
    root = tmp_path / "batch"
    root.mkdir()
    names = [f"{i:02d}" + "y" * 240 for i in range(20)]
    Image.fromarray(noisy_rgb(10, 10, seed=72)).save(tmp_path / "src.png")
    data = (tmp_path / "src.png").read_bytes()
    relpath = make_nested(root, names, "deep.png", data)
    try:
        got = imageio.read_file_verified(root, relpath, _sha(data), max_bytes=1 << 20)
        assert decode_image(root / relpath, data=got).shape == (10, 10, 3)
    finally:
        remove_nested(root, names)


@pytest.mark.parametrize("name", VALID_NAMES + BAD_NAMES)
def test_decoding_verified_bytes_gives_what_decoding_the_path_gives(odd, name):
    directory, _ = odd
    data = (directory / name).read_bytes()
    if not data:
        with pytest.raises(ImageLoadError, match="empty file"):
            decode_image(directory / name, data=data)
        return
    verified = imageio.read_file_verified(directory, name, _sha(data))
    try:
        expected = decode_image(directory / name)
    except ImageLoadError as exc:
        with pytest.raises(ImageLoadError) as info:
            decode_image(directory / name, data=verified)
        assert info.value.reason == exc.reason
    else:
        assert np.array_equal(decode_image(directory / name, data=verified), expected)
