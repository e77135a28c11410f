"""A Keras model as a graph of plain operations and numpy weights: the one description the OpenVINO engine
(`openvino_graph.py`) and the torch engine (`torch_graph.py`) build their networks from.

Only Keras's public API is read (`get_config()`, `get_layer()`, `get_weights()`), so the translation runs
on any Keras backend, TensorFlow or not. Each layer becomes an operation with Keras's exact semantics:
TensorFlow's "same" padding (more on the bottom and right when the total is odd), average pooling that
excludes padding, Flatten in height-width-channel order, depthwise channel order. Images are laid out as
OpenVINO, ONNX and torch lay them out (batch x channels x rows x columns; kernels as output x input x
height x width), and every BatchNormalization that follows a convolution or dense layer is folded into it,
computed in float64.

The graph is plain data (`Graph.spec` is JSON, `weights` are arrays): stored without pickle.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imagenet_zoo.errors import ModelTranslationError

GRAPH_FORMAT = 1
_FUNCTIONAL = ("Functional", "Model")  # nested models whose output node indices count a built-in node
ACTIVATIONS = ("linear", "relu", "relu6", "sigmoid", "softmax", "swish", "silu", "tanh", "hard_sigmoid")


@dataclass
class Node:
    """One operation: `op` on the tensors named `inputs`, making the tensor `output`."""

    name: str
    op: str
    inputs: list[str]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)
    rank: int = 4  # the output's rank in Keras (4: images, channels last; 2: vectors)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "inputs": self.inputs,
            "output": self.output,
            "attrs": self.attrs,
            "rank": self.rank,
        }


@dataclass
class Graph:
    """A translated model: nodes in execution order, its input (its Keras shape, None where any size goes)
    and outputs, and weights by `<node>.<parameter>`."""

    input: str
    input_rank: int
    outputs: list[str]
    nodes: list[Node]
    weights: dict[str, np.ndarray]
    input_shape: list[int | None] | None = None

    @property
    def spec(self) -> dict[str, Any]:
        return {
            "format": GRAPH_FORMAT,
            "input": self.input,
            "input_rank": self.input_rank,
            "input_shape": self.input_shape,
            "outputs": self.outputs,
            "nodes": [node.as_json() for node in self.nodes],
        }


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's "same" padding of one axis: (before, after), the extra pixel after."""
    span = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def translate(model: Any) -> Graph:
    """The graph of a Keras functional model with one image input (nested models are inlined)."""
    translator = _Translator()
    config = model.get_config()
    inputs = _leaves(config["input_layers"])
    if len(inputs) != 1:
        raise ModelTranslationError(f"{model.name} has {len(inputs)} inputs; an engine takes one")
    input_name, input_rank = "input", _input_rank(config, inputs[0][0])
    outputs = translator.functional(model, config, [input_name], [input_rank], prefix="")
    graph = Graph(
        input_name,
        input_rank,
        [name for name, _ in outputs],
        translator.nodes,
        translator.weights,
        list(model.input_shape),
    )
    return fold_batch_norms(graph)


def _input_rank(config: dict[str, Any], layer_name: str) -> int:
    for layer in config["layers"]:
        if layer["name"] == layer_name:
            return len(layer["config"]["batch_shape"])
    raise ModelTranslationError(f"no input layer {layer_name!r}")


def _leaves(structure: Any) -> list[list[Any]]:
    """The [layer, node, tensor] references in a nested structure of them (input or output layers)."""
    if isinstance(structure, list) and len(structure) == 3 and isinstance(structure[0], str):
        return [structure]
    items = structure.values() if isinstance(structure, dict) else structure
    return [leaf for item in items for leaf in _leaves(item)]


def _history(structure: Any) -> list[tuple[str, int, int]]:
    """The Keras tensors an inbound node's arguments refer to, as (layer, node, tensor), in order."""
    if isinstance(structure, dict):
        if structure.get("class_name") == "__keras_tensor__":
            layer, node, tensor = structure["config"]["keras_history"]
            return [(layer, node, tensor)]
        return [ref for value in structure.values() for ref in _history(value)]
    if isinstance(structure, (list, tuple)):
        return [ref for item in structure for ref in _history(item)]
    return []


Tensor = tuple[str, int]  # a tensor's name in the graph and its rank


class _Translator:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.weights: dict[str, np.ndarray] = {}

    def functional(
        self, model: Any, config: dict[str, Any], input_names: list[str], input_ranks: list[int], prefix: str
    ) -> list[Tensor]:
        """Translate a functional model's layers, its inputs bound to the given tensors; its outputs."""
        available: dict[tuple[str, int, int], Tensor] = {}
        for (layer, node, tensor), name, rank in zip(
            _leaves(config["input_layers"]), input_names, input_ranks, strict=True
        ):
            available[(layer, node, tensor)] = (name, rank)
        kinds = {layer["name"]: layer["class_name"] for layer in config["layers"]}
        pending = [
            (layer, index, node)
            for layer in config["layers"]
            if layer["class_name"] != "InputLayer"
            for index, node in enumerate(layer["inbound_nodes"])
        ]
        while pending:  # in order, except where a shared layer's later call waits for its inputs
            ready = [item for item in pending if all(ref in available for ref in _history(item[2]["args"]))]
            if not ready:
                names = ", ".join(sorted({layer["name"] for layer, _, _ in pending}))
                raise ModelTranslationError(f"layers whose inputs never come: {names}")
            layer, index, node = ready[0]
            pending.remove(ready[0])
            args = [available[ref] for ref in _history(node["args"])]
            name = prefix + layer["name"] + (f"#{index}" if index else "")
            for i, made in enumerate(self.layer(model.get_layer(layer["name"]), layer, args, name)):
                available[(layer["name"], index, i)] = made
        outputs = []
        for layer, node, tensor in _leaves(config["output_layers"]):
            node -= 1 if kinds.get(layer) in _FUNCTIONAL else 0  # a nested model's built-in first node
            outputs.append(available[(layer, node, tensor)])
        return outputs

    def layer(self, layer: Any, config: dict[str, Any], args: list[Tensor], name: str) -> list[Tensor]:
        kind, options = config["class_name"], config["config"]
        if kind in _FUNCTIONAL:
            names, ranks = [a[0] for a in args], [a[1] for a in args]
            return self.functional(layer, options, names, ranks, prefix=name + "/")
        if kind == "Sequential":
            return [self.sequential(layer, args[0], name)]
        rule = _RULES.get(kind)
        if rule is None:
            raise ModelTranslationError(
                f"layer {config['name']!r} is a {kind}, which imagenet-zoo does not translate"
            )
        return [rule(self, layer, options, args, name)]

    def sequential(self, model: Any, arg: Tensor, prefix: str) -> Tensor:
        for sub in model.get_config()["layers"]:
            if sub["class_name"] != "InputLayer":
                arg = self.layer(
                    model.get_layer(sub["config"]["name"]), sub, [arg], f"{prefix}/{sub['config']['name']}"
                )[0]
        return arg

    def add(
        self,
        name: str,
        op: str,
        inputs: list[Tensor],
        rank: int,
        attrs: dict[str, Any] | None = None,
        **weights: np.ndarray,
    ) -> Tensor:
        output = name
        self.nodes.append(Node(name, op, [t for t, _ in inputs], output, attrs or {}, rank))
        for key, value in weights.items():
            self.weights[f"{name}.{key}"] = np.ascontiguousarray(value, dtype=np.float32)
        return output, rank


Rule = Any  # (translator, layer, config, args, name) -> Tensor


def _activation(options: dict[str, Any], name: str) -> str:
    activation = options.get("activation", "linear")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ModelTranslationError(f"{name}: activation {activation!r} is not translated")
    return activation


def _conv_attrs(options: dict[str, Any], name: str) -> dict[str, Any]:
    if options.get("data_format", "channels_last") != "channels_last":
        raise ModelTranslationError(f"{name}: only channels_last convolutions are translated")
    return {
        "kernel": list(options["kernel_size"]),
        "stride": list(options["strides"]),
        "dilation": list(options.get("dilation_rate", (1, 1))),
        "padding": options["padding"],
    }


def _conv(t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str) -> Tensor:
    groups = int(options.get("groups", 1))
    values = layer.get_weights()
    kernel = values[0].transpose(3, 2, 0, 1)  # (kh, kw, in/groups, out) -> (out, in/groups, kh, kw)
    attrs = {**_conv_attrs(options, name), "groups": groups, "activation": _activation(options, name)}
    bias = {"bias": values[1]} if options["use_bias"] else {}
    return t.add(name, "conv2d", args, 4, attrs, weight=kernel, **bias)


def _depthwise_kernel(kernel: np.ndarray) -> np.ndarray:
    """(kh, kw, in, multiplier) -> (in * multiplier, 1, kh, kw); output channel c * multiplier + m, as
    TensorFlow orders them."""
    kh, kw, channels, multiplier = kernel.shape
    return kernel.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, kh, kw)


def _depthwise(t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str) -> Tensor:
    values = layer.get_weights()
    kernel = _depthwise_kernel(values[0])
    attrs = {
        **_conv_attrs(options, name),
        "groups": values[0].shape[2],
        "activation": _activation(options, name),
    }
    bias = {"bias": values[1]} if options["use_bias"] else {}
    return t.add(name, "conv2d", args, 4, attrs, weight=kernel, **bias)


def _separable(t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str) -> Tensor:
    values = layer.get_weights()
    depthwise, pointwise = values[0], values[1]
    attrs = {**_conv_attrs(options, name), "groups": depthwise.shape[2], "activation": "linear"}
    spatial = t.add(f"{name}/depthwise", "conv2d", args, 4, attrs, weight=_depthwise_kernel(depthwise))
    point = {
        "kernel": [1, 1],
        "stride": [1, 1],
        "dilation": [1, 1],
        "padding": "valid",
        "groups": 1,
        "activation": _activation(options, name),
    }
    bias = {"bias": values[2]} if options["use_bias"] else {}
    return t.add(name, "conv2d", [spatial], 4, point, weight=pointwise.transpose(3, 2, 0, 1), **bias)


def _batch_norm(t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str) -> Tensor:
    rank = args[0][1]
    if options["axis"] not in (-1, rank - 1, [rank - 1], [-1]):
        raise ModelTranslationError(f"{name}: only batch normalization over the channels is translated")
    values = [v.astype(np.float64) for v in layer.get_weights()]
    gamma = values.pop(0) if options["scale"] else 1.0
    beta = values.pop(0) if options["center"] else 0.0
    mean, variance = values
    scale = gamma / np.sqrt(variance + options["epsilon"])
    shift = beta - mean * scale
    return t.add(
        name, "affine", args, rank, {}, scale=scale * np.ones_like(mean), shift=shift * np.ones_like(mean)
    )


def _relu(t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str) -> Tensor:
    attrs = {
        "max_value": options.get("max_value"),
        "negative_slope": float(options.get("negative_slope", 0.0)),
        "threshold": float(options.get("threshold", 0.0)),
    }
    return t.add(name, "relu", args, args[0][1], attrs)


def _activation_layer(
    t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str
) -> Tensor:
    return t.add(name, "activation", args, args[0][1], {"activation": _activation(options, name)})


def _dense(t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str) -> Tensor:
    if args[0][1] != 2:
        raise ModelTranslationError(f"{name}: a dense layer on a rank-{args[0][1]} tensor is not translated")
    values = layer.get_weights()
    bias = {"bias": values[1]} if options["use_bias"] else {}
    attrs = {"activation": _activation(options, name)}
    return t.add(name, "dense", args, 2, attrs, weight=values[0].T, **bias)


def _zero_padding(
    t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str
) -> Tensor:
    (top, bottom), (left, right) = options["padding"]
    return t.add(name, "zero_pad", args, 4, {"pads": [top, bottom, left, right]})


def _pooling(op: str) -> Rule:
    def rule(t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str) -> Tensor:
        strides = options["strides"] or options["pool_size"]
        attrs = {"kernel": list(options["pool_size"]), "stride": list(strides), "padding": options["padding"]}
        return t.add(name, op, args, 4, attrs)

    return rule


def _global_pooling(op: str) -> Rule:
    def rule(t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str) -> Tensor:
        keepdims = bool(options.get("keepdims", False))
        return t.add(name, op, args, 4 if keepdims else 2, {"keepdims": keepdims})

    return rule


def _flatten(t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str) -> Tensor:
    return t.add(name, "flatten", args, 2)


def _add(t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str) -> Tensor:
    return t.add(name, "add", args, args[0][1])


def _concatenate(
    t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str
) -> Tensor:
    rank = args[0][1]
    axis = options["axis"] % rank
    # Keras's image axes (batch, rows, columns, channels) in the graph's (batch, channels, rows, columns).
    graph_axis = [0, 2, 3, 1][axis] if rank == 4 else axis
    return t.add(name, "concat", args, rank, {"axis": graph_axis})


def _identity(t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str) -> Tensor:
    return t.add(name, "identity", args, args[0][1])


def _neighbour_vote(
    t: _Translator, layer: Any, options: dict[str, Any], args: list[Tensor], name: str
) -> Tensor:
    prototypes, membership, center = layer.get_weights()
    temperature = float(options["temperature"])
    if not (math.isfinite(temperature) and temperature > 0):
        raise ModelTranslationError(f"{name}: the neighbour vote's temperature must be positive")
    attrs = {"temperature": temperature}
    return t.add(
        name, "neighbour_vote", args, 2, attrs, prototypes=prototypes, membership=membership, center=center
    )


_RULES: dict[str, Rule] = {
    "Conv2D": _conv,
    "DepthwiseConv2D": _depthwise,
    "SeparableConv2D": _separable,
    "BatchNormalization": _batch_norm,
    "ReLU": _relu,
    "Activation": _activation_layer,
    "Dense": _dense,
    "ZeroPadding2D": _zero_padding,
    "MaxPooling2D": _pooling("max_pool"),
    "AveragePooling2D": _pooling("avg_pool"),
    "GlobalAveragePooling2D": _global_pooling("global_avg_pool"),
    "GlobalMaxPooling2D": _global_pooling("global_max_pool"),
    "Flatten": _flatten,
    "Add": _add,
    "Concatenate": _concatenate,
    "Dropout": _identity,
    "Identity": _identity,
    "NeighbourVote": _neighbour_vote,
}


def fold_batch_norms(graph: Graph) -> Graph:
    """Each batch normalization whose input is only a linear convolution or dense layer's output,
    folded into that layer's weights and bias (one operation less, and no pass over the activations)."""
    producers = {node.output: node for node in graph.nodes}
    uses = Counter(name for node in graph.nodes for name in node.inputs) + Counter(graph.outputs)
    kept: list[Node] = []
    renamed: dict[str, str] = {}
    for node in graph.nodes:
        node.inputs = [renamed.get(name, name) for name in node.inputs]
        source = producers.get(node.inputs[0]) if node.op == "affine" else None
        if source is None or source.op not in ("conv2d", "dense") or source.attrs["activation"] != "linear":
            kept.append(node)
            continue
        if uses[source.output] != 1:
            kept.append(node)
            continue
        _fold(graph.weights, source.name, node.name)
        renamed[node.output] = source.output
    graph.outputs = [renamed.get(name, name) for name in graph.outputs]
    graph.nodes = kept
    return graph


def _fold(weights: dict[str, np.ndarray], layer: str, norm: str) -> None:
    scale = weights.pop(f"{norm}.scale").astype(np.float64)
    shift = weights.pop(f"{norm}.shift").astype(np.float64)
    kernel = weights[f"{layer}.weight"].astype(np.float64)
    bias = weights.get(f"{layer}.bias", np.zeros(len(kernel))).astype(np.float64)
    shape = (-1,) + (1,) * (kernel.ndim - 1)
    weights[f"{layer}.weight"] = (kernel * scale.reshape(shape)).astype(np.float32)
    weights[f"{layer}.bias"] = (bias * scale + shift).astype(np.float32)
