"""The reference engine: the Keras model itself, on the TensorFlow backend (fp32; Grad-CAM too)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.engines.base import Engine
from imagenet_zoo.engines.explain import CamEngine, GradCamEngine, cam_model
from imagenet_zoo.engines.registry import EngineRequest, EngineSpec
from imagenet_zoo.model_types import Pooling, RegisteredModel


class KerasEngine:
    """A Keras model; calls from several threads take turns (one graph, all cores on each call)."""

    name = "keras"

    def __init__(self, model: Any) -> None:
        self._model = model
        self._turn = threading.Lock()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The (rows, classes) output: a CAM model's class maps are left out."""
        # predict_on_batch runs the compiled graph without `predict`'s progress bar and dataset set-up.
        with self._turn:
            outputs = self._model.predict_on_batch(batch)
        if isinstance(outputs, (list, tuple)):
            outputs = next(output for output in outputs if np.ndim(output) == 2)
        return np.asarray(outputs, dtype=np.float32)

    def infer_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of a model with several (a CAM model: logits and class maps)."""
        with self._turn:
            return [np.asarray(out, dtype=np.float32) for out in self._model.predict_on_batch(batch)]


def keras_model(model: RegisteredModel, request: EngineRequest) -> Any:
    """The model's Keras network for a request: logits, or pooled features; pretrained or random weights."""
    include_top = request.output == "logits"
    pooling: Pooling = None if include_top else "avg"
    weights = weights_for(model, request)
    network = model.build(weights=weights, include_top=include_top, pooling=pooling, input_shape=None)
    return drawn_weights(network) if request.random_weights else network


def drawn_weights(network: Any, seed: int = 0) -> Any:
    """The network with every weight drawn again with numpy, as Keras's default initializers draw them:
    Glorot-uniform kernels, zero biases, shifts and means, unit scales and variances. Keras on OpenVINO's
    backend computes each of its own initial values as a model of its own, compiled when the weights are
    first read: seconds for a network, where these take a few milliseconds."""
    rng = np.random.default_rng(seed)
    for variable in network.weights:
        shape = tuple(variable.shape)
        if variable.path.rsplit("/", 1)[-1] in ("gamma", "moving_variance"):
            value = np.ones(shape)
        elif len(shape) < 2:
            value = np.zeros(shape)
        else:
            receptive = int(np.prod(shape[:-2]))
            limit = np.sqrt(6 / ((shape[-2] + shape[-1]) * receptive))
            value = rng.uniform(-limit, limit, shape)
        variable.assign(value.astype(np.float32))
    return network


def weights_for(model: RegisteredModel, request: EngineRequest) -> Path | None:
    """The weights file a request loads, fetched now if needed (None: random weights)."""
    if request.random_weights:
        return None
    return model.weights.fetch(model.spec, include_top=request.output == "logits", progress=request.progress)


def load(model: RegisteredModel, request: EngineRequest) -> Engine:
    network = keras_model(model, request)
    if not request.explain:
        return KerasEngine(network)
    if model.spec.explain_method == "cam":
        cam = cam_model(network)
        return CamEngine(KerasEngine(cam.network), cam.head)
    return GradCamEngine(network)


ENGINE = EngineSpec(
    name="keras",
    summary="keras (the reference: the Keras model itself, fp32; Grad-CAM for any head)",
    load=load,
    requires=("tensorflow",),
    extra="tensorflow",
    explain_methods=frozenset({"cam", "grad-cam"}),
    prepare=weights_for,
)
