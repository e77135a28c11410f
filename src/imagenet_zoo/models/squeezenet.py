"""SqueezeNet 1.1 (Iandola et al., 2016): AlexNet-level accuracy in about 5 MB, written in Keras.

Fire modules: a 1x1 "squeeze" convolution feeding parallel 1x1 and 3x3 "expand" convolutions whose outputs
are concatenated. The weights are torchvision's published checkpoint, read with the no-torch,
no-code-execution reader and assigned on load (1.2 M parameters: milliseconds). Layout matches
torchvision exactly, including max-pooling with `ceil_mode=True` and the ReLU before the final average.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from imagenet_zoo.errors import WeightsFormatError
from imagenet_zoo.model_types import Pooling, RegisteredModel
from imagenet_zoo.models._keras import assign_layers, import_keras
from imagenet_zoo.models.described import Described
from imagenet_zoo.specs import DataConfig, ModelSpec, PublishedAccuracy, WeightsFile
from imagenet_zoo.weights.store import DownloadedWeights
from imagenet_zoo.weights.torch_pickle import load_state_dict


class _Fire(NamedTuple):
    position: int  # position in torchvision's `features` Sequential (names the state-dict keys)
    squeeze: int
    expand: int  # channels of each expand branch


# torchvision squeezenet1_1 `features`: conv(0) relu(1) pool(2) fire(3) fire(4) pool(5) fire(6) fire(7)
# pool(8) fire(9..12). Entries: a _Fire, or "pool".
_FEATURES: tuple[_Fire | str, ...] = (
    "pool",
    _Fire(3, 16, 64),
    _Fire(4, 16, 64),
    "pool",
    _Fire(6, 32, 128),
    _Fire(7, 32, 128),
    "pool",
    _Fire(9, 48, 192),
    _Fire(10, 48, 192),
    _Fire(11, 64, 256),
    _Fire(12, 64, 256),
)


def _ceil_pool(keras: Any, x: Any, name: str) -> Any:
    """3x3/2 max-pooling with PyTorch's ceil_mode: the last window may hang over the edge.

    The input follows a ReLU (never negative), so padding with zeros cannot change any maximum.
    """
    size = int(x.shape[1])
    extra = (math.ceil((size - 3) / 2) + 1) - ((size - 3) // 2 + 1)
    if extra:
        x = keras.layers.ZeroPadding2D(((0, extra), (0, extra)), name=f"{name}_ceil_pad")(x)
    return keras.layers.MaxPooling2D(3, 2, name=name)(x)


def _fire(keras: Any, x: Any, fire: _Fire) -> Any:
    L, name = keras.layers, f"fire{fire.position}"
    squeezed = L.Conv2D(fire.squeeze, 1, activation="relu", name=f"{name}_squeeze")(x)
    e1 = L.Conv2D(fire.expand, 1, activation="relu", name=f"{name}_expand1x1")(squeezed)
    e3 = L.Conv2D(fire.expand, 3, padding="same", activation="relu", name=f"{name}_expand3x3")(squeezed)
    return L.Concatenate(name=f"{name}_concat")([e1, e3])


def build_squeezenet1_1(
    *, weights: Path | None, include_top: bool, pooling: Pooling, input_shape: tuple[int, int, int] | None
) -> Any:
    keras = import_keras()
    L = keras.layers
    inputs = keras.Input(shape=input_shape or (224, 224, 3), name="pixels")
    x = L.Conv2D(64, 3, strides=2, activation="relu", name="conv1")(inputs)
    for n, part in enumerate(_FEATURES):
        x = _ceil_pool(keras, x, f"pool{n}") if part == "pool" else _fire(keras, x, part)  # type: ignore[arg-type]
    features = x
    head = L.Conv2D(1000, 1, activation="relu", name="classifier_conv")(
        L.Dropout(0.5, name="classifier_dropout")(x)
    )
    logits = L.GlobalAveragePooling2D(name="predictions")(head)
    classifier = keras.Model(inputs, logits, name="squeezenet1_1")
    if weights is not None:
        assign_layers(classifier, read_torchvision_layers(weights), str(weights))
    if include_top:
        return classifier
    pooled = {"avg": L.GlobalAveragePooling2D(name="avg_pool"), "max": L.GlobalMaxPooling2D(name="max_pool")}
    outputs = pooled[pooling](features) if pooling else features
    return keras.Model(inputs, outputs, name="squeezenet1_1_features")


def _keras_layer(torch_prefix: str) -> str:
    """`features.0` -> conv1, `features.3.squeeze` -> fire3_squeeze, `classifier.1` -> classifier_conv."""
    parts = torch_prefix.split(".")
    if parts == ["features", "0"]:
        return "conv1"
    if parts == ["classifier", "1"]:
        return "classifier_conv"
    if len(parts) == 3 and parts[0] == "features":
        return f"fire{int(parts[1])}_{parts[2]}"
    raise KeyError(torch_prefix)


def read_torchvision_layers(path: Path) -> dict[str, list[np.ndarray[Any, Any]]]:
    """A torchvision squeezenet1_1 checkpoint's arrays by Keras layer name, in Keras's layout."""
    grouped: dict[str, dict[str, np.ndarray[Any, Any]]] = {}
    for key, value in load_state_dict(path).items():
        prefix, _, leaf = key.rpartition(".")
        grouped.setdefault(prefix, {})[leaf] = value
    try:
        return {_keras_layer(p): [t["weight"].transpose(2, 3, 1, 0), t["bias"]] for p, t in grouped.items()}
    except KeyError as exc:
        raise WeightsFormatError(
            f"not a torchvision squeezenet1_1 state dict: unexpected entry {exc}"
        ) from None


SQUEEZENET1_1 = ModelSpec(
    name="squeezenet1_1",
    family="squeezenet",
    data_config=DataConfig(input_size=224, mode="torch"),
    weights=WeightsFile(
        "squeezenet1_1-b8a52dc0.pth",
        "b8a52dc049b60e4b6ab68ad0df457362afab8b6304b2febdc1650a5dab4d7e7b",
        4_830_000,  # as published (4.83 MB); the SHA-256 is what is checked
        url="https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
    ),
    num_params=1_235_496,
    gflops=0.698,
    accuracy=PublishedAccuracy(58.178, 80.624),
    license="BSD-3-Clause (torchvision)",
    source="https://arxiv.org/abs/1602.07360",
    aliases=("squeezenet", "squeezenet-1.1"),
)

MODELS = (
    RegisteredModel(
        SQUEEZENET1_1,
        build_squeezenet1_1,
        DownloadedWeights(),
        Described(SQUEEZENET1_1.name, read_torchvision_layers),
    ),
)
