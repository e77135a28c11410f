"""The reference engine: the Keras model itself, on the TensorFlow backend (fp32; CAM and Grad-CAM too)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from imagenet_zoo.data.preprocess import normalize
from imagenet_zoo.engines.base import Engine, pixel_batch
from imagenet_zoo.engines.explain import cam_model, class_maps, grad_cam_model
from imagenet_zoo.engines.network import keras_model, weights_for
from imagenet_zoo.engines.registry import EngineRequest, EngineSpec
from imagenet_zoo.explain import ClassChoice, explained_classes
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.specs import ExplainMethod, PreprocessMode


class KerasEngine(Engine):
    """A Keras model, its pixels scaled as its weights expect (the tutorial's `preprocess_input`); calls
    from several threads take turns (one graph, all cores on each call)."""

    name = "keras"

    def __init__(self, model: Any, mode: PreprocessMode) -> None:
        self._model = model
        self._mode = mode
        self._turn = threading.Lock()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The (rows, classes) output: a heatmap model's feature map is left out."""
        outputs = self._predicted(batch)
        if isinstance(outputs, (list, tuple)):
            outputs = next(output for output in outputs if np.ndim(output) == 2)
        return np.asarray(outputs, dtype=np.float32)

    def _predicted(self, batch: np.ndarray) -> Any:
        # predict_on_batch runs the compiled graph without `predict`'s progress bar and dataset set-up.
        with self._turn:
            return self._model.predict_on_batch(self._scaled(batch))

    def _scaled(self, batch: np.ndarray) -> np.ndarray:
        return normalize(pixel_batch(batch), self._mode)


class KerasCamEngine(KerasEngine):
    """A CAM model (`explain.cam_model`): logits and the last feature map from one forward pass."""

    explain_method: ExplainMethod = "cam"

    def __init__(self, network: Any, mode: PreprocessMode) -> None:
        cam = cam_model(network)
        super().__init__(cam.network, mode)
        self._head = cam.head

    def explain(self, batch: np.ndarray, choice: ClassChoice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        first, second = (np.asarray(output, dtype=np.float32) for output in self._predicted(batch))
        logits, features = (first, second) if first.ndim == 2 else (second, first)
        return class_maps(logits, features, self._head, choice)


class KerasGradCamEngine(KerasEngine):
    """Logits and the last feature map, with gradients for `explain` (TensorFlow computes them; OpenVINO
    cannot): each feature channel weighted by the mean gradient of the class's logit."""

    explain_method: ExplainMethod = "grad-cam"

    def __init__(self, network: Any, mode: PreprocessMode) -> None:
        super().__init__(grad_cam_model(network), mode)

    def explain(self, batch: np.ndarray, choice: ClassChoice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import tensorflow as tf

        scaled = self._scaled(batch)
        with self._turn:
            with tf.GradientTape() as tape:
                logits, features = self._model(tf.constant(scaled, tf.float32), training=False)
                classes = explained_classes(logits.numpy(), choice)
                evidence = tf.reduce_sum(tf.gather(logits, classes, axis=1, batch_dims=1))
            gradients = tape.gradient(evidence, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        maps = tf.reduce_sum(weights * features, axis=-1)
        return logits.numpy().astype(np.float32), maps.numpy().astype(np.float32), classes


def load(model: RegisteredModel, request: EngineRequest) -> Engine:
    network, mode = keras_model(model, request), model.spec.data_config.mode
    if not request.explain:
        return KerasEngine(network, mode)
    if model.spec.explain_method == "cam":
        return KerasCamEngine(network, mode)
    return KerasGradCamEngine(network, mode)


ENGINE = EngineSpec(
    name="keras",
    summary="keras (the reference: the Keras model itself, fp32; Grad-CAM for any head)",
    load=load,
    requires=("tensorflow",),
    extra="tensorflow",
    explain_methods=frozenset({"cam", "grad-cam"}),
    prepare=weights_for,
)
