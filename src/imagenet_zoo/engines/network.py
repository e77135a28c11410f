"""The Keras network a request asks for (logits or pooled features, pretrained or random weights) and its
graph description (`graph.py`): what the OpenVINO and torch engines and every exported format are made
from. Neither TensorFlow nor a particular Keras backend is needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.engines.graph import Graph, translate
from imagenet_zoo.engines.registry import EngineRequest
from imagenet_zoo.model_types import Pooling, RegisteredModel


def keras_model(model: RegisteredModel, request: EngineRequest) -> Any:
    """The model's Keras network for a request: logits, or pooled features; pretrained or random weights."""
    include_top = request.task == "classify"
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
    return model.weights.fetch(model.spec, include_top=request.task == "classify", progress=request.progress)


def network_graph(model: RegisteredModel, request: EngineRequest) -> Graph:
    """The graph description of the network `request` asks for (heatmap variants are the engines' own)."""
    return translate(keras_model(model, request))
