"""Test doubles shared by the tests: a fake engine (registered like any engine, so the service, the jobs and
the CLI find it through the engine registry), tiny bundles, and small photos.

`tests/plugins/` holds a package that declares `FAKE_ENGINE` through the `imagenet_zoo.engines` entry
point, as a third-party engine would (`engine_plugin_path`)."""

from __future__ import annotations

import io
import itertools
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import imagenet_zoo
from imagenet_zoo.engines.base import Engine
from imagenet_zoo.engines.registry import EngineRequest, EngineSpec, engine_registry
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.pipeline import LoadConfig


class FakeEngine(Engine):
    """Logits that depend on the input pixels (class = mean brightness bucket); optionally slow or
    blocking. Takes uint8 pixels, as every engine does."""

    name = "fake"

    def __init__(
        self, delay_s: float = 0.0, gate: threading.Event | None = None, classes: int = 1000
    ) -> None:
        self.delay_s, self.gate, self.classes, self.calls = delay_s, gate, classes, 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay_s)
        assert batch.dtype == np.uint8, batch.dtype
        logits = np.zeros((len(batch), self.classes), np.float32)
        for i, x in enumerate(batch):
            logits[i, int(x.mean() / 127.5 * 400) % self.classes] = 10.0
        return logits


def _fake_loader(model: RegisteredModel, request: EngineRequest) -> FakeEngine:
    return FakeEngine(classes=model.spec.num_classes)


# What a third-party engine declares: found by every process through its entry point.
FAKE_ENGINE = EngineSpec(name="fake", summary="fake (the tests' stand-in)", load=_fake_loader)


def _gpu_loader(model: RegisteredModel, request: EngineRequest) -> FakeEngine:
    """In a Ray actor, loads only if Ray gave the actor a GPU: a job on a GPU engine must ask for one."""
    import ray

    if not ray.is_initialized():  # not on a cluster
        return FakeEngine(classes=model.spec.num_classes)
    assigned = ray.get_runtime_context().get_assigned_resources()
    if assigned.get("GPU", 0) < 1:
        raise RuntimeError(f"a GPU engine loaded without a GPU: {assigned}")
    return FakeEngine(classes=model.spec.num_classes)


# A GPU engine for the cluster path on a machine without one (Ray is told the machine has GPUs).
FAKE_GPU_ENGINE = EngineSpec(
    name="fake-gpu", summary="fake-gpu (the tests' stand-in for a GPU engine)", load=_gpu_loader,
    devices=("cuda",), device_available=lambda device: True,
)  # fmt: skip

_names = itertools.count()


def register_fake(engine: Any = None, *, load: Any = None, **capabilities: Any) -> str:
    """An engine spec, registered in this process, whose every load is `engine` (for tests that hold the
    engine: blocking, slow, recording), or `load(model, request)`; its name."""
    name = f"fake-{next(_names)}"
    loader = load or (lambda model, request: engine)
    engine_registry().register(EngineSpec(name=name, summary=name, load=loader, **capabilities))
    return name


def fake_settings(engine: Any = None, **overrides: Any) -> Any:
    """Service settings whose models run on a fake engine (one instance for every model)."""
    from imagenet_zoo.server import Settings

    name = register_fake(engine or FakeEngine())
    load = overrides.pop("load", LoadConfig())
    max_pixels = overrides.pop("max_pixels", Settings().load.max_pixels)
    return replace(Settings(load=replace(load, engine=name, max_pixels=max_pixels)), **overrides)


def renamed(model: RegisteredModel, name: str) -> RegisteredModel:
    """A copy of a zoo model under another name (several served models, one set of weights)."""
    return replace(model, spec=replace(model.spec, name=name, aliases=()))


def constant_bundle(folder: Path, answer: str, classes: list[str] | None = None) -> Path:
    """A tiny bundle whose dense head always answers `answer` (of `classes`, default "dog", "other"): two
    are told apart only by what they say, as two trained bundles of one task would be."""
    keras = imagenet_zoo.models._keras.import_keras()  # type: ignore[attr-defined]
    from imagenet_zoo.models.bundle import FEATURES_LAYER, save_bundle

    classes = classes or ["dog", "other"]
    inputs = keras.Input((224, 224, 3))
    features = keras.layers.Identity(name=FEATURES_LAYER)(keras.layers.GlobalAveragePooling2D()(inputs))
    head = keras.layers.Dense(len(classes), name="predictions")
    model = keras.Model(inputs, head(features), name="bundle")
    bias = np.full(len(classes), -4.0, np.float32)
    bias[classes.index(answer)] = 4.0
    head.set_weights([np.zeros((3, len(classes)), np.float32), bias])
    base = imagenet_zoo.get_model_spec("efficientnet_lite0")
    return save_bundle(
        folder, model.save, num_params=model.count_params(), classes=classes, base=base, extra={}
    )


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def engine_plugin_path() -> Path:
    """The folder that, on `sys.path` or PYTHONPATH, makes the fake engine an installed engine plugin."""
    return Path(__file__).parent / "plugins"
