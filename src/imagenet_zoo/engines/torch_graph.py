"""A translated graph (`graph.Graph`) as a torch module, each operation with Keras's
semantics. Images are (batch, channels, rows, columns) tensors in channels-last memory: an NHWC numpy
batch is one of those without a copy.

Imports torch, never Keras or TensorFlow: a cached graph runs without either.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imagenet_zoo.engines.graph import same_pads
from imagenet_zoo.errors import ModelTranslationError


def _pads(x: torch.Tensor, kernel: list[int], stride: list[int], dilation: list[int]) -> list[int]:
    """F.pad's (left, right, top, bottom) for "same" on `x`'s rows and columns."""
    top, bottom = same_pads(x.shape[2], kernel[0], stride[0], dilation[0])
    left, right = same_pads(x.shape[3], kernel[1], stride[1], dilation[1])
    return [left, right, top, bottom]


def _symmetric(pads: list[int]) -> tuple[int, int] | None:
    """(rows, columns) padding when it is the same on both sides of each axis, else None."""
    left, right, top, bottom = pads
    return (top, left) if left == right and top == bottom else None


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    functions: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "linear": lambda x: x,
        "relu": F.relu,
        "relu6": F.relu6,
        "sigmoid": torch.sigmoid,
        "softmax": lambda x: torch.softmax(x, dim=1),
        "swish": F.silu,
        "silu": F.silu,
        "tanh": torch.tanh,
        "hard_sigmoid": lambda x: torch.clamp(x / 6.0 + 0.5, 0.0, 1.0),  # Keras 3's definition
    }
    return functions[name]


class Conv(nn.Module):
    def __init__(self, attrs: dict[str, Any], weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.kernel, self.stride, self.dilation = attrs["kernel"], attrs["stride"], attrs["dilation"]
        self.same = attrs["padding"] == "same"
        self.groups = attrs["groups"]
        self.activation = _activation(attrs["activation"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding: tuple[int, int] = (0, 0)
        if self.same:
            pads = _pads(x, self.kernel, self.stride, self.dilation)
            symmetric = _symmetric(pads)
            if symmetric is None:
                x = F.pad(x, pads)
            else:
                padding = symmetric
        y = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        return self.activation(y)


class Dense(nn.Module):
    def __init__(self, attrs: dict[str, Any], weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.activation = _activation(attrs["activation"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(F.linear(x, self.weight, self.bias))


class Affine(nn.Module):
    """A batch normalization that follows no linear layer: x * scale + shift per channel."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, rank: int) -> None:
        super().__init__()
        shape = (1, -1, 1, 1) if rank == 4 else (1, -1)
        self.scale = nn.Parameter(scale.reshape(shape), requires_grad=False)
        self.shift = nn.Parameter(shift.reshape(shape), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class Relu(nn.Module):
    """Keras's ReLU layer: max_value caps it, negative_slope leaks below threshold."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.cap, self.slope, self.threshold = attrs["max_value"], attrs["negative_slope"], attrs["threshold"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.slope == 0 and self.threshold == 0:
            return F.relu(x) if self.cap is None else torch.clamp(x, 0.0, float(self.cap))
        y = torch.where(x >= self.threshold, x, self.slope * (x - self.threshold))
        return y if self.cap is None else torch.clamp(y, max=float(self.cap))


class Activation(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.function = _activation(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


class ZeroPad(nn.Module):
    def __init__(self, pads: list[int]) -> None:
        super().__init__()
        top, bottom, left, right = pads
        self.pads = [left, right, top, bottom]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads)


class Pool(nn.Module):
    """Max or average pooling; with "same" padding, TensorFlow's: padded pixels never win a maximum and
    are left out of each average."""

    def __init__(self, reduce: str, attrs: dict[str, Any]) -> None:
        super().__init__()
        self.kernel, self.stride, self.same = attrs["kernel"], attrs["stride"], attrs["padding"] == "same"
        self.pool = F.max_pool2d if reduce == "max" else partial(F.avg_pool2d, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.same:
            return self.pool(x, self.kernel, self.stride)
        pads = _pads(x, self.kernel, self.stride, [1, 1])
        symmetric = _symmetric(pads)
        if symmetric is not None and 2 * max(symmetric) <= min(self.kernel):
            return self.pool(x, self.kernel, self.stride, symmetric)
        if self.pool is F.max_pool2d:
            return F.max_pool2d(F.pad(x, pads, value=-math.inf), self.kernel, self.stride)
        ones = torch.ones((1, 1, x.shape[2], x.shape[3]), dtype=x.dtype, device=x.device)
        sums = F.avg_pool2d(F.pad(x, pads), self.kernel, self.stride)
        counts = F.avg_pool2d(F.pad(ones, pads), self.kernel, self.stride)
        return sums / counts


class GlobalPool(nn.Module):
    def __init__(self, reduce: str, keepdims: bool) -> None:
        super().__init__()
        self.reduce, self.keepdims = reduce, keepdims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reduce == "mean":
            return x.mean(dim=(2, 3), keepdim=self.keepdims)
        return x.amax(dim=(2, 3), keepdim=self.keepdims)


class Flatten(nn.Module):
    """Keras flattens rows, then columns, then channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x.flatten(1)


class Sum(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total


class Concat(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.axis)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class NeighbourVote(nn.Module):
    """`models.neighbour_vote.NeighbourVote`, computed in float32 whatever the model's precision: the
    cosines are scaled by 1/temperature (up to 50) before the exponential."""

    def __init__(
        self, temperature: float, prototypes: torch.Tensor, membership: torch.Tensor, center: torch.Tensor
    ) -> None:
        super().__init__()
        self.temperature = temperature
        self.prototypes = nn.Parameter(prototypes, requires_grad=False)
        self.membership = nn.Parameter(membership, requires_grad=False)
        self.center = nn.Parameter(center, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prototypes, membership = self.prototypes.float(), self.membership.float()
        directions = F.normalize(x.float() - self.center.float(), dim=-1, eps=1e-6)
        scaled = directions @ prototypes.T / self.temperature
        shift = scaled.amax(dim=-1, keepdim=True)
        votes = torch.exp(scaled - shift) @ membership
        members = torch.clamp(membership.sum(dim=0), min=1.0)
        return (torch.log(torch.clamp(votes, min=1e-30) / members) + shift).to(x.dtype)


def _module(node: dict[str, Any], weights: dict[str, torch.Tensor]) -> nn.Module:
    op, attrs, name = node["op"], node["attrs"], node["name"]

    def weight(key: str) -> torch.Tensor:
        return weights[f"{name}.{key}"]

    def bias() -> torch.Tensor | None:
        return weights.get(f"{name}.bias")

    builders: dict[str, Callable[[], nn.Module]] = {
        "conv2d": lambda: Conv(attrs, weight("weight"), bias()),
        "dense": lambda: Dense(attrs, weight("weight"), bias()),
        "affine": lambda: Affine(weight("scale"), weight("shift"), node["rank"]),
        "relu": lambda: Relu(attrs),
        "activation": lambda: Activation(attrs["activation"]),
        "zero_pad": lambda: ZeroPad(attrs["pads"]),
        "max_pool": lambda: Pool("max", attrs),
        "avg_pool": lambda: Pool("avg", attrs),
        "global_avg_pool": lambda: GlobalPool("mean", attrs["keepdims"]),
        "global_max_pool": lambda: GlobalPool("max", attrs["keepdims"]),
        "flatten": Flatten,
        "add": Sum,
        "concat": lambda: Concat(attrs["axis"]),
        "identity": Identity,
        "neighbour_vote": lambda: NeighbourVote(
            attrs["temperature"], weight("prototypes"), weight("membership"), weight("center")
        ),
    }
    if op not in builders:
        raise ModelTranslationError(f"the stored graph has an unknown operation {op!r} ({name})")
    return builders[op]()


class GraphModule(nn.Module):
    """Runs a translated graph: an NCHW (or (batch, features)) tensor in, the graph's outputs out, every
    image output back in Keras's NHWC order. Each intermediate tensor is released after its last use."""

    def __init__(self, spec: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.input_name: str = spec["input"]
        self.output_names: list[str] = spec["outputs"]
        self.ops = nn.ModuleList(_module(node, weights) for node in spec["nodes"])
        self.wiring: list[tuple[list[str], str]] = [
            (node["inputs"], node["output"]) for node in spec["nodes"]
        ]
        self.releases = _last_uses(self.wiring, set(self.output_names))
        self.float32_from = len(self.ops)  # the first step computed in float32 whatever the rest is

    def lower_precision(self, dtype: torch.dtype) -> GraphModule:
        """This module computing in `dtype` up to its last convolution. What follows (pooling, the
        classifier) stays float32, as Keras's mixed precision keeps a model's last layer: the logits are
        not rounded to 8 bits (bf16 steps by 0.0625 at 10). Those layers hold under 1 % of every zoo
        network's multiply-adds (VGG's three dense layers 0.8 %)."""
        convolutions = [step for step, op in enumerate(self.ops) if isinstance(op, Conv)]
        self.float32_from = convolutions[-1] + 1 if convolutions else 0
        for op in self.ops[: self.float32_from]:
            op.to(dtype)
        return self

    def forward(self, x: torch.Tensor, *, keras_layout: bool = True) -> list[torch.Tensor]:
        """The outputs; `keras_layout=False` leaves image outputs NCHW (the tensors the graph computed, for
        gradients with respect to them)."""
        tensors = {self.input_name: x}
        steps = zip(self.ops, self.wiring, self.releases, strict=True)
        for step, (op, (inputs, output), released) in enumerate(steps):
            args = [tensors[name] for name in inputs]
            if step >= self.float32_from:
                args = [a.float() for a in args]
            tensors[output] = op(*args)
            for name in released:
                del tensors[name]
        outputs = [tensors[name] for name in self.output_names]
        return [y.permute(0, 2, 3, 1) if y.dim() == 4 and keras_layout else y for y in outputs]


def _last_uses(wiring: list[tuple[list[str], str]], keep: set[str]) -> list[list[str]]:
    """For each step, the tensors no later step reads (and that are not outputs): released after it."""
    remaining = Counter(name for inputs, _ in wiring for name in inputs)
    releases = []
    for inputs, _ in wiring:
        done = []
        for name in dict.fromkeys(inputs):
            remaining[name] -= inputs.count(name)
            if remaining[name] == 0 and name not in keep:
                done.append(name)
        releases.append(done)
    return releases
