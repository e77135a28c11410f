"""`imagenet-zoo selftest`: prove on this machine that every engine and precision gives the right answers.

Every check runs the whole pipeline (decode the packaged PNGs, preprocess, infer, softmax), because a
preprocessing mismatch is the most common silent failure. EfficientNet-Lite0 is compared with reference
probabilities shipped in the package; every other registered engine, in every precision it can run here,
is compared with the Keras model (the reference) for every model whose weights are on this machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import as_file, files

import numpy as np
from PIL import Image

from imagenet_zoo.api import load_engine
from imagenet_zoo.classifier import Classifier
from imagenet_zoo.data.images import decode_image
from imagenet_zoo.engines.registry import AUTO, EngineSpec, engine_registry, get_engine
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.registry import Registry, default_registry

PHOTOS = ("coffee.png", "chelsea.png")
LITE0_REFERENCE = "efficientnet_lite0.npz"
# Largest allowed softmax-probability difference. fp32 must match to float noise; bf16 and int8 round
# by design, so they must agree on the top-1 class and stay close.
TOLERANCE = {"fp32": 1e-4, "bf16": 0.05, "fp16": 0.05, "int8": 0.1}
REFERENCE_ENGINE = "keras"  # the Keras model itself: what every other engine must agree with


@dataclass(frozen=True)
class Check:
    model: str
    engine: str
    precision: str
    reference: str
    max_abs_diff: float
    top1_match: bool
    top5_match: bool

    @property
    def passed(self) -> bool:
        strict = self.precision == "fp32"
        return (
            self.max_abs_diff < TOLERANCE.get(self.precision, max(TOLERANCE.values()))
            and self.top1_match
            and (self.top5_match or not strict)
        )


def reference_photos() -> list[Image.Image]:
    folder = files(__package__)
    images = []
    for name in PHOTOS:
        with as_file(folder.joinpath(name)) as path:
            images.append(decode_image(path).image)
    return images


def stored_lite0_probabilities() -> np.ndarray:
    with as_file(files(__package__).joinpath(LITE0_REFERENCE)) as path, np.load(path) as data:
        return np.asarray(data["probabilities"])


def probabilities(model: RegisteredModel, engine: str, precision: str) -> np.ndarray:
    runner = load_engine(model, engine=engine, precision=precision, progress=False)
    return Classifier(model.spec, runner).predict_proba(reference_photos())


def check_against(
    model: str, engine: str, precision: str, reference: str, ours: np.ndarray, expected: np.ndarray
) -> Check:
    def top(p: np.ndarray, k: int) -> list[list[int]]:
        return np.argsort(-p, axis=1, kind="stable")[:, :k].tolist()  # type: ignore[no-any-return]

    return Check(
        model,
        engine,
        precision,
        reference,
        float(np.abs(ours - expected).max()),
        top(ours, 1) == top(expected, 1),
        top(ours, 5) == top(expected, 5),
    )


def precisions_here(engine: EngineSpec, model: RegisteredModel) -> list[str]:
    """The engine's precisions this machine runs, the calibrated ones once they are made."""
    device = engine.resolve_device(AUTO)
    calibration = engine.calibration
    return [
        p
        for p in engine.precisions
        if engine.unavailable(p, device) is None
        and (
            p not in engine.calibrated_precisions
            or (calibration and calibration.is_ready(model, p, random_weights=False))
        )
    ]


def skipped_engines() -> list[str]:
    """Why registered engines are left out here: their packages are not installed."""
    return [
        f"{spec.name}: not installed ({spec.how_to_install})"
        for spec in engine_registry()
        if not spec.installed
    ]


def run(registry: Registry | None = None) -> Iterator[Check]:
    """Every installed engine against the Keras model; without the Keras engine, EfficientNet-Lite0's
    engines against the stored reference alone."""
    registry = registry or default_registry()
    with_keras = get_engine(REFERENCE_ENGINE).installed
    for model in registry:
        lite0 = model.spec.name == "efficientnet_lite0"
        if not model.weights_available or not (with_keras or lite0):
            continue
        if with_keras:
            reference, compared_with = probabilities(model, REFERENCE_ENGINE, "fp32"), "keras fp32"
            if lite0:
                yield check_against(
                    model.spec.name,
                    REFERENCE_ENGINE,
                    "fp32",
                    "stored reference",
                    reference,
                    stored_lite0_probabilities(),
                )
        else:
            reference, compared_with = stored_lite0_probabilities(), "stored reference"
        for engine in engine_registry():
            if engine.name == REFERENCE_ENGINE or not engine.installed:
                continue
            for precision in precisions_here(engine, model):
                ours = probabilities(model, engine.name, precision)
                yield check_against(model.spec.name, engine.name, precision, compared_with, ours, reference)
