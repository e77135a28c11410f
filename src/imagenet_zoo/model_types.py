"""The types every model family and the registry share: a model is a spec, a builder and a weights provider.

They live below both `models/` and `registry`, so the registry depends on the model families and never the
reverse. Not in `specs`: `weights/` imports `specs`, and a `RegisteredModel` holds a `WeightsProvider`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from imagenet_zoo.specs import ModelSpec, Task
from imagenet_zoo.weights.store import WeightsProvider

Pooling = Literal["avg", "max"] | None
# A weights file's arrays by Keras layer, each layer's in the order and layout `get_weights()` gives.
# By name, or (a legacy HDF5 file, whose layer names Keras does not keep stable) in the order of the
# network's layers that have weights, as Keras loads those files.
NamedLayerWeights = Mapping[str, Sequence[np.ndarray]]
LayerWeights = NamedLayerWeights | Sequence[tuple[str, Sequence[np.ndarray]]]
LayerReader = Callable[[Path], LayerWeights]
# What `engines.graph.translate` reads (a Keras model, or a stand-in offering `get_config()` and
# `get_layer(name).get_weights()`) for a task, from the model's weights file (None: random weights).
NetworkSource = Callable[[ModelSpec, Path | None, Task], Any]


class ModelBuilder(Protocol):
    """One signature for every model (as `keras.applications`): returns a `keras.Model` producing logits."""

    def __call__(
        self,
        *,
        weights: Path | None,
        include_top: bool,
        pooling: Pooling,
        input_shape: tuple[int, int, int] | None,
    ) -> Any: ...


@dataclass(frozen=True)
class RegisteredModel:
    """A model ready to be built: what it expects (spec), how to build it, and where its weights are.

    `network` gives the engines the network without Keras: the zoo's from their shipped descriptions
    (`models.described`), a bundle's from its file (`models.keras_archive`); without it, they translate
    the Keras model `build` makes."""

    spec: ModelSpec
    build: ModelBuilder
    weights: WeightsProvider
    network: NetworkSource | None = None

    @property
    def weights_available(self) -> bool:
        """Packaged weights are always at hand; downloaded ones only once they are cached."""
        return self.spec.weights.url is None or self.weights.is_present(self.spec)
