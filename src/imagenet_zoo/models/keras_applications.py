"""The shared builder for families that use Keras's own `keras.applications` architectures unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagenet_zoo.model_types import ModelBuilder, Pooling, RegisteredModel
from imagenet_zoo.models._keras import import_keras
from imagenet_zoo.models.described import Described
from imagenet_zoo.specs import ModelSpec, WeightsFile
from imagenet_zoo.weights.keras_h5 import read_legacy_h5
from imagenet_zoo.weights.store import DownloadedWeights

KERAS_WEIGHTS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


def keras_weights_file(folder: str, model: str, md5: str, size: int, *, notop: bool = False) -> WeightsFile:
    """An official Keras weights file, named and hosted as `keras.applications` names and hosts it."""
    filename = f"{model}_weights_tf_dim_ordering_tf_kernels{'_notop' if notop else ''}.h5"
    return WeightsFile(filename, md5, size, url=f"{KERAS_WEIGHTS_BASE}{folder}/{filename}")


def keras_application(constructor: str) -> ModelBuilder:
    """A builder for `keras.applications.<constructor>`, loading a legacy-HDF5 weights file if given."""

    def build(
        *,
        weights: Path | None,
        include_top: bool,
        pooling: Pooling,
        input_shape: tuple[int, int, int] | None,
    ) -> Any:
        keras = import_keras()
        return getattr(keras.applications, constructor)(
            weights=None if weights is None else str(weights),
            include_top=include_top,
            pooling=pooling,
            input_shape=input_shape,
            # Logits out: softmax happens in post-processing, the same way for every model and engine.
            classifier_activation=None,
        )

    return build


def keras_application_model(spec: ModelSpec, constructor: str) -> RegisteredModel:
    """A model of `keras.applications.<constructor>` with its official (downloaded, legacy HDF5) weights."""
    return RegisteredModel(
        spec, keras_application(constructor), DownloadedWeights(), Described(spec.name, read_legacy_h5)
    )
