"""The public entry points (the factory): resolve a model, build its Keras network, load a pipeline
(classifier or feature extractor) on an engine, and derive its preprocessing.

A model is named by a registered name or alias (`resnet50`, `lite0`), or given as a bundle folder. Folders
are resolved here, every time, and never added to a registry: a bundle is reported under its path, so two
bundles can never shadow each other or a zoo model. Engines are found through `engines.registry`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Unpack, overload

from imagenet_zoo.classifier import Classifier, FeatureExtractor, FeatureSet
from imagenet_zoo.data.images import ImageSource
from imagenet_zoo.engines.base import Engine
from imagenet_zoo.engines.registry import (
    AUTO,
    EngineChoice,
    EngineOptions,
    EngineRequest,
    EngineSpec,
    choose_engine,
    get_engine,
)
from imagenet_zoo.errors import UnknownModelError, UsageError
from imagenet_zoo.model_types import Pooling, RegisteredModel
from imagenet_zoo.models.bundle import is_bundle, load_bundle
from imagenet_zoo.pipeline import LoadConfig, LoadKeywords, ModelRef
from imagenet_zoo.registry import DEFAULT_MODEL, Registry, default_registry
from imagenet_zoo.specs import DataConfig, ResizeMode


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


@dataclasses.dataclass(frozen=True)
class LoadPlan:
    """A load configuration checked against its model and engine, before anything is loaded."""

    config: LoadConfig  # its engine and device as chosen, never "auto"; its resize the model's unless asked
    model: RegisteredModel
    engine: EngineSpec
    request: EngineRequest
    choice: EngineChoice

    def load_engine(self) -> Engine:
        return self.engine.load(self.model, self.request)

    def prepare(self) -> None:
        """Make what loading needs (a conversion, a download), without loading."""
        if self.engine.prepare is not None:
            self.engine.prepare(self.model, self.request)

    def load(self) -> Classifier | FeatureExtractor:
        """The pipeline: a `Classifier`, or a `FeatureExtractor` for `task="features"`."""
        kind = FeatureExtractor if self.config.task == "features" else Classifier
        data_config = resolve_data_config(self.model, resize=self.config.resize)
        return kind.configured(self.model.spec, self.load_engine(), self.config, data_config)


def check_config(
    config: LoadConfig,
    *,
    registry: Registry | None = None,
    progress: bool = True,
    random_weights: bool = False,
    photos: int | None = None,
) -> LoadPlan:
    """Refuse, saying why, what cannot be loaded: an unknown model or engine, a precision or device the
    engine lacks (or this machine lacks), a heatmap or features it cannot give. An `auto` engine or
    device is chosen here (`engines.registry.choose_engine`), for `photos` photos (None: many)."""
    model = resolve_model(config.model, registry=registry)
    choice = choose_engine(config.engine, config.device, photos=photos)
    resize = config.resize or model.spec.data_config.resize_mode
    config = dataclasses.replace(config, engine=choice.engine, device=choice.device, resize=resize)
    engine = get_engine(config.engine)
    if config.task == "features" and config.explain:
        raise UsageError("a feature extractor has no classes to explain")
    read_by_engines = dataclasses.fields(EngineOptions)
    request = EngineRequest(
        **{option.name: getattr(config, option.name) for option in read_by_engines},
        device=config.device,
        task=config.task,
        progress=progress,
        random_weights=random_weights,
    )
    engine.check(request, model.spec.explain_method, model=model.spec.name)
    engine.check_available(request.precision, request.device)
    return LoadPlan(config, model, engine, request, choice)


def load_engine(
    model: ModelRef,
    *,
    engine: str = AUTO,
    precision: str = "fp32",
    device: str = AUTO,
    features: bool = False,
    explain: bool = False,
    threads: int | None = None,
    progress: bool = True,
    registry: Registry | None = None,
) -> Engine:
    """The `core` of a pipeline alone: the model's input pixels in (uint8 NHWC RGB, resized and cropped:
    `Classifier.preprocess_images`), logits (or pooled features) out.

    `threads` bounds the engine's inference threads (default: all cores). `explain` gives an engine that
    also computes heatmaps (`Engine.explain`)."""
    config = LoadConfig(
        model=model,
        engine=engine,
        precision=precision,
        device=device,
        task="features" if features else "classify",
        explain=explain,
        threads=threads,
    )
    return check_config(config, registry=registry, progress=progress).load_engine()


def load_pipeline(
    config: LoadConfig,
    *,
    registry: Registry | None = None,
    progress: bool = True,
    random_weights: bool = False,
) -> Classifier | FeatureExtractor:
    """The pipeline a load configuration describes: a `Classifier`, or a `FeatureExtractor` for
    `task="features"` (checked first: see `check_config`)."""
    return check_config(config, registry=registry, progress=progress, random_weights=random_weights).load()


@overload
def load(
    model: ModelRef = ...,
    *,
    features: Literal[False] = ...,
    progress: bool = ...,
    registry: Registry | None = ...,
    **options: Unpack[LoadKeywords],
) -> Classifier: ...
@overload
def load(
    model: ModelRef = ...,
    *,
    features: Literal[True],
    progress: bool = ...,
    registry: Registry | None = ...,
    **options: Unpack[LoadKeywords],
) -> FeatureExtractor: ...


def load(
    model: ModelRef = DEFAULT_MODEL,
    *,
    features: bool = False,
    progress: bool = True,
    registry: Registry | None = None,
    **options: Unpack[LoadKeywords],
) -> Classifier | FeatureExtractor:
    """A ready classifier with pretrained weights: `load("resnet50").classify("cat.jpg", top=5)`.

    `engine` is one of the registered engines (`imagenet-zoo models` and `--engine`'s help list them):
    "openvino" runs a cached OpenVINO model built once from the network's graph, in `precision` fp32, bf16 or
    int8 (after `imagenet-zoo quantize`); "torch" runs a translated graph on an NVIDIA GPU ("cuda") or the
    CPU, in fp32, bf16 or fp16; "keras" runs Keras itself (fp32). The default, "auto", is torch on the GPU
    where there is one, else openvino. `device` is one of the engine's devices, or "auto".
    `resize="squash"` resizes the whole photo to the input size (the classic tutorial); the default is
    each model's own evaluation protocol (shorter side, then centre crop). With `features=True` it is a
    `FeatureExtractor` instead: global-average-pooled penultimate features, as
    `include_top=False, pooling="avg"` gives in Keras (`load(..., features=True).extract(photos)`).
    `decode="fast"` (default) decodes large JPEGs at the reduced scale the model needs; `decode="full"`
    decodes every pixel, the exact ImageNet evaluation protocol. With `explain=True` the classifier can
    also draw where the evidence for a class lies (`classify(..., explain=True)`, `imagenet_zoo.explain`).
    """
    config = LoadConfig(model=model, task="features" if features else "classify", **options)
    return load_pipeline(config, registry=registry, progress=progress)


def extract_features(
    inputs: Iterable[ImageSource],
    model: ModelRef = DEFAULT_MODEL,
    *,
    engine: str = AUTO,
    precision: str = "fp32",
    batch_size: int = 16,
    progress: bool = True,
) -> FeatureSet:
    """Pooled features of photos in one call: `load(model, features=True).extract(inputs)`."""
    extractor = load(
        model, engine=engine, precision=precision, batch_size=batch_size, features=True, progress=progress
    )
    return extractor.extract(inputs)
