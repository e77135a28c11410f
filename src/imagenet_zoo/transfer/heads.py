"""A nearest-neighbour head: classes of new photos from their similarity to the training photos' features.

With a few photos per class, or a class made of many kinds of thing (dogs of breeds the training set never
showed), a linear head on frozen features generalizes poorly, while a new photo's nearest training photos in
feature space usually share its class. This head is the weighted k-NN classifier that self-supervised
learning uses to evaluate features (Wu et al. 2018, DINO), made smooth: every training photo votes for its
class with weight exp(cosine similarity / temperature), and each class's votes are averaged, so a common
class does not win by number. The temperature is chosen by leave-one-out on the training photos alone.

This module imports Keras: import it only where a Keras model is built or loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from imagenet_zoo.models._keras import import_keras

keras = import_keras()
_Layer: Any = keras.layers.Layer

TEMPERATURES = (0.02, 0.05, 0.1, 0.2)
MAX_VOTE_WEIGHTS = 2**27  # prototypes and class membership: 512 MB of float32 at most
_CHUNK = 1024


@dataclass(frozen=True)
class NeighbourFit:
    center: np.ndarray  # mean training feature, subtracted before comparing directions
    prototypes: np.ndarray  # the training features, centred and unit-length (n, d)
    labels: np.ndarray  # their classes (n,)
    temperature: float
    loo_balanced_accuracy: float  # of the chosen temperature, on the training photos


def fit_neighbours(features: np.ndarray, labels: np.ndarray, classes: int) -> NeighbourFit:
    """The training features as prototypes, and the temperature whose leave-one-out vote is best.

    The head keeps every training feature (5 KB per photo for Lite0): it is meant for the small
    datasets where it beats a dense layer, up to some tens of thousands of photos.
    """
    center = features.mean(axis=0)
    prototypes = _unit(features - center)
    predicted = np.empty((len(TEMPERATURES), len(labels)), int)
    for start in range(0, len(labels), _CHUNK):  # rows of the n x n similarity matrix, a chunk at a time
        similarity = prototypes[start : start + _CHUNK] @ prototypes.T
        rows = np.arange(len(similarity))
        similarity[rows, start + rows] = -np.inf  # leave one out: a photo never votes for itself
        for i, t in enumerate(TEMPERATURES):
            predicted[i, start : start + _CHUNK] = _vote(similarity, labels, classes, t).argmax(axis=1)
    scored = [(_balanced_accuracy(labels, predicted[i], classes), t) for i, t in enumerate(TEMPERATURES)]
    best, temperature = max(scored, key=lambda pair: (pair[0], pair[1]))  # ties: the smoother vote
    return NeighbourFit(center, prototypes, labels, temperature, best)


def neighbour_head(fit: NeighbourFit, classes: int) -> Any:
    """The fitted vote as a Keras model: pooled features in, logits out."""
    features = keras.Input((fit.prototypes.shape[1],), name="pooled_features")
    logits = NeighbourVote(fit.prototypes, fit.labels, fit.center, classes, fit.temperature)(features)
    return keras.Model(features, logits, name="neighbour_head")


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


def _unit(x: np.ndarray) -> np.ndarray:
    unit: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return unit


def _vote(similarity: np.ndarray, labels: np.ndarray, classes: int, temperature: float) -> np.ndarray:
    weights = np.exp((similarity - 1.0) / temperature)  # shifted by the largest possible cosine: no overflow
    return np.stack([weights[:, labels == c].mean(axis=1) for c in range(classes)], axis=1)


def _balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    recalls = [np.mean(predicted[labels == c] == c) for c in range(classes) if np.any(labels == c)]
    return float(np.mean(recalls))
