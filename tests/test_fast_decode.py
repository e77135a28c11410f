"""Decoding only what the model needs: DCT-scaled JPEGs, two-step resizes, and the exact `full` mode."""

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scripts.make_phone_photos import phone_jpeg

import imagenet_zoo
from imagenet_zoo.data.images import DEFAULT_MAX_PIXELS, decode_image
from imagenet_zoo.data.preprocess import DRAFT_MARGIN, draft_short_side, model_input
from imagenet_zoo.errors import ImageTooLargeError
from tests.conftest import SAMPLE_DIR, run_cli

SAMPLE = sorted(SAMPLE_DIR.iterdir())
LITE0 = imagenet_zoo.resolve_data_config("efficientnet_lite0")


def _inputs(source: bytes | str, decode: str) -> np.ndarray:
    _, pixels = model_input(source, LITE0, max_pixels=DEFAULT_MAX_PIXELS, decode=decode)  # type: ignore[arg-type]
    return pixels


def test_a_phone_jpeg_is_decoded_at_the_smallest_scale_that_keeps_the_margin() -> None:
    data = phone_jpeg(SAMPLE[0], sideways=False)  # 500x375 -> 4032x3024
    needed = draft_short_side(LITE0)
    assert needed == math.ceil(DRAFT_MARGIN * LITE0.resize_shorter_to)
    decoded = decode_image(data, min_short_side=needed)
    assert needed <= min(decoded.image.size) < 2 * needed  # 1/8 scale: 504x378
    assert (decoded.info.width, decoded.info.height) == (4032, 3024)  # the photo's own size is reported
    assert decode_image(data).image.size == (4032, 3024)


def test_exif_orientation_and_the_reported_size_survive_the_scaled_decode() -> None:
    data = phone_jpeg(SAMPLE[3], sideways=True)
    fast, full = decode_image(data, min_short_side=draft_short_side(LITE0)), decode_image(data)
    assert fast.info == full.info and fast.info.exif_transposed
    assert (fast.info.width, fast.info.height) == full.image.size == (4032, 3024)
    assert fast.image.width > fast.image.height  # upright, like the full decode


def test_fast_and_full_agree_on_phone_photos(with_lite0: Path) -> None:
    """8 of the 200 photos (scripts/decode_margins.py measures all of them: 98.5 % agreement)."""
    engine = imagenet_zoo.load_engine("lite0", progress=False)
    agree = 0
    for index in range(0, 200, 25):
        data = phone_jpeg(SAMPLE[index], sideways=index % 2 == 1)
        fast, full = _inputs(data, "fast"), _inputs(data, "full")
        logits = engine.infer(np.stack([fast, full]))
        agree += logits[0].argmax() == logits[1].argmax()
        assert np.abs(fast.astype(float) - full).mean() < 6.4  # levels: a small resampling difference
    assert agree >= 7  # of 8


def test_fast_resizes_only_the_crop_within_a_level_of_the_exact_protocol() -> None:
    """Most of the shared sample (about 500x375) needs no reduction: fast then differs from the exact
    protocol only by resizing the crop's region alone, where the filter's weights are computed from
    that region's (rounded) bounds: a level at most, on a few percent of the values."""
    differing, values = 0, 0
    for photo in SAMPLE:
        with Image.open(photo) as image:
            if min(image.size) >= 2 * draft_short_side(LITE0):
                continue
        fast, full = _inputs(str(photo), "fast").astype(int), _inputs(str(photo), "full").astype(int)
        assert np.abs(fast - full).max() <= 1, photo
        differing, values = differing + int((fast != full).sum()), values + fast.size
    assert values >= 190 * 224 * 224 * 3 and differing / values < 0.03


def test_a_large_png_is_resized_in_two_steps_close_to_the_exact_resize() -> None:
    with Image.open(SAMPLE[7]) as image:
        big = image.convert("RGB").resize((3000, 2250), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, "PNG", compress_level=1)
    fast, full = _inputs(buffer.getvalue(), "fast"), _inputs(buffer.getvalue(), "full")
    assert 0 < np.abs(fast.astype(float) - full).mean() < 2.5  # levels


def test_the_size_cap_still_refuses_before_any_pixel_is_decoded() -> None:
    huge = io.BytesIO()
    Image.new("RGB", (9000, 8000)).save(huge, "JPEG", quality=10)  # 72 MP, above the 64 MP cap
    with pytest.raises(ImageTooLargeError):
        decode_image(huge.getvalue(), min_short_side=512)


def test_decode_full_on_the_command_line(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "phone.jpg"
    photo.write_bytes(phone_jpeg(SAMPLE[0], sideways=False))
    tops = {}
    for mode in ("fast", "full"):
        code, out, _ = run_cli(["classify", str(photo), "--decode", mode, "--format", "json"], capsys)
        [result] = json.loads(out)
        assert code == 0 and result["input"]["width"] == 4032
        tops[mode] = result["predictions"][0]["label"]
    assert tops["fast"] == tops["full"] == "tench"
