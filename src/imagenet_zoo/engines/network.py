"""The network a request asks for (logits or pooled features, pretrained or random weights) as a graph
(`graph.py`): what the OpenVINO and torch engines and every exported format are made from. The zoo's
networks come from their shipped descriptions (`models.described`) and their weights files, a bundle from
its file (`models.keras_archive`), without Keras; the Keras engine's network is the Keras model itself
(`keras_model`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.engines.graph import Graph, translate
from imagenet_zoo.engines.registry import EngineRequest
from imagenet_zoo.errors import ModelTranslationError
from imagenet_zoo.model_types import Pooling, RegisteredModel
from imagenet_zoo.models.described import draw_weight


def keras_model(model: RegisteredModel, request: EngineRequest) -> Any:
    """The model's Keras network for a request: logits, or pooled features; pretrained or random weights."""
    include_top = request.task == "classify"
    pooling: Pooling = None if include_top else "avg"
    weights = weights_for(model, request)
    network = model.build(weights=weights, include_top=include_top, pooling=pooling, input_shape=None)
    return drawn_weights(network) if request.random_weights else network


def drawn_weights(network: Any, seed: int = 0) -> Any:
    """The network with every weight drawn again with numpy, as Keras's default initializers draw them
    (`described.draw_weight`). Keras on OpenVINO's backend computes each of its own initial values as a
    model of its own, compiled when the weights are first read: seconds for a network, where these take a
    few milliseconds."""
    rng = np.random.default_rng(seed)
    for variable in network.weights:
        name = variable.path.rsplit("/", 1)[-1]
        variable.assign(draw_weight(rng, name, tuple(variable.shape)))
    return network


def weights_for(model: RegisteredModel, request: EngineRequest) -> Path | None:
    """The weights file a request loads, fetched now if needed (None: random weights)."""
    if request.random_weights:
        return None
    return model.weights.fetch(model.spec, include_top=request.task == "classify", progress=request.progress)


def network_graph(model: RegisteredModel, request: EngineRequest) -> Graph:
    """The graph of the network `request` asks for, logits or pooled features (a heatmap's is made from
    it: `explain.explaining_graph`). The zoo's networks are built from their shipped descriptions, a
    bundle from its file, without Keras (`RegisteredModel.network`); any other from its Keras model."""
    if model.network is None:
        return translate(keras_model(model, request))
    weights = weights_for(model, request)
    try:
        return translate(model.network(model.spec, weights, request.task))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelTranslationError(f"the network of {model.spec.name} is malformed: {exc!r}") from None
