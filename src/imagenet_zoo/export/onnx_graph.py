"""A translated graph (`engines/graph.py`) written as an ONNX model with the `onnx` package's own helpers.

The model takes what a client can make with Pillow alone: photos already resized and cropped to the
model's size, `uint8`, NHWC, RGB. Its first operations scale them as the weights expect (channel order,
mean and std: `data.preprocess.normalization`), its last one is a softmax: it outputs probabilities.
Each operation keeps Keras's semantics; the input's height and width are fixed, so TensorFlow's "same"
padding is written as explicit pads (the extra pixel at the end), which every runtime reads alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from imagenet_zoo.data.preprocess import Normalization
from imagenet_zoo.engines.graph import Graph, same_pads
from imagenet_zoo.errors import ModelTranslationError
from imagenet_zoo.export.contract import INPUT_NAME, OUTPUT_NAME

OPSET = 17  # ONNX Runtime 1.14+, OpenVINO 2023+, TensorRT 8.6+

Size = tuple[int, int]  # an image tensor's rows and columns


class _Writer:
    """Nodes and initializers of one ONNX graph, with every image tensor's size tracked."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.sizes: dict[str, Size] = {}
        self._names: set[str] = set()

    def name(self, hint: str) -> str:
        name, n = hint, 1
        while name in self._names:
            name, n = f"{hint}_{n}", n + 1
        self._names.add(name)
        return name

    def constant(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attrs: Any) -> str:
        output = self.name(hint)
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output


def _f32(value: Any) -> np.ndarray:
    return np.asarray(value, dtype=np.float32)


def _activation(w: _Writer, x: str, name: str, hint: str) -> str:
    if name == "linear":
        return x
    if name in ("swish", "silu"):
        return w.node("Mul", [x, w.node("Sigmoid", [x], f"{hint}/sigmoid")], hint)
    if name == "relu6":
        return w.node(
            "Clip", [x, w.constant(f"{hint}/min", _f32(0)), w.constant(f"{hint}/max", _f32(6))], hint
        )
    if name == "hard_sigmoid":  # Keras 3's definition: relu6(x + 3) / 6
        return w.node("HardSigmoid", [x], hint, alpha=1 / 6, beta=0.5)
    if name == "softmax":
        return w.node("Softmax", [x], hint, axis=1)
    ops = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
    if name not in ops:
        raise ModelTranslationError(f"the graph has an activation ONNX is not given: {name!r}")
    return w.node(ops[name], [x], hint)


def _window(w: _Writer, x: str, attrs: dict[str, Any], dilation: list[int]) -> tuple[list[int], Size]:
    """ONNX's pads (top, left, bottom, right) of a convolution or pooling window, and its output size."""
    (rows, cols), kernel, stride = w.sizes[x], attrs["kernel"], attrs["stride"]
    if attrs["padding"] == "same":
        (top, bottom), (left, right) = (
            same_pads(rows, kernel[0], stride[0], dilation[0]),
            same_pads(cols, kernel[1], stride[1], dilation[1]),
        )
        return [top, left, bottom, right], (-(-rows // stride[0]), -(-cols // stride[1]))
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    return [0, 0, 0, 0], ((rows - spans[0]) // stride[0] + 1, (cols - spans[1]) // stride[1] + 1)


def _conv(w: _Writer, x: str, node: dict[str, Any]) -> str:
    attrs, name = node["attrs"], node["name"]
    pads, size = _window(w, x, attrs, attrs["dilation"])
    inputs = [x, w.constant(f"{name}.weight", w.weights[f"{name}.weight"])]
    if f"{name}.bias" in w.weights:
        inputs.append(w.constant(f"{name}.bias", w.weights[f"{name}.bias"]))
    window = {"kernel_shape": attrs["kernel"], "strides": attrs["stride"], "dilations": attrs["dilation"]}
    y = w.node("Conv", inputs, f"{name}/conv", group=int(attrs["groups"]), pads=pads, **window)
    w.sizes[y] = size
    return _activation(w, y, attrs["activation"], name)


def _pool(w: _Writer, x: str, node: dict[str, Any], op: str) -> str:
    attrs, name = node["attrs"], node["name"]
    pads, size = _window(w, x, attrs, [1, 1])
    extra = {"count_include_pad": 0} if op == "AveragePool" else {}  # Keras leaves padding out
    y = w.node(op, [x], name, kernel_shape=attrs["kernel"], strides=attrs["stride"], pads=pads, **extra)
    w.sizes[y] = size
    return y


def _dense(w: _Writer, x: str, node: dict[str, Any]) -> str:
    name = node["name"]
    inputs = [x, w.constant(f"{name}.weight", w.weights[f"{name}.weight"])]  # (out, in)
    if f"{name}.bias" in w.weights:
        inputs.append(w.constant(f"{name}.bias", w.weights[f"{name}.bias"]))
    return _activation(w, w.node("Gemm", inputs, f"{name}/gemm", transB=1), node["attrs"]["activation"], name)


def _channels(value: np.ndarray, rank: int) -> np.ndarray:
    return _f32(value).reshape((1, -1, 1, 1) if rank == 4 else (1, -1))


def _affine(w: _Writer, x: str, node: dict[str, Any]) -> str:
    name, rank = node["name"], node["rank"]
    scale = w.constant(f"{name}.scale", _channels(w.weights[f"{name}.scale"], rank))
    shift = w.constant(f"{name}.shift", _channels(w.weights[f"{name}.shift"], rank))
    return w.node("Add", [w.node("Mul", [x, scale], f"{name}/scale"), shift], name)


def _relu(w: _Writer, x: str, node: dict[str, Any]) -> str:
    """Keras's ReLU layer: max_value caps it, negative_slope leaks below threshold."""
    attrs, name = node["attrs"], node["name"]
    cap, slope, threshold = attrs["max_value"], attrs["negative_slope"], attrs["threshold"]
    if slope == 0 and threshold == 0:
        y = w.node("Relu", [x], f"{name}/relu")
    else:
        t = w.constant(f"{name}/threshold", _f32(threshold))
        below = w.node("Sub", [x, t], f"{name}/below")
        leak = w.node("Mul", [below, w.constant(f"{name}/slope", _f32(slope))], f"{name}/leak")
        above = w.node("GreaterOrEqual", [x, t], f"{name}/above")
        y = w.node("Where", [above, x, leak], f"{name}/leaky")
    return y if cap is None else w.node("Min", [y, w.constant(f"{name}/cap", _f32(cap))], name)


def _zero_pad(w: _Writer, x: str, node: dict[str, Any]) -> str:
    top, bottom, left, right = node["attrs"]["pads"]
    pads = w.constant(f"{node['name']}/pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
    y = w.node("Pad", [x, pads], node["name"])
    rows, cols = w.sizes[x]
    w.sizes[y] = (rows + top + bottom, cols + left + right)
    return y


def _flatten(w: _Writer, x: str, node: dict[str, Any]) -> str:
    """Keras flattens rows, then columns, then channels."""
    if x in w.sizes:
        x = w.node("Transpose", [x], f"{node['name']}/nhwc", perm=[0, 2, 3, 1])
    return w.node("Flatten", [x], node["name"], axis=1)


def _neighbour_vote(w: _Writer, x: str, node: dict[str, Any]) -> str:
    """`models.neighbour_vote.NeighbourVote`: a log mean of exp(cosine / temperature) per class."""
    name, weights = node["name"], w.weights
    membership = weights[f"{name}.membership"]
    members = np.maximum(membership.sum(axis=0), 1.0).reshape(1, -1)

    def const(key: str, value: Any) -> str:
        return w.constant(f"{name}/{key}", _f32(value))

    def op(kind: str, inputs: list[str], step: str, **attrs: Any) -> str:
        return w.node(kind, inputs, f"{name}/{step}", **attrs)

    centered = op("Sub", [x, const("center", weights[f"{name}.center"].reshape(1, -1))], "centered")
    squares = op("Mul", [centered, centered], "squares")
    axis = w.constant(f"{name}/axis", np.array([-1], np.int64))
    norm = op("Sqrt", [op("ReduceSum", [squares, axis], "sum", keepdims=1)], "norm")
    directions = op("Div", [centered, op("Max", [norm, const("eps", 1e-6)], "safe")], "directions")
    cosines = op("MatMul", [directions, const("prototypes", weights[f"{name}.prototypes"].T)], "cosines")
    scaled = op("Div", [cosines, const("temperature", node["attrs"]["temperature"])], "scaled")
    shift = op("ReduceMax", [scaled], "shift", axes=[-1], keepdims=1)
    exp = op("Exp", [op("Sub", [scaled, shift], "shifted")], "exp")
    votes = op("MatMul", [exp, const("membership", membership)], "votes")
    share = op(
        "Div", [op("Max", [votes, const("tiny", 1e-30)], "positive"), const("members", members)], "share"
    )
    return w.node("Add", [op("Log", [share], "log"), shift], name)


def _global_pool(op: str) -> Callable[[_Writer, str, dict[str, Any]], str]:
    def rule(w: _Writer, x: str, node: dict[str, Any]) -> str:
        return w.node(op, [x], node["name"], axes=[2, 3], keepdims=int(node["attrs"]["keepdims"]))

    return rule


_RULES: dict[str, Callable[[_Writer, str, dict[str, Any]], str]] = {
    "conv2d": _conv,
    "dense": _dense,
    "affine": _affine,
    "relu": _relu,
    "activation": lambda w, x, n: _activation(w, x, n["attrs"]["activation"], n["name"]),
    "zero_pad": _zero_pad,
    "max_pool": lambda w, x, n: _pool(w, x, n, "MaxPool"),
    "avg_pool": lambda w, x, n: _pool(w, x, n, "AveragePool"),
    "global_avg_pool": _global_pool("ReduceMean"),
    "global_max_pool": _global_pool("ReduceMax"),
    "flatten": _flatten,
    "identity": lambda w, x, n: w.node("Identity", [x], n["name"]),
    "neighbour_vote": _neighbour_vote,
}


def _operation(w: _Writer, node: dict[str, Any], args: list[str]) -> str:
    op = node["op"]
    if op == "add":
        y = w.node("Sum", args, node["name"])
    elif op == "concat":
        y = w.node("Concat", args, node["name"], axis=node["attrs"]["axis"])
    elif op in _RULES:
        y = _RULES[op](w, args[0], node)
    else:
        raise ModelTranslationError(f"the graph has an unknown operation {op!r} ({node['name']})")
    if node["rank"] == 4 and y not in w.sizes:  # what keeps its input's size (activations, add, concat)
        w.sizes[y] = w.sizes[args[0]]
    return y


def _pixels_in(w: _Writer, rows: int, cols: int, normalization: Normalization) -> str:
    """uint8 NHWC RGB pixels as the network's float NCHW input."""
    x = w.node("Cast", [INPUT_NAME], "pixels/float", to=TensorProto.FLOAT)
    if normalization.channels != (0, 1, 2):
        order = w.constant("pixels/channels", np.array(normalization.channels, np.int64))
        x = w.node("Gather", [x, order], "pixels/channel_order", axis=3)
    x = w.node("Sub", [x, w.constant("pixels/mean", _f32(normalization.mean))], "pixels/centered")
    x = w.node("Div", [x, w.constant("pixels/std", _f32(normalization.std))], "pixels/scaled")
    y = w.node("Transpose", [x], "pixels/nchw", perm=[0, 3, 1, 2])
    w.sizes[y] = (rows, cols)
    return y


def onnx_model(graph: Graph, normalization: Normalization, *, name: str, classes: int) -> onnx.ModelProto:
    """The ONNX model of a graph whose one output is its logits: uint8 pixels in, probabilities out."""
    shape = graph.input_shape
    if graph.input_rank != 4 or shape is None or None in shape[1:3] or len(graph.outputs) != 1:
        raise ModelTranslationError("only a network with one fixed-size image input and one output exports")
    rows, cols = int(shape[1]), int(shape[2])  # type: ignore[arg-type]
    w = _Writer(graph.weights)
    w.name(INPUT_NAME)
    tensors = {graph.input: _pixels_in(w, rows, cols, normalization)}
    for node in graph.spec["nodes"]:
        tensors[node["output"]] = _operation(w, node, [tensors[i] for i in node["inputs"]])
    w.nodes.append(helper.make_node("Softmax", [tensors[graph.outputs[0]]], [OUTPUT_NAME], axis=1))
    inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", rows, cols, 3])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", classes])]
    body = helper.make_graph(w.nodes, name, inputs, outputs, w.initializers)
    model = helper.make_model(
        body, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="imagenet-zoo"
    )
    model.ir_version = 8  # what ONNX Runtime 1.14 and later read
    onnx.checker.check_model(model, full_check=True)
    return model
