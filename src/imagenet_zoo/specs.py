"""Model metadata as typed data: what a network expects as input and where its weights come from.

Preprocessing is derived from `DataConfig` alone (see `preprocess.py`), so a model's input contract lives
in one place instead of being hidden in function bodies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from imagenet_zoo.data.labels import ClassLabel, imagenet1k

PreprocessMode = Literal["caffe", "tf", "lite", "torch"]
Interpolation = Literal["nearest", "bilinear", "bicubic"]


def load_option(
    default: Any,
    help: str | Callable[[], str],
    *,
    choices: Callable[[], Sequence[str]] | None = None,
    most: int | None = None,
    answers: bool = False,
) -> Any:
    """A load option's field (`pipeline.LoadConfig`, `engines.registry.EngineOptions`) that is also a
    command-line flag (`--batch-size` for `batch_size`): its help ("{default}" is the command's default),
    its choices or, for a count, its upper bound; `answers` when it changes what a job writes, which makes
    it part of the job's identity (`jobs.identity`)."""
    metadata = {"help": help, "choices": choices, "most": most, "answers": answers}
    return field(default=default, metadata=metadata)


ResizeMode = Literal["crop", "squash"]
RESIZE_MODES: tuple[ResizeMode, ...] = ("crop", "squash")
# What a pipeline gives and its engine computes: class logits (classify), or pooled features (extract,
# train).
Task = Literal["classify", "features"]
# How a heatmap of a class's evidence is computed (see `imagenet_zoo.explain`): "cam" where the head is
# global average pooling + a linear layer (the map is exact and comes from the same forward pass),
# "grad-cam" where it is not (VGG's dense layers, a neighbour-vote head), which needs gradients.
ExplainMethod = Literal["cam", "grad-cam"]

MAX_CLASSES = 100_000  # the most classes a model may have (a bundle's manifest is refused beyond)

PREPROCESS_MODES: dict[str, str] = {
    "caffe": "BGR, minus ImageNet mean (Keras 'caffe')",
    "tf": "RGB scaled to [-1, 1] (Keras 'tf')",
    "lite": "RGB, (x - 127) / 128",
    "torch": "RGB in [0, 1], minus ImageNet mean, over std (Keras 'torch', torchvision)",
}


@dataclass(frozen=True)
class DataConfig:
    """Everything needed to turn a decoded RGB image into a model's input tensor.

    `crop` resizes the shorter side to `floor(input_size / crop_pct)` and takes the centre
    `input_size` square (the standard ImageNet evaluation protocol); `squash` resizes the whole
    image to `input_size` x `input_size`, ignoring aspect ratio, as the classic Keras tutorial did.
    """

    input_size: int
    mode: PreprocessMode
    interpolation: Interpolation = "bilinear"
    crop_pct: float = 0.875
    resize_mode: ResizeMode = "crop"

    @property
    def resize_shorter_to(self) -> int:
        return math.floor(self.input_size / self.crop_pct)

    def describe(self) -> str:
        if self.resize_mode == "crop":
            resize = f"shorter side {self.resize_shorter_to} {self.interpolation}, centre crop"
        else:
            resize = f"squash {self.interpolation}"
        return f"{resize}; {self.mode}"


@dataclass(frozen=True)
class WeightsFile:
    """One weights file: where it is published and how to recognise it.

    `url` is None for weights that ship inside a Python package. The hash is checked on every download
    and import: an MD5 (32 hex digits, as Keras publishes), a SHA-256 (64), or the start of a SHA-256
    (8 to 63 digits, as torchvision names its files, e.g. `squeezenet1_1-b8a52dc0.pth`).
    """

    filename: str
    hash: str
    size: int
    url: str | None = None

    @property
    def hash_algorithm(self) -> str:
        return "md5" if len(self.hash) == 32 else "sha256"

    def matches(self, digest: str) -> bool:
        """Whether a hex digest (in `hash_algorithm`) is this file's: whole, or by its published prefix."""
        return digest == self.hash if len(self.hash) in (32, 64) else digest.startswith(self.hash)


@dataclass(frozen=True)
class PublishedAccuracy:
    """Published single-crop ImageNet-1k validation accuracy, in percent."""

    top1: float
    top5: float | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its input contract, weights, size and provenance."""

    name: str
    family: str
    data_config: DataConfig
    weights: WeightsFile
    num_params: int  # learnable parameters (BatchNorm moving statistics are not counted)
    gflops: float  # 2 x multiply-adds per image (convolutions and matrix multiplies)
    accuracy: PublishedAccuracy
    license: str
    source: str
    weights_notop: WeightsFile | None = None
    aliases: tuple[str, ...] = ()
    explain_method: ExplainMethod = "cam"
    # What each output means, in output order: ImageNet-1k's classes, or a bundle's own.
    labels: tuple[ClassLabel, ...] = field(default_factory=imagenet1k, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def weights_file(self, *, include_top: bool = True) -> WeightsFile:
        if include_top or self.weights_notop is None:
            return self.weights
        return self.weights_notop
