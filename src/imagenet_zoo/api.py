"""The public entry points: load a classifier, or build a Keras model for transfer learning."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

from imagenet_zoo.classifier import Classifier
from imagenet_zoo.engines.base import Engine
from imagenet_zoo.engines.keras import KerasEngine
from imagenet_zoo.engines.openvino import PRECISIONS
from imagenet_zoo.errors import UnsupportedPrecisionError, UsageError
from imagenet_zoo.images import DEFAULT_MAX_PIXELS
from imagenet_zoo.registry import Pooling, RegisteredModel, Registry, default_registry
from imagenet_zoo.specs import ResizeMode

DEFAULT_MODEL = "efficientnet_lite0"
# OpenVINO is the default: same top-5 as Keras on the parity tests, 3-10x faster, no TensorFlow at run time.
ENGINES = ("openvino", "keras")
DEFAULT_ENGINE = "openvino"


def _lookup(name: str | os.PathLike[str], registry: Registry | None) -> RegisteredModel:
    return (registry or default_registry()).get(name)


def create_model(
    name: str | os.PathLike[str],
    *,
    weights: Literal["imagenet"] | Path | None = "imagenet",
    include_top: bool = True,
    pooling: Pooling = None,
    input_shape: tuple[int, int, int] | None = None,
    progress: bool = True,
    registry: Registry | None = None,
) -> Any:
    """A `keras.Model`, as `keras.applications` builds it: one signature for every model.

    `weights="imagenet"` fetches (or reuses) the cached pretrained weights; a path loads that file;
    None leaves random initial weights. With `include_top=False, pooling="avg"` the model returns one
    feature vector per image, for transfer learning. Classifier outputs are logits.
    """
    model = _lookup(name, registry)
    if include_top and input_shape is not None:
        raise UsageError("input_shape can only be changed with include_top=False")
    weights_path = (
        model.weights.fetch(model.spec, include_top=include_top, progress=progress)
        if weights == "imagenet"
        else weights
    )
    return model.build(
        weights=weights_path, include_top=include_top, pooling=pooling, input_shape=input_shape
    )


def load_engine(
    name: str | os.PathLike[str],
    *,
    engine: str = DEFAULT_ENGINE,
    precision: str = "fp32",
    features: bool = False,
    progress: bool = True,
    registry: Registry | None = None,
    threads: int | None = None,
) -> Engine:
    """The `core` of a classifier alone: preprocessed NHWC float32 in, logits (or pooled features) out.

    `threads` bounds OpenVINO's inference threads (default: all cores)."""
    model = _lookup(name, registry)
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    if precision not in PRECISIONS:
        raise UnsupportedPrecisionError(
            f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}"
        )
    if engine == "keras":
        if precision != "fp32":
            raise UnsupportedPrecisionError(
                "the keras engine runs fp32 only; bf16 and int8 need --engine openvino"
            )
        pooling: Pooling = "avg" if features else None
        keras_model = create_model(
            model.spec.name, include_top=not features, pooling=pooling, progress=progress, registry=registry
        )
        return KerasEngine(keras_model)
    from imagenet_zoo.engines.openvino import load_engine as load_openvino

    return load_openvino(model, precision, progress=progress, features=features, threads=threads)


def load(
    name: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    engine: str = DEFAULT_ENGINE,
    precision: str = "fp32",
    resize: ResizeMode | None = None,
    batch_size: int = 8,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    features: bool = False,
    progress: bool = True,
    registry: Registry | None = None,
) -> Classifier:
    """A ready classifier with pretrained weights: `load("resnet50").classify("cat.jpg", top=5)`.

    `engine="openvino"` (default) runs a cached OpenVINO model converted once from Keras, in `precision`
    fp32, bf16 or int8 (after `imagenet-zoo quantize`); `engine="keras"` runs Keras itself (fp32).
    `resize="squash"` resizes the whole photo to the input size (the classic tutorial); the default
    is each model's own evaluation protocol (shorter side, then centre crop). With `features=True` the
    engine returns the global-average-pooled penultimate features instead of logits (use
    `Classifier.iter_outputs`), as `include_top=False, pooling="avg"` does in Keras.
    """
    spec = _lookup(name, registry).spec
    runner = load_engine(
        spec.name, engine=engine, precision=precision, features=features, progress=progress, registry=registry
    )
    data_config = (
        spec.data_config if resize is None else dataclasses.replace(spec.data_config, resize_mode=resize)
    )
    return Classifier(
        spec, runner, data_config=data_config, batch_size=batch_size, max_pixels=max_pixels, workers=workers
    )
