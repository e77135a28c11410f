"""The reference engine: the Keras model itself, on the TensorFlow backend (fp32; Grad-CAM too)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from imagenet_zoo.data.preprocess import normalize
from imagenet_zoo.engines.base import Engine, pixel_batch
from imagenet_zoo.engines.explain import CamEngine, GradCamEngine, cam_model
from imagenet_zoo.engines.network import keras_model, weights_for
from imagenet_zoo.engines.registry import EngineRequest, EngineSpec
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.specs import PreprocessMode


class KerasEngine:
    """A Keras model, its pixels scaled as its weights expect (the tutorial's `preprocess_input`); calls
    from several threads take turns (one graph, all cores on each call)."""

    name = "keras"

    def __init__(self, model: Any, mode: PreprocessMode) -> None:
        self._model = model
        self._mode = mode
        self._turn = threading.Lock()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The (rows, classes) output: a CAM model's class maps are left out."""
        outputs = self._predicted(batch)
        if isinstance(outputs, (list, tuple)):
            outputs = next(output for output in outputs if np.ndim(output) == 2)
        return np.asarray(outputs, dtype=np.float32)

    def infer_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of a model with several (a CAM model: logits and class maps)."""
        return [np.asarray(out, dtype=np.float32) for out in self._predicted(batch)]

    def _predicted(self, batch: np.ndarray) -> Any:
        scaled = normalize(pixel_batch(batch), self._mode)
        # predict_on_batch runs the compiled graph without `predict`'s progress bar and dataset set-up.
        with self._turn:
            return self._model.predict_on_batch(scaled)


def load(model: RegisteredModel, request: EngineRequest) -> Engine:
    network, mode = keras_model(model, request), model.spec.data_config.mode
    if not request.explain:
        return KerasEngine(network, mode)
    if model.spec.explain_method == "cam":
        cam = cam_model(network)
        return CamEngine(KerasEngine(cam.network, mode), cam.head)
    return GradCamEngine(network, mode)


ENGINE = EngineSpec(
    name="keras",
    summary="keras (the reference: the Keras model itself, fp32; Grad-CAM for any head)",
    load=load,
    requires=("tensorflow",),
    extra="tensorflow",
    explain_methods=frozenset({"cam", "grad-cam"}),
    prepare=weights_for,
)
