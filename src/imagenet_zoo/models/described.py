"""The zoo's networks as data: each network's Keras configuration (what `get_config()` returns, the
layers Keras names itself numbered from a fresh session) and its layers' weight shapes, shipped in
`models/networks/`, so the engines build a network without importing Keras (`engines.graph.translate`
reads only what `DescribedNetwork` offers).

`scripts/write_network_descriptions.py` writes them from Keras; a test keeps them equal to what Keras
builds. A description that is malformed or was tampered with is refused with `ModelTranslationError`; a
weights file that does not cover the described layers, with `WeightsFormatError`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.errors import ModelTranslationError, UsageError, WeightsFormatError
from imagenet_zoo.model_types import LayerReader, LayerWeights, Pooling, RegisteredModel
from imagenet_zoo.specs import ModelSpec, Task

FORMAT = 1
MAX_DESCRIPTION_BYTES = 8 * 2**20  # unpacked; the largest (InceptionV3) is 0.6 MB


@dataclass(frozen=True)
class NetworkDescription:
    """One network: its Keras configuration, and each layer's weights as (variable, shape), in the order
    the layers come and `get_weights()` gives them."""

    config: dict[str, Any]
    weights: list[tuple[str, list[tuple[str, tuple[int, ...]]]]]


def describe(network: Any) -> dict[str, Any]:
    """A Keras network as the JSON a description file holds for one task."""
    weights = [
        [layer.name, [[v.path.rsplit("/", 1)[-1], list(v.shape)] for v in layer.weights]]
        for layer in network.layers
        if layer.weights
    ]
    return {"config": json.loads(json.dumps(network.get_config())), "weights": weights}


def fresh_network(model: RegisteredModel, task: Task) -> Any:
    """The Keras network a description of `model` for `task` is made from: built in a fresh Keras
    session, so the layers Keras names itself are numbered from the start, whatever was built before."""
    from imagenet_zoo.models._keras import import_keras

    import_keras().backend.clear_session()
    include_top = task == "classify"
    pooling: Pooling = None if include_top else "avg"
    return model.build(weights=None, include_top=include_top, pooling=pooling, input_shape=None)


@dataclass(frozen=True)
class Described:
    """The network source of a zoo model (`RegisteredModel.network`): the description shipped as `name`
    (a model registered again under another name keeps its network), with the weights file read by
    `read_layers`."""

    name: str
    read_layers: LayerReader

    def __call__(self, spec: ModelSpec, weights: Path | None, task: Task) -> DescribedNetwork:
        layers = None if weights is None else self.read_layers(weights)
        return DescribedNetwork(network_description(self.name, task), layers, str(weights))


def pretrained_network(model: RegisteredModel, task: Task) -> DescribedNetwork:
    """A zoo model's network for `task` with its pretrained weights (fetched now if needed)."""
    if not isinstance(model.network, Described):
        raise UsageError(f"{model.spec.name} has no shipped description to build it from")
    weights = model.weights.fetch(model.spec, include_top=task == "classify", progress=False)
    return model.network(model.spec, weights, task)


def description_path(model: str) -> Any:
    return resources.files(__package__) / "networks" / f"{model}.json.gz"


def network_description(model: str, task: Task) -> NetworkDescription:
    """The shipped description of `model`'s network for `task` (logits, or pooled features)."""
    path = description_path(model)
    try:
        with path.open("rb") as packed, gzip.open(packed) as unpacked:
            text = unpacked.read(MAX_DESCRIPTION_BYTES + 1)
        if len(text) > MAX_DESCRIPTION_BYTES:
            raise ValueError(f"larger than {MAX_DESCRIPTION_BYTES} bytes unpacked")
        document = json.loads(text)
        if document["format"] != FORMAT:
            raise ValueError(f"format {document['format']!r}, not {FORMAT}")
        return _checked(document[task])
    except (OSError, EOFError, KeyError, TypeError, ValueError, gzip.BadGzipFile) as exc:
        raise ModelTranslationError(f"the shipped description of {model} is unreadable: {exc!r}") from None


def _checked(entry: dict[str, Any]) -> NetworkDescription:
    config = entry["config"]
    if not (isinstance(config, dict) and isinstance(config["layers"], list)):
        raise ValueError("its configuration has no list of layers")
    weights = [
        (str(layer), [(str(variable), tuple(int(n) for n in shape)) for variable, shape in variables])
        for layer, variables in entry["weights"]
    ]
    return NetworkDescription(config, weights)


class DescribedNetwork:
    """What `engines.graph.translate` reads of a `keras.Model`, made from a description and a weights
    file's arrays by layer name (or, with `layers=None`, weights drawn as Keras initialises them)."""

    def __init__(self, description: NetworkDescription, layers: LayerWeights | None, source: str) -> None:
        self._config, self._variables = description.config, description.weights
        self._weights = dict(_drawn(description) if layers is None else _covered(description, layers, source))
        self.name = str(self._config.get("name", "network"))
        self.input_shape = tuple(_input_layer(self._config)["config"]["batch_shape"])

    @property
    def variables(self) -> list[tuple[str, list[tuple[str, tuple[int, ...]]]]]:
        """Each layer with weights, in order, and its variables' names and shapes."""
        return self._variables

    def get_config(self) -> dict[str, Any]:
        return self._config

    def get_layer(self, name: str) -> _DescribedLayer:
        return _DescribedLayer(self._weights.get(name, []))


@dataclass(frozen=True)
class _DescribedLayer:
    weights: list[np.ndarray]

    def get_weights(self) -> list[np.ndarray]:
        return self.weights


def _input_layer(config: dict[str, Any]) -> dict[str, Any]:
    for layer in config["layers"]:
        if layer.get("class_name") == "InputLayer":
            return layer  # type: ignore[no-any-return]
    raise ModelTranslationError(f"the description of {config.get('name')} has no input layer")


def _covered(
    description: NetworkDescription, layers: LayerWeights, source: str
) -> Iterator[tuple[str, list[np.ndarray]]]:
    """Each described layer's arrays from the file, which must hold every one in its shape: by name, or
    in the order of the layers that have weights."""
    if isinstance(layers, Mapping):
        found = [(layer, layers.get(layer)) for layer, _ in description.weights]
    elif len(layers) == len(description.weights):
        found = [(layer, arrays) for (layer, _), (_, arrays) in zip(description.weights, layers, strict=True)]
    else:
        raise WeightsFormatError(
            f"{source} holds {len(layers)} layers with weights; the network has {len(description.weights)}"
        )
    for (layer, arrays), (_, variables) in zip(found, description.weights, strict=True):
        if arrays is None:
            raise WeightsFormatError(f"{source} has no weights for the layer {layer}")
        shapes = [shape for _, shape in variables]
        if [tuple(a.shape) for a in arrays] != shapes:
            got = [tuple(a.shape) for a in arrays]
            raise WeightsFormatError(f"{source}: the layer {layer} has weights of shapes {got}, not {shapes}")
        yield layer, [np.asarray(a, dtype=np.float32) for a in arrays]


def _drawn(description: NetworkDescription, seed: int = 0) -> Iterator[tuple[str, list[np.ndarray]]]:
    """Every weight drawn with numpy, as Keras's default initializers draw them: Glorot-uniform kernels,
    zero biases, shifts and means, unit scales and variances (random weights, for benchmarks)."""
    rng = np.random.default_rng(seed)
    for layer, variables in description.weights:
        yield layer, [draw_weight(rng, variable, shape) for variable, shape in variables]


def draw_weight(rng: np.random.Generator, variable: str, shape: tuple[int, ...]) -> np.ndarray:
    if variable in ("gamma", "moving_variance"):
        return np.ones(shape, np.float32)
    if len(shape) < 2:
        return np.zeros(shape, np.float32)
    receptive = int(np.prod(shape[:-2]))
    limit = np.sqrt(6 / ((shape[-2] + shape[-1]) * receptive))
    return rng.uniform(-limit, limit, shape).astype(np.float32)
