"""The public entry points: load a classifier, or build a Keras model for transfer learning."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from imagenet_zoo.classifier import Classifier
from imagenet_zoo.engines.keras import KerasEngine
from imagenet_zoo.errors import UsageError
from imagenet_zoo.images import DEFAULT_MAX_PIXELS
from imagenet_zoo.registry import Pooling, RegisteredModel, Registry, default_registry
from imagenet_zoo.specs import ResizeMode

DEFAULT_MODEL = "efficientnet_lite0"
ENGINES = ("keras",)


def _lookup(name: str, registry: Registry | None) -> RegisteredModel:
    return (registry or default_registry()).get(name)


def create_model(
    name: str,
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


def load(
    name: str = DEFAULT_MODEL,
    *,
    engine: str = "keras",
    resize: ResizeMode | None = None,
    batch_size: int = 8,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
    registry: Registry | None = None,
) -> Classifier:
    """A ready classifier with pretrained weights: `load("resnet50").classify("cat.jpg", top=5)`.

    `resize="squash"` resizes the whole photo to the input size (the classic tutorial); the default
    is each model's own evaluation protocol (shorter side, then centre crop).
    """
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    spec = _lookup(name, registry).spec
    keras_model = create_model(spec.name, progress=progress, registry=registry)
    data_config = (
        spec.data_config if resize is None else dataclasses.replace(spec.data_config, resize_mode=resize)
    )
    return Classifier(
        spec, KerasEngine(keras_model), data_config=data_config, batch_size=batch_size, max_pixels=max_pixels
    )
