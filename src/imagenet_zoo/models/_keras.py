"""Importing Keras, only where a Keras model is asked for (the reference engine, `create_model`, training
a network's own layers): on the TensorFlow backend where TensorFlow is installed, else on OpenVINO's (the
`keras` extra), else on torch's. The default install has no Keras: the engines build the networks from
their shipped descriptions (`models.described`) and bundles from their files (`models.keras_archive`)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from importlib.util import find_spec
from typing import Any

from imagenet_zoo.errors import MissingExtraError, WeightsFormatError, install_hint
from imagenet_zoo.model_types import NamedLayerWeights

KERAS_EXTRA = "keras"


def import_keras() -> Any:
    """Keras, or `MissingExtraError` naming the extra that brings it (the default install has none: the
    engines build the networks from their shipped descriptions)."""
    if find_spec("keras") is None:
        raise MissingExtraError(f"this needs Keras: {install_hint(KERAS_EXTRA)}")
    os.environ.setdefault("KERAS_BACKEND", keras_backend())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with contextlib.nullcontext() if "keras" in sys.modules else _native_stderr_dropped():
        import keras
    # Its Python-side notices (retracing advice while training) are for TensorFlow developers, not users.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return keras


def keras_backend() -> str:
    """TensorFlow, the backend every Keras-based engine and training path is tested on, where it is
    installed; else OpenVINO or torch, which are enough to build a network, load its weights and translate
    it."""
    for backend in ("tensorflow", "openvino", "torch"):
        if find_spec(backend) is not None:
            return backend
    return "tensorflow"  # Keras's own default, and its own error naming what to install


def assign_layers(model: Any, layers: NamedLayerWeights, source: str) -> None:
    """Set each layer's weights from a file's arrays by layer name, which must cover them exactly."""
    with_weights = [layer for layer in model.layers if layer.weights]
    differ = sorted({layer.name for layer in with_weights} ^ set(layers))
    if differ:
        raise WeightsFormatError(f"{source} does not match the network's layers: {differ[:5]}")
    for layer in with_weights:
        if [a.shape for a in layers[layer.name]] != [tuple(w.shape) for w in layer.weights]:
            raise WeightsFormatError(f"{source}: shape mismatch for {layer.name}")
        layer.set_weights(list(layers[layer.name]))


@contextlib.contextmanager
def _native_stderr_dropped() -> Iterator[None]:
    """TensorFlow's C++ start-up lines ("oneDNN custom operations are on ...") are written to file
    descriptor 2 before its logging is set up, whatever TF_CPP_MIN_LOG_LEVEL says (TF 2.21): they are
    dropped while TensorFlow loads. Python errors are raised, not printed, so none is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
