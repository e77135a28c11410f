"""What engines explain with: the networks behind CAM and Grad-CAM (as a `graph.Graph` for the engines built
from one, as a Keras model for the reference engine), and the class maps of a CAM model.

Every model here is `body -> pooling -> head`: `body` ends at the last feature map (rows x columns x
channels), the pooling (global average pooling, or VGG's Flatten) ends space. For CAM the head after the
pooling must be linear (Dropout, Identity, Dense without activation): then the head's matrix applied at
every position of the feature map, without the bias, gives each class's map (see `imagenet_zoo.explain`).
The network outputs its logits and that feature map from one forward pass; the map of the one class asked
is computed from them (a product of rows x columns x channels), not every class's in the network.
SqueezeNet's classifier is a 1x1 convolution before the pooling, so its feature map is the class maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from imagenet_zoo.engines.graph import Graph, Node
from imagenet_zoo.errors import ExplanationUnsupportedError
from imagenet_zoo.explain import ClassChoice, explained_classes
from imagenet_zoo.specs import ExplainMethod


def _keras() -> Any:
    from imagenet_zoo.models._keras import import_keras

    return import_keras()


def split_at_pooling(model: Any) -> tuple[Any, list[Any]]:
    """(body, [pooling, *head]): the sub-model that ends at the last feature map, and the layers after it.

    A bundle's base is a nested model ending in its pooling: the split continues inside it."""
    keras = _keras()
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for i, layer in enumerate(layers):
        if isinstance(layer, keras.Model):
            body, head = split_at_pooling(layer)
            return body, head + layers[i + 1 :]
        if _rank(layer.input) == 4 and _rank(layer.output) == 2:  # where space ends
            return keras.Model(model.inputs, layer.input), layers[i:]
    raise ExplanationUnsupportedError(f"{model.name} has no feature map before its classifier to explain")


def _rank(tensor: Any) -> int | None:
    return None if isinstance(tensor, (list, tuple)) else len(tensor.shape)  # Add, Concatenate: several


def _is_linear(layer: Any) -> bool:
    keras = _keras()
    if isinstance(layer, (keras.layers.Dropout, keras.layers.Identity)):
        return True
    return isinstance(layer, keras.layers.Dense) and getattr(layer.activation, "__name__", "") == "linear"


@dataclass(frozen=True)
class CamModel:
    network: Any  # a keras.Model: pixels -> [logits, the last feature map (N, rows, columns, channels)]
    head: (
        np.ndarray | None
    )  # (channels, classes): the linear head without its bias; None: the map is the classes


def cam_model(model: Any) -> CamModel:
    """The model's logits and last feature map from one forward pass, and the matrix that turns the
    feature map into class maps."""
    keras = _keras()
    body, (pooling, *head) = split_at_pooling(model)
    if not (isinstance(pooling, keras.layers.GlobalAveragePooling2D) and all(map(_is_linear, head))):
        raise ExplanationUnsupportedError(
            f"{model.name}'s head is not global average pooling + a linear layer, so it has no class "
            "activation map: it needs Grad-CAM"
        )
    inputs = keras.Input(model.input_shape[1:], name="pixels")
    features = body(inputs)
    logits, matrix = pooling(features), None
    for layer in head:
        logits = layer(logits)
        if isinstance(layer, keras.layers.Dense):  # linear layers compose into one matrix
            kernel = layer.get_weights()[0].astype(np.float64)
            matrix = kernel if matrix is None else matrix @ kernel
    network = keras.Model(inputs, [logits, features], name=f"{model.name}_cam")
    return CamModel(network, None if matrix is None else matrix.astype(np.float32))


def grad_cam_model(model: Any) -> Any:
    """The model with two outputs: its logits and its last feature map, for Grad-CAM."""
    keras = _keras()
    body, head = split_at_pooling(model)
    inputs = keras.Input(model.input_shape[1:], name="pixels")
    features = body(inputs)
    logits = features
    for layer in head:
        logits = layer(logits)
    return keras.Model(inputs, [logits, features], name=f"{model.name}_grad_cam")


def explaining_graph(graph: Graph, method: ExplainMethod, name: str) -> tuple[Graph, np.ndarray | None]:
    """The graph with its last feature map as a second output (`graph` is changed), and for CAM the matrix
    that turns the feature map into class maps (None: it is the class maps already)."""
    at = _pooling_at(graph, name)
    pooling, head = graph.nodes[at], graph.nodes[at + 1 :]
    chain = [pooling.output] + [node.output for node in head]
    each_on_the_last = all(node.inputs == [before] for node, before in zip(head, chain, strict=False))
    if not each_on_the_last or chain[-1] != graph.outputs[0]:
        raise ExplanationUnsupportedError(f"{name}'s head after its pooling is not a chain of layers")
    matrix = None
    if method == "cam":
        if pooling.op != "global_avg_pool" or not all(map(_is_linear_node, head)):
            raise ExplanationUnsupportedError(
                f"{name}'s head is not global average pooling + a linear layer, so it has no class "
                "activation map: it needs Grad-CAM"
            )
        for node in head:  # linear layers compose into one matrix
            if node.op == "dense":
                kernel = graph.weights[f"{node.name}.weight"].T.astype(np.float64)
                matrix = kernel if matrix is None else matrix @ kernel
    graph.outputs = [graph.outputs[0], pooling.inputs[0]]
    return graph, None if matrix is None else matrix.astype(np.float32)


def _pooling_at(graph: Graph, name: str) -> int:
    """Where space ends: the first operation from an image to a vector."""
    ranks = {graph.input: graph.input_rank} | {node.output: node.rank for node in graph.nodes}
    for i, node in enumerate(graph.nodes):
        if node.rank == 2 and len(node.inputs) == 1 and ranks[node.inputs[0]] == 4:
            return i
    raise ExplanationUnsupportedError(f"{name} has no feature map before its classifier to explain")


def _is_linear_node(node: Node) -> bool:
    return node.op == "identity" or (node.op == "dense" and node.attrs["activation"] == "linear")


def class_maps(
    logits: np.ndarray, features: np.ndarray, head: np.ndarray | None, choice: ClassChoice
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CAM model's outputs to what `Engine.explain` gives: the logits, each row's map of the class it
    asks (`explained_classes`) and those classes. `features` is the last feature map (rows, map rows, map
    columns, channels); `head` turns it into class maps (None: it is the class maps already)."""
    classes = explained_classes(logits, choice)
    if head is None:
        return logits, features[np.arange(len(features)), :, :, classes], classes
    maps = np.einsum("nhwc,cn->nhw", features, head[:, classes], optimize=True)
    return logits, maps.astype(np.float32), classes
