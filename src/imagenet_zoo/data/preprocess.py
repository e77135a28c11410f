"""Model input from decoded images, derived entirely from a model's `DataConfig`.

Every function returns a new array; the caller's pixels are never modified (unlike Keras's
`preprocess_input`, which may scale a float array in place).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from imagenet_zoo.data.images import (
    Admit,
    DecodeBudget,
    DecodedImage,
    DecodeMode,
    ImageSource,
    InputInfo,
    decode_image,
)
from imagenet_zoo.errors import UnsupportedImageError
from imagenet_zoo.records import ErrorInfo
from imagenet_zoo.specs import DataConfig, PreprocessMode

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
# The ImageNet mean in BGR order, as subtracted by the Caffe-trained VGG and ResNet weights.
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)
# torchvision's ImageNet statistics, for RGB scaled to [0, 1].
TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# Fast decoding keeps the decoded photo's shorter side at least this many times the size the model's
# preprocessing resizes it to (see `data.images`). On 200 12-megapixel JPEGs made from the shared sample
# (scripts/make_phone_photos.py, scripts/decode_margins.py) a larger JPEG scale bought no top-1 agreement
# with a full decode that 200 photos can show, at up to 2x the decoding time, so 1.25 keeps the cheapest
# scale for phone photos while never resizing from less than 1.25x the target (figures: docs/benchmarks.md,
# "Figures behind constants").
DRAFT_MARGIN = 1.25
# ...and resizes in two steps (Pillow's `reducing_gap`): a box reduction by a whole factor, then the
# model's filter over at least this ratio. For formats decoded in full (PNG, WebP, TIFF), this is what
# saves the time of filtering millions of pixels.
REDUCING_GAP = 3.0


# A photo as the model's input: what it was, and its pixels (`model_input`'s answer).
CpuPath = Callable[[ImageSource], tuple[InputInfo, np.ndarray]]
# One input prepared for the engine: what it was and its model input (numpy pixels, or a row on the
# engine's device), or why it is not one.
Prepared = tuple[InputInfo, Any] | ErrorInfo
# A batch of inputs to each one's `Prepared`, in order: preprocessing of whole batches where an engine
# runs (`Engine.batch_preprocessor`).
BatchPreprocessor = Callable[[Sequence[ImageSource]], list[Prepared]]

# The shorter-side resize of an extreme panorama is refused its full size: a 1x100,000 PNG (473 bytes)
# would be resized to 256x25,600,000 pixels (24 GiB) before the crop. Past this many pixels only the crop
# box is resized; every photo up to an aspect ratio of about 60:1 takes the exact path below it.
MAX_INTERMEDIATE_PIXELS = 4_000_000


def draft_short_side(config: DataConfig) -> int:
    """The shorter side a fast decode must keep for this preprocessing (with `DRAFT_MARGIN`)."""
    target = config.resize_shorter_to if config.resize_mode == "crop" else config.input_size
    return math.ceil(DRAFT_MARGIN * target)


def resize_and_crop(image: Image.Image, config: DataConfig, *, fast: bool = False) -> np.ndarray:
    """RGB uint8 pixels of shape (size, size, 3): shorter-side resize + centre crop, or a squash.

    Without `fast`, exactly the evaluation protocol: the whole photo resized in one step, then cropped.
    `fast` resizes only the region the crop keeps, straight to the input size, and large photos in two
    steps (`REDUCING_GAP`). The filter reads past the region's edges as the whole resize does; its weights
    differ only by how the region's bounds round, so a few percent of values move by a level or two."""
    size = config.input_size
    resample = _PIL_FILTERS[config.interpolation]
    gap = REDUCING_GAP if fast else None
    if config.resize_mode == "squash":
        return np.asarray(image.resize((size, size), resample, reducing_gap=gap))
    new_size, (left, top) = crop_plan(image.width, image.height, config)
    if fast or new_size[0] * new_size[1] > MAX_INTERMEDIATE_PIXELS:
        box = input_region(image.width, image.height, config)  # the crop, in the photo
        return np.asarray(image.resize((size, size), resample, box=box, reducing_gap=gap))
    resized = image.resize(new_size, resample, reducing_gap=gap)
    return np.asarray(resized.crop((left, top, left + size, top + size)))


def crop_plan(width: int, height: int, config: DataConfig) -> tuple[tuple[int, int], tuple[int, int]]:
    """The size the resize gives a `width` x `height` photo, and the crop's top-left corner (a squash:
    the input size, no crop)."""
    short, size = config.resize_shorter_to, config.input_size
    if config.resize_mode == "squash":
        return (size, size), (0, 0)
    # The longer side is rounded (as timm does; torchvision truncates): this reproduces the
    # EfficientNet-Lite0 reference inputs exactly, pixel for pixel.
    if width <= height:
        new_size = (short, round(short * height / width))
    else:
        new_size = (round(short * width / height), short)
    return new_size, (round((new_size[0] - size) / 2.0), round((new_size[1] - size) / 2.0))


def input_region(width: int, height: int, config: DataConfig) -> tuple[float, float, float, float]:
    """The box (left, top, right, bottom) of a `width` x `height` photo that the model's input shows: the
    centre crop mapped back to the photo's pixels, or the whole photo for a squash."""
    if config.resize_mode == "squash":
        return (0.0, 0.0, float(width), float(height))
    new_size, (left, top) = crop_plan(width, height, config)
    sx, sy, size = width / new_size[0], height / new_size[1], config.input_size
    return (left * sx, top * sy, (left + size) * sx, (top + size) * sy)


def normalize(pixels: np.ndarray, mode: PreprocessMode) -> np.ndarray:
    """Scale RGB pixels (..., 3) in [0, 255] as a model's weights expect; returns new float32 data."""
    x = np.asarray(pixels, dtype=np.float32)
    if mode == "caffe":
        return x[..., ::-1] - CAFFE_BGR_MEAN
    if mode == "tf":
        return x / np.float32(127.5) - np.float32(1.0)
    if mode == "lite":
        return (x - np.float32(127.0)) / np.float32(128.0)
    if mode == "torch":
        return (x / np.float32(255.0) - TORCH_MEAN) / TORCH_STD
    raise ValueError(f"unknown preprocessing mode {mode!r}")


@dataclass(frozen=True)
class Normalization:
    """`normalize` as constants, for a graph that takes RGB pixels (an exported model): channels taken in
    `channels` order (RGB indices), then (x - mean) / std per channel."""

    channels: tuple[int, int, int]
    mean: np.ndarray  # (3,) float32
    std: np.ndarray  # (3,) float32


def normalization(mode: PreprocessMode) -> Normalization:
    if mode == "caffe":
        return Normalization((2, 1, 0), CAFFE_BGR_MEAN, np.ones(3, np.float32))
    if mode == "tf":
        return Normalization((0, 1, 2), np.full(3, 127.5, np.float32), np.full(3, 127.5, np.float32))
    if mode == "lite":
        return Normalization((0, 1, 2), np.full(3, 127.0, np.float32), np.full(3, 128.0, np.float32))
    if mode == "torch":
        return Normalization((0, 1, 2), TORCH_MEAN * 255, TORCH_STD * 255)
    raise ValueError(f"unknown preprocessing mode {mode!r}")


def preprocess(image: Image.Image, config: DataConfig, *, fast: bool = False) -> np.ndarray:
    """One model input, float32 (size, size, 3), from an RGB image (`fast`: see `resize_and_crop`)."""
    return normalize(resize_and_crop(image, config, fast=fast), config.mode)


def model_input(
    source: ImageSource,
    config: DataConfig,
    *,
    max_pixels: int,
    decode: DecodeMode = "fast",
    budget: DecodeBudget | None = None,
) -> tuple[InputInfo, np.ndarray]:
    """One photo as the model's input pixels, uint8 (size, size, 3) RGB: decode, then resize and crop
    (raises its `ImageError`). Engines take these and scale them as the weights expect (`Engine`).

    `decode="fast"` decodes and resizes only at the resolution the model needs (see `data.images`);
    `"full"` decodes every pixel and resizes in one step, the exact ImageNet evaluation protocol. With
    `budget`, the decode waits for room in it, and holds it until the model's input is made."""
    with budget.admission() if budget else contextlib.nullcontext(None) as admit:
        decoded = decode_for(source, config, max_pixels=max_pixels, decode=decode, admit=admit)
        return decoded.info, pixels_for(decoded, config, decode=decode)


def decode_for(
    source: ImageSource,
    config: DataConfig,
    *,
    max_pixels: int,
    decode: DecodeMode,
    admit: Admit | None = None,
) -> DecodedImage:
    """The photo decoded as the model's preprocessing needs it (`model_input`'s first half)."""
    short_side = draft_short_side(config) if decode == "fast" else None
    return decode_image(source, max_pixels=max_pixels, min_short_side=short_side, admit=admit)


def pixels_for(decoded: DecodedImage, config: DataConfig, *, decode: DecodeMode) -> np.ndarray:
    """The model's input pixels from a decoded photo (`model_input`'s second half)."""
    try:
        return resize_and_crop(decoded.image, config, fast=decode == "fast")
    except (ValueError, OSError, MemoryError) as exc:  # Pillow's resize of a hostile photo
        raise UnsupportedImageError(f"cannot resize this image: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class Transform:
    """A model's whole preprocessing as one callable, as torchvision's `weights.transforms()` is: a decoded
    RGB image in, the model's float32 (size, size, 3) input out. `np.stack` a list of them for a batch."""

    config: DataConfig

    def __call__(self, image: Image.Image) -> np.ndarray:
        return preprocess(image, self.config)

    def __str__(self) -> str:
        return f"Transform({self.config.input_size}x{self.config.input_size}: {self.config.describe()})"


def create_transform(config: DataConfig) -> Transform:
    """The preprocessing a `DataConfig` describes (see `imagenet_zoo.resolve_data_config`)."""
    return Transform(config)
