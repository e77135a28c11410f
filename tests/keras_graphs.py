"""Small Keras models with every weight random, for checking what is built from their graph description
(`engines/graph.py`) against Keras itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from imagenet_zoo.engines.graph import Graph
from imagenet_zoo.models._keras import import_keras

keras = import_keras()
layers = keras.layers


def same_graph(a: Graph, b: Graph) -> bool:
    """The same operations, names, input and outputs, and the same weights bit for bit."""
    same_weights = a.weights.keys() == b.weights.keys() and all(
        np.array_equal(a.weights[key], b.weights[key]) for key in a.weights
    )
    return a.spec == b.spec and same_weights


def randomized(model: Any) -> Any:
    """Every weight random, batch statistics included (fresh ones are 0 and 1, which hide mistakes)."""
    rng = np.random.default_rng(3)
    for layer in model.layers:
        values = layer.get_weights()
        if isinstance(layer, layers.BatchNormalization):
            positive = ["variance" in w.path or "gamma" in w.path for w in layer.weights]
            values = [
                rng.uniform(0.5, 1.5, v.shape) if plus else rng.normal(0, 0.3, v.shape)
                for v, plus in zip(values, positive, strict=True)
            ]
        else:
            values = [rng.normal(0, 0.5, v.shape) for v in values]
        layer.set_weights([v.astype(np.float32) for v in values])
    return model


def single(make: Callable[[Any], Any], channels: int = 3) -> Any:
    """A model of one operation (or a few) on images of any size."""
    inputs = keras.Input((None, None, channels))
    return randomized(keras.Model(inputs, make(inputs)))


TRICKY: dict[str, Callable[[Any], Any]] = {
    "conv stride 2 same": lambda x: layers.Conv2D(4, 3, strides=2, padding="same")(x),
    "even kernel stride 2 same": lambda x: layers.Conv2D(4, 4, strides=2, padding="same")(x),
    "dilated same": lambda x: layers.Conv2D(4, 3, dilation_rate=2, padding="same", use_bias=False)(x),
    "conv + batch norm (folded)": lambda x: layers.BatchNormalization()(
        layers.Conv2D(5, 3, use_bias=False)(x)
    ),
    "batch norm without scale": lambda x: layers.BatchNormalization(scale=False, epsilon=1e-3)(x),
    "max pool same borders": lambda x: layers.MaxPooling2D(3, strides=2, padding="same")(x),
    "avg pool same excludes padding": lambda x: layers.AveragePooling2D(3, strides=2, padding="same")(x),
    "avg pool same stride 1": lambda x: layers.AveragePooling2D(3, strides=1, padding="same")(x),
    "depthwise multiplier 2": lambda x: layers.DepthwiseConv2D(3, 2, depth_multiplier=2, padding="same")(x),
    "separable + relu": lambda x: layers.SeparableConv2D(
        6, 3, depth_multiplier=2, padding="same", activation="relu"
    )(x),
    "relu6": lambda x: layers.ReLU(max_value=6.0)(x),
    "leaky relu with threshold": lambda x: layers.ReLU(negative_slope=0.1, threshold=0.5)(x),
    "zero padding": lambda x: layers.ZeroPadding2D(((1, 2), (3, 0)))(x),
    "concatenate": lambda x: layers.Concatenate()(
        [layers.Conv2D(2, 1)(x), layers.Conv2D(3, 3, padding="same")(x)]
    ),
    "add": lambda x: layers.Add()([x, layers.Conv2D(3, 1)(x)]),
    "global max pool keepdims": lambda x: layers.GlobalMaxPooling2D(keepdims=True)(x),
    "activations": lambda x: layers.Activation("hard_sigmoid")(
        layers.Conv2D(4, 1, activation="swish")(layers.Activation("tanh")(x))
    ),
}
