"""The neighbour vote as a Keras layer: the head `train --head neighbours` fits (`transfer/heads.py`).

It lives with the model sources because loading a bundle needs it registered: Keras's safe mode then
deserializes it as imagenet-zoo's own code, never the file's. This module imports Keras: import it only
where a Keras model is built or loaded.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from imagenet_zoo.models._keras import import_keras

keras = import_keras()
_Layer: Any = keras.layers.Layer

MAX_VOTE_WEIGHTS = 2**27  # prototypes and class membership: 512 MB of float32 at most


@keras.saving.register_keras_serializable(package="imagenet_zoo")
class NeighbourVote(_Layer):  # type: ignore[misc]
    """logit_c = log(mean over training photos i of class c of exp(cos(x, x_i) / T)); softmax of these
    logits is each class's share of the averaged votes."""

    def __init__(
        self,
        prototypes: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        center: np.ndarray | None = None,
        classes: int = 2,
        temperature: float = 0.05,
        *,
        count: int | None = None,
        dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # A loaded layer is rebuilt from (count, dim) and gets its arrays from the saved weights.
        self.count = int(count if prototypes is None else len(prototypes))  # type: ignore[arg-type]
        self.dim = int(dim if prototypes is None else prototypes.shape[1])  # type: ignore[arg-type]
        self.classes, self.temperature = int(classes), float(temperature)
        # The config comes from the bundle file: bounds before any weight is allocated (a temperature of
        # 0 gave NaN scores).
        positive = self.count > 0 and self.dim > 0 and self.classes > 0
        if not (positive and self.count * (self.dim + self.classes) <= MAX_VOTE_WEIGHTS):
            raise ValueError(f"neighbour vote sizes out of bounds: {self.count}x{self.dim}, {self.classes}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"the neighbour vote's temperature must be positive, got {self.temperature}")
        self._init = (prototypes, labels, center)
        self.build()

    def build(self, input_shape: Any = None) -> None:
        prototypes, labels, center = self._init
        membership = None if labels is None else np.eye(self.classes, dtype="float32")[labels]
        self.prototypes = self._constant("prototypes", (self.count, self.dim), prototypes)
        self.membership = self._constant("membership", (self.count, self.classes), membership)
        self.center = self._constant("center", (self.dim,), center)
        self.built = True

    def _constant(self, name: str, shape: tuple[int, ...], value: np.ndarray | None) -> Any:
        initializer = "zeros" if value is None else keras.initializers.Constant(value.astype("float32"))
        return self.add_weight(name=name, shape=shape, initializer=initializer, trainable=False)

    def call(self, features: Any) -> Any:
        ops = keras.ops
        directions = ops.normalize(features - self.center, axis=-1)
        scaled = ops.matmul(directions, ops.transpose(self.prototypes)) / self.temperature  # (batch, n)
        # A log mean per class, shifted by each row's largest vote so nothing overflows, as two matrix
        # products: no batch x photos x classes tensor (256 MB a batch at 20,000 photos and 100 classes).
        shift = ops.max(scaled, axis=-1, keepdims=True)
        votes = ops.matmul(ops.exp(scaled - shift), self.membership)  # (batch, classes)
        members = ops.maximum(ops.sum(self.membership, axis=0), 1.0)
        return ops.log(ops.maximum(votes, 1e-30) / members) + shift

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(count=self.count, dim=self.dim, classes=self.classes, temperature=self.temperature)
        return config
