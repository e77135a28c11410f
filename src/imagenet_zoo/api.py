"""The public entry points (the factory): resolve a model, build its Keras network, load a classifier or a
feature extractor, and derive its preprocessing.

A model is named by a registered name or alias (`resnet50`, `lite0`), or given as a bundle folder. Folders
are resolved here, every time, and never added to a registry: a bundle is reported under its path, so two
bundles can never shadow each other or a zoo model.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, overload

from imagenet_zoo.classifier import Classifier, FeatureExtractor, FeatureSet
from imagenet_zoo.data.images import DEFAULT_MAX_PIXELS, DecodeMode, ImageSource
from imagenet_zoo.engines.base import Engine
from imagenet_zoo.engines.keras import KerasEngine
from imagenet_zoo.engines.openvino import PRECISIONS
from imagenet_zoo.errors import UnknownModelError, UnsupportedPrecisionError, UsageError
from imagenet_zoo.model_types import Pooling, RegisteredModel
from imagenet_zoo.registry import DEFAULT_MODEL, Registry, default_registry
from imagenet_zoo.specs import DataConfig, ResizeMode

# OpenVINO is the default: same top-5 as Keras on the parity tests, 3-10x faster, no TensorFlow at run time.
ENGINES = ("openvino", "keras")
DEFAULT_ENGINE = "openvino"

ModelRef = str | os.PathLike[str] | RegisteredModel


def resolve_model(model: ModelRef, *, registry: Registry | None = None) -> RegisteredModel:
    """A model by registered name or alias, or the bundle in a folder (`str` or `Path`).

    A name the registry knows wins over a folder of the same name in the working directory: write
    `./resnet50` for the folder. A bundle's reported name is its path, which no zoo name can equal.
    """
    if isinstance(model, RegisteredModel):
        return model
    text = os.fspath(model)
    registered = None if isinstance(model, os.PathLike) else (registry or default_registry()).find(text)
    if registered is not None:
        return registered
    from imagenet_zoo.transfer.bundles import is_bundle, load_bundle

    if is_bundle(text):
        return load_bundle(Path(text), name=bundle_name(text))
    known = ", ".join((registry or default_registry()).names())
    raise UnknownModelError(f"unknown model {text!r}; choose one of: {known}, or a bundle folder")


def bundle_name(folder: str) -> str:
    """The name a bundle is reported under: its path as given, always with a separator (`./dogs`)."""
    path = os.path.normpath(folder)
    return path if os.sep in path else os.path.join(".", path)


def resolve_data_config(model: ModelRef, *, resize: ResizeMode | None = None) -> DataConfig:
    """The input contract a model's weights were trained with (as timm's `resolve_data_config`);
    `resize="squash"` keeps the rest of it but resizes the whole photo, as the classic Keras tutorial did."""
    config = resolve_model(model).spec.data_config
    return config if resize is None else dataclasses.replace(config, resize_mode=resize)


def create_model(
    model: ModelRef,
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
    entry = resolve_model(model, registry=registry)
    if include_top and input_shape is not None:
        raise UsageError("input_shape can only be changed with include_top=False")
    weights_path = (
        entry.weights.fetch(entry.spec, include_top=include_top, progress=progress)
        if weights == "imagenet"
        else weights
    )
    return entry.build(
        weights=weights_path, include_top=include_top, pooling=pooling, input_shape=input_shape
    )


def load_engine(
    model: ModelRef,
    *,
    engine: str = DEFAULT_ENGINE,
    precision: str = "fp32",
    features: bool = False,
    progress: bool = True,
    registry: Registry | None = None,
    threads: int | None = None,
    explain: bool = False,
) -> Engine:
    """The `core` of a classifier alone: preprocessed NHWC float32 in, logits (or pooled features) out.

    `threads` bounds OpenVINO's inference threads (default: all cores). `explain` gives an engine that
    also computes heatmaps (`imagenet_zoo.explain.ExplainingEngine`): CAM on either engine, Grad-CAM
    (models whose spec says so) on Keras only."""
    entry = resolve_model(model, registry=registry)
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
        keras_model = create_model(entry, include_top=not features, pooling=pooling, progress=progress)
        if explain:
            from imagenet_zoo.engines.explain import keras_explainer

            return keras_explainer(keras_model, entry.spec.explain_method)
        return KerasEngine(keras_model)
    from imagenet_zoo.engines.openvino import load_engine as load_openvino

    return load_openvino(
        entry, precision, progress=progress, features=features, threads=threads, explain=explain
    )


@overload
def load(
    model: ModelRef = ...,
    *,
    engine: str = ...,
    precision: str = ...,
    resize: ResizeMode | None = ...,
    batch_size: int = ...,
    max_pixels: int = ...,
    workers: int | None = ...,
    decode: DecodeMode = ...,
    features: Literal[False] = ...,
    explain: bool = ...,
    progress: bool = ...,
    registry: Registry | None = ...,
) -> Classifier: ...
@overload
def load(
    model: ModelRef = ...,
    *,
    engine: str = ...,
    precision: str = ...,
    resize: ResizeMode | None = ...,
    batch_size: int = ...,
    max_pixels: int = ...,
    workers: int | None = ...,
    decode: DecodeMode = ...,
    features: Literal[True],
    explain: Literal[False] = ...,
    progress: bool = ...,
    registry: Registry | None = ...,
) -> FeatureExtractor: ...


def load(
    model: ModelRef = DEFAULT_MODEL,
    *,
    engine: str = DEFAULT_ENGINE,
    precision: str = "fp32",
    resize: ResizeMode | None = None,
    batch_size: int = 8,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    decode: DecodeMode = "fast",
    features: bool = False,
    explain: bool = False,
    progress: bool = True,
    registry: Registry | None = None,
) -> Classifier | FeatureExtractor:
    """A ready classifier with pretrained weights: `load("resnet50").classify("cat.jpg", top=5)`.

    `engine="openvino"` (default) runs a cached OpenVINO model converted once from Keras, in `precision`
    fp32, bf16 or int8 (after `imagenet-zoo quantize`); `engine="keras"` runs Keras itself (fp32).
    `resize="squash"` resizes the whole photo to the input size (the classic tutorial); the default
    is each model's own evaluation protocol (shorter side, then centre crop). With `features=True` it is
    a `FeatureExtractor` instead: global-average-pooled penultimate features, as `include_top=False,
    pooling="avg"` gives in Keras (`load(..., features=True).extract(photos)`). `decode="fast"` (default)
    decodes large JPEGs at the reduced scale the model needs; `decode="full"` decodes every pixel, the
    exact ImageNet evaluation protocol. With `explain=True` the classifier can also draw where the evidence
    for a class lies (`classify(..., explain=True)`; see `imagenet_zoo.explain`).
    """
    entry = resolve_model(model, registry=registry)
    if features and explain:
        raise UsageError("a feature extractor has no classes to explain")
    runner = load_engine(
        entry, engine=engine, precision=precision, features=features, progress=progress, explain=explain
    )
    data_config = resolve_data_config(entry, resize=resize)
    kind = FeatureExtractor if features else Classifier
    return kind(
        entry.spec, runner, data_config=data_config, batch_size=batch_size, max_pixels=max_pixels,
        workers=workers, decode=decode,
    )  # fmt: skip


def extract_features(
    inputs: Iterable[ImageSource],
    model: ModelRef = DEFAULT_MODEL,
    *,
    engine: str = DEFAULT_ENGINE,
    precision: str = "fp32",
    batch_size: int = 16,
    progress: bool = True,
) -> FeatureSet:
    """Pooled features of photos in one call: `load(model, features=True).extract(inputs)`."""
    extractor = load(
        model, engine=engine, precision=precision, batch_size=batch_size, features=True, progress=progress
    )
    return extractor.extract(inputs)
