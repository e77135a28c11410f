"""Decoding what real folders contain, and refusing what they should not."""

import io
import os
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagenet_zoo.data.images import ALPHA_BACKGROUND, decode_image
from imagenet_zoo.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    UnsupportedImageError,
)


def _save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header claims `width` x `height` RGB pixels, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00"))
        + _png_chunk(b"IEND", b"")
    )


def test_rgb_jpeg(tmp_path: Path) -> None:
    decoded = decode_image(_save(Image.new("RGB", (40, 30), (10, 200, 30)), tmp_path / "a.jpg"))
    assert decoded.image.mode == "RGB" and decoded.image.size == (40, 30)
    assert decoded.info.format == "JPEG" and decoded.info.mode == "RGB" and not decoded.info.exif_transposed


def test_exif_orientation_is_applied_once(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode_image(_save(image, tmp_path / "rotated.jpg", exif=exif, quality=95))
    assert decoded.image.size == (20, 40)
    assert decoded.info.exif_transposed and (decoded.info.width, decoded.info.height) == (20, 40)
    pixels = np.asarray(decoded.image)
    assert pixels[2, 10].mean() > 200 and pixels[-3, 10].mean() < 50  # the strip is now on top
    again = decode_image(decoded.image)
    assert not again.info.exif_transposed and again.image.size == (20, 40)


@pytest.mark.parametrize(
    ("mode", "color"),
    [("L", 128), ("1", 1), ("CMYK", (0, 255, 255, 0)), ("I;16", 65535), ("I", 32896), ("F", 100.0)],
)
def test_other_modes_become_rgb(tmp_path: Path, mode: str, color: object) -> None:
    suffix = {"CMYK": "jpg", "F": "tiff", "I": "tiff"}.get(mode, "png")
    decoded = decode_image(_save(Image.new(mode, (8, 6), color), tmp_path / f"x.{suffix}"))  # type: ignore[arg-type]
    assert decoded.image.mode == "RGB" and decoded.image.size == (8, 6)
    value = np.asarray(decoded.image)[0, 0]
    expected = {"L": 128, "1": 255, "CMYK": 255, "I;16": 255, "I": 128, "F": 100}[mode]
    assert abs(int(value[0]) - expected) <= 2


def test_palette_with_transparency_is_composited(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.info["transparency"] = 0
    decoded = decode_image(_save(image, tmp_path / "p.png", transparency=0))
    assert tuple(np.asarray(decoded.image)[0, 0]) == ALPHA_BACKGROUND


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_the_fixed_background(tmp_path: Path, mode: str) -> None:
    color = (0, 0, 0, 0) if mode == "RGBA" else (0, 0)
    decoded = decode_image(_save(Image.new(mode, (5, 5), color), tmp_path / "a.png"))
    assert tuple(np.asarray(decoded.image)[0, 0]) == ALPHA_BACKGROUND


def test_animated_gif_uses_the_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    pixel = np.asarray(decode_image(path).image)[0, 0]
    assert pixel[0] > 200 and pixel[2] < 50


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", EmptyImageError),
        (b"hello, I am a text file\n", UnsupportedImageError),
        (b"\x00" * 1000, UnsupportedImageError),
    ],
)
def test_bad_bytes_give_typed_errors(tmp_path: Path, content: bytes, error: type) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(error):
        decode_image(path)
    with pytest.raises(error):
        decode_image(content)


def test_truncated_jpeg_is_corrupt(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "JPEG"
    )
    with pytest.raises(CorruptImageError):
        decode_image(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFoundError):
        decode_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageNotFoundError):
        decode_image(tmp_path)


def test_a_50000_square_png_is_refused_without_allocating_it(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(50_000, 50_000))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageTooLargeError):
        decode_image(path)
    # 50,000^2 RGB pixels would be 7.5 GB; the peak resident size must not move by more than noise.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000  # KiB


def test_the_pixel_cap_is_configurable(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "x.png")
    with pytest.raises(ImageTooLargeError):
        decode_image(path, max_pixels=9_999)
    assert decode_image(path, max_pixels=10_000).image.size == (100, 100)


def test_arrays_and_pil_images() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    assert decode_image(rgb).image.size == (6, 4)
    assert decode_image(np.zeros((4, 6), np.uint8)).image.mode == "RGB"
    with pytest.raises(UnsupportedImageError):
        decode_image(np.zeros((4, 6, 3), np.float32))
    with pytest.raises(UnsupportedImageError):
        decode_image(np.zeros((4, 6, 2), np.uint8))
    assert decode_image(Image.new("L", (3, 3))).image.mode == "RGB"


def test_an_unreadable_file_is_reported_as_such(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (4, 4)), tmp_path / "secret.png")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: make it unreadable another way
        path.chmod(0o644)
        path.unlink()
        path.mkdir()  # a folder named like a photo
    with pytest.raises(ImageNotFoundError):
        decode_image(path)
