"""A translated graph (`graph.Graph`) as an OpenVINO model, built with OpenVINO's own operations (opset13).

Each operation keeps Keras's semantics: TensorFlow's "same" padding is OpenVINO's `same_upper`, average
pooling leaves padding out, a max pool never lets padding win, Flatten reads rows, columns, then channels.
The model takes NHWC input, as the Keras model does (float32; or, given the weights' scaling, uint8 pixels
that it scales itself, as the engine and an exported model are given them), and gives image outputs back
in NHWC: the transposes at both ends are folded into the convolutions by OpenVINO's CPU plugin.

Needs neither Keras nor TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from imagenet_zoo.data.preprocess import Normalization
from imagenet_zoo.errors import ModelTranslationError

INPUT_NAME = "pixels"
_TO_NCHW = [0, 3, 1, 2]
_TO_NHWC = [0, 2, 3, 1]

Node = Any  # an OpenVINO node or output


def _transposed(x: Node, order: list[int]) -> Node:
    return ops.transpose(x, ops.constant(np.array(order, dtype=np.int64)))


def _rank(x: Node) -> int:
    output = x if isinstance(x, ov.Output) else x.output(0)
    return int(output.get_partial_shape().rank.get_length())


def _constant(value: np.ndarray | float) -> Node:
    return ops.constant(np.asarray(value, dtype=np.float32))


def _channels(value: np.ndarray, rank: int) -> Node:
    """A per-channel vector shaped to broadcast over (N, C, H, W) or (N, C)."""
    shape = (1, -1, 1, 1) if rank == 4 else (1, -1)
    return _constant(np.asarray(value, dtype=np.float32).reshape(shape))


def _activation(x: Node, name: str) -> Node:
    functions: dict[str, Callable[[Node], Node]] = {
        "linear": lambda x: x,
        "relu": ops.relu,
        "relu6": lambda x: ops.clamp(x, 0.0, 6.0),
        "sigmoid": ops.sigmoid,
        "softmax": lambda x: ops.softmax(x, 1),
        "swish": ops.swish,
        "silu": ops.swish,
        "tanh": ops.tanh,
        "hard_sigmoid": _hard_sigmoid,
    }
    if name not in functions:
        raise ModelTranslationError(f"the graph has an activation OpenVINO is not given: {name!r}")
    return functions[name](x)


def _hard_sigmoid(x: Node) -> Node:
    """Keras 3's definition: relu6(x + 3) / 6."""
    return ops.clamp(ops.add(ops.multiply(x, _constant(1 / 6)), _constant(0.5)), 0.0, 1.0)


def _auto_pad(padding: str) -> str:
    return "same_upper" if padding == "same" else "valid"


def _conv(x: Node, attrs: dict[str, Any], weight: np.ndarray, bias: np.ndarray | None) -> Node:
    stride, dilation, pad = attrs["stride"], attrs["dilation"], _auto_pad(attrs["padding"])
    groups = int(attrs["groups"])
    if groups == 1:
        y = ops.convolution(x, _constant(weight), stride, [0, 0], [0, 0], dilation, auto_pad=pad)
    else:  # (out, in / groups, kh, kw) -> (groups, out / groups, in / groups, kh, kw)
        grouped = weight.reshape(groups, weight.shape[0] // groups, *weight.shape[1:])
        y = ops.group_convolution(x, _constant(grouped), stride, [0, 0], [0, 0], dilation, auto_pad=pad)
    if bias is not None:
        y = ops.add(y, _channels(bias, 4))
    return _activation(y, attrs["activation"])


def _dense(x: Node, attrs: dict[str, Any], weight: np.ndarray, bias: np.ndarray | None) -> Node:
    y = ops.matmul(x, _constant(weight), transpose_a=False, transpose_b=True)  # weight: (out, in)
    if bias is not None:
        y = ops.add(y, _constant(bias.reshape(1, -1)))
    return _activation(y, attrs["activation"])


def _relu(x: Node, attrs: dict[str, Any]) -> Node:
    """Keras's ReLU layer: max_value caps it, negative_slope leaks below threshold."""
    cap, slope, threshold = attrs["max_value"], attrs["negative_slope"], attrs["threshold"]
    if slope == 0 and threshold == 0:
        return ops.relu(x) if cap is None else ops.clamp(x, 0.0, float(cap))
    leak = ops.multiply(ops.subtract(x, _constant(threshold)), _constant(slope))
    y = ops.select(ops.greater_equal(x, _constant(threshold)), x, leak)
    return y if cap is None else ops.minimum(y, _constant(float(cap)))


def _pool(x: Node, reduce: str, attrs: dict[str, Any]) -> Node:
    kernel, stride, pad = attrs["kernel"], attrs["stride"], _auto_pad(attrs["padding"])
    if reduce == "max":  # padded pixels never win
        return ops.max_pool(x, stride, [1, 1], [0, 0], [0, 0], kernel, "floor", pad).output(0)
    return ops.avg_pool(
        x, stride, [0, 0], [0, 0], kernel, exclude_pad=True, rounding_type="floor", auto_pad=pad
    )


def _neighbour_vote(x: Node, temperature: float, weights: Callable[[str], np.ndarray]) -> Node:
    """`models.neighbour_vote.NeighbourVote`: a log mean of exp(cosine / temperature) per class."""
    prototypes, membership = weights("prototypes"), weights("membership")
    centered = ops.subtract(x, _constant(weights("center").reshape(1, -1)))
    norm = ops.sqrt(ops.reduce_sum(ops.multiply(centered, centered), [-1], keep_dims=True))
    directions = ops.divide(centered, ops.maximum(norm, _constant(1e-6)))
    scaled = ops.divide(ops.matmul(directions, _constant(prototypes), False, True), _constant(temperature))
    shift = ops.reduce_max(scaled, [-1], keep_dims=True)
    votes = ops.matmul(ops.exp(ops.subtract(scaled, shift)), _constant(membership), False, False)
    members = np.maximum(membership.sum(axis=0), 1.0).reshape(1, -1)
    share = ops.divide(ops.maximum(votes, _constant(1e-30)), _constant(members))
    return ops.add(ops.log(share), shift)


def _operation(node: dict[str, Any], args: list[Node], weights: dict[str, np.ndarray]) -> Node:
    op, attrs, name, rank = node["op"], node["attrs"], node["name"], node["rank"]

    def weight(key: str) -> np.ndarray:
        return weights[f"{name}.{key}"]

    def bias() -> np.ndarray | None:
        return weights.get(f"{name}.bias")

    x = args[0]
    builders: dict[str, Callable[[], Node]] = {
        "conv2d": lambda: _conv(x, attrs, weight("weight"), bias()),
        "dense": lambda: _dense(x, attrs, weight("weight"), bias()),
        "affine": lambda: ops.add(
            ops.multiply(x, _channels(weight("scale"), rank)), _channels(weight("shift"), rank)
        ),
        "relu": lambda: _relu(x, attrs),
        "activation": lambda: _activation(x, attrs["activation"]),
        "zero_pad": lambda: _zero_pad(x, attrs["pads"]),
        "max_pool": lambda: _pool(x, "max", attrs),
        "avg_pool": lambda: _pool(x, "avg", attrs),
        "global_avg_pool": lambda: ops.reduce_mean(x, [2, 3], keep_dims=attrs["keepdims"]),
        "global_max_pool": lambda: ops.reduce_max(x, [2, 3], keep_dims=attrs["keepdims"]),
        "flatten": lambda: _flatten(x),
        "add": lambda: _sum(args),
        "concat": lambda: ops.concat(args, attrs["axis"]),
        "identity": lambda: x,
        "neighbour_vote": lambda: _neighbour_vote(x, attrs["temperature"], weight),
    }
    if op not in builders:
        raise ModelTranslationError(f"the graph has an unknown operation {op!r} ({name})")
    return builders[op]()


def _zero_pad(x: Node, pads: list[int]) -> Node:
    top, bottom, left, right = pads
    begin = ops.constant(np.array([0, 0, top, left], dtype=np.int64))
    end = ops.constant(np.array([0, 0, bottom, right], dtype=np.int64))
    return ops.pad(x, begin, end, "constant", _constant(0.0))


def _flatten(x: Node) -> Node:
    """Keras flattens rows, then columns, then channels."""
    if _rank(x) == 4:
        x = _transposed(x, _TO_NHWC)
    return ops.reshape(x, ops.constant(np.array([0, -1], dtype=np.int64)), special_zero=True)


def _sum(args: list[Node]) -> Node:
    total = args[0]
    for arg in args[1:]:
        total = ops.add(total, arg)
    return total


def build_model(
    spec: dict[str, Any], weights: dict[str, np.ndarray], scaling: Normalization | None = None
) -> ov.Model:
    """The OpenVINO model of a translated graph: NHWC float32 input, or with `scaling` uint8 RGB pixels
    scaled inside as the weights expect; the graph's outputs out (image outputs in NHWC, as Keras gives
    them)."""
    rank = int(spec["input_rank"])
    shape = spec.get("input_shape") or [None] * rank
    kind = ov.Type.f32 if scaling is None else ov.Type.u8
    partial_shape = ov.PartialShape([-1 if d is None else int(d) for d in shape])
    pixels = ops.parameter(partial_shape, kind, name=INPUT_NAME)
    pixels.output(0).get_tensor().set_names({INPUT_NAME})
    first = _transposed(pixels, _TO_NCHW) if rank == 4 else pixels
    if scaling is not None:
        first = _scaled(first, scaling)
    tensors: dict[str, Node] = {spec["input"]: first}
    for node in spec["nodes"]:
        tensors[node["output"]] = _operation(node, [tensors[name] for name in node["inputs"]], weights)
    results = []
    for index, name in enumerate(spec["outputs"]):
        y = tensors[name]
        if _rank(y) == 4:
            y = _transposed(y, _TO_NHWC)
        result = ops.result(y)
        result.output(0).get_tensor().set_names({f"output_{index}"})
        results.append(result)
    return ov.Model(results, [pixels], "imagenet_zoo")


def _scaled(pixels: Node, scaling: Normalization) -> Node:
    """NCHW uint8 pixels as the weights' float32 input: channels in their order, x / std - mean / std.

    Scaled after the transpose, where each channel is a plane (a per-channel constant over the last axis
    of 3 is slow on the CPU), as a multiply-add, which the CPU plugin fuses (figures: docs/benchmarks.md)."""
    if _rank(pixels) != 4:
        raise ModelTranslationError("only a network with an image input takes pixels")
    x = ops.convert(pixels, ov.Type.f32)
    if scaling.channels != (0, 1, 2):
        x = ops.gather(x, ops.constant(np.array(scaling.channels, np.int64)), ops.constant(np.int64(1)))
    scale = 1.0 / scaling.std.astype(np.float64)
    shift = -scaling.mean.astype(np.float64) * scale
    return ops.add(ops.multiply(x, _channels(scale, 4)), _channels(shift, 4))
