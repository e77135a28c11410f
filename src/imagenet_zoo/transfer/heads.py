"""The heads `train` fits on pooled features, as data: a dense layer (`LinearHead`, fitted by
`linear_head.py`) and a nearest-neighbour vote (`NeighbourHead`). Each gives its logits with numpy and its
layers for the bundle's model file (`models.keras_archive`), so neither needs Keras.

A nearest-neighbour head: classes of new photos from their similarity to the training photos' features.

With a few photos per class, or a class made of many kinds of thing (dogs of breeds the training set never
showed), a linear head on frozen features generalizes poorly, while a new photo's nearest training photos in
feature space usually share its class. This head is the weighted k-NN classifier that self-supervised
learning uses to evaluate features (Wu et al. 2018, DINO), made smooth: every training photo votes for its
class with weight exp(cosine similarity / temperature), and each class's votes are averaged, so a common
class does not win by number. The temperature is chosen by leave-one-out on the training photos alone.

The Keras layer that votes is `models.neighbour_vote.NeighbourVote`: Keras loads bundles with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from imagenet_zoo.models.keras_archive import FLOAT32_POLICY, ArchiveLayer, dense_layer, dropout_layer
from imagenet_zoo.transfer.linear_head import DROPOUT, LinearFit

TEMPERATURES = (0.02, 0.05, 0.1, 0.2)
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


@dataclass(frozen=True)
class LinearHead:
    """A dense layer (after the dropout it was trained behind): logits = features @ kernel + bias."""

    fit: LinearFit

    def logits(self, features: np.ndarray) -> np.ndarray:
        logits: np.ndarray = features @ self.fit.kernel + self.fit.bias
        return logits

    def layers(self) -> list[ArchiveLayer]:
        dense = dense_layer("predictions", self.fit.kernel, self.fit.bias)
        return [dropout_layer("head_dropout", DROPOUT), dense]


@dataclass(frozen=True)
class NeighbourHead:
    """The fitted vote (`models.neighbour_vote.NeighbourVote`'s arithmetic, in numpy)."""

    fit: NeighbourFit
    classes: int

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Each class's log mean vote, shifted by the row's largest so nothing overflows, as the layer
        computes it."""
        scaled = _unit(features - self.fit.center) @ self.fit.prototypes.T / self.fit.temperature
        shift = scaled.max(axis=1, keepdims=True)
        membership = np.eye(self.classes)[self.fit.labels]
        votes = np.exp(scaled - shift) @ membership
        members = np.maximum(membership.sum(axis=0), 1.0)
        logits: np.ndarray = np.log(np.maximum(votes, 1e-30) / members) + shift
        return logits

    def layers(self) -> list[ArchiveLayer]:
        fit = self.fit
        count, dim = fit.prototypes.shape
        config = {"name": "neighbour_vote", "trainable": True, "dtype": FLOAT32_POLICY, "count": int(count),
                  "dim": int(dim), "classes": self.classes, "temperature": fit.temperature}  # fmt: skip
        membership = np.eye(self.classes, dtype=np.float32)[fit.labels]
        return [
            ArchiveLayer(
                "NeighbourVote",
                config,
                [fit.prototypes, membership, fit.center],
                module="imagenet_zoo.models.neighbour_vote",
                registered_name="imagenet_zoo>NeighbourVote",
                build_config={"shapes_dict": {}},
            )
        ]


def neighbour_head(fit: NeighbourFit, classes: int) -> Any:
    """The fitted vote as a Keras model: pooled features in, logits out (what Keras loads a bundle's
    vote as)."""
    from imagenet_zoo.models._keras import import_keras
    from imagenet_zoo.models.neighbour_vote import NeighbourVote

    keras = import_keras()
    features = keras.Input((fit.prototypes.shape[1],), name="pooled_features")
    logits = NeighbourVote(fit.prototypes, fit.labels, fit.center, classes, fit.temperature)(features)
    return keras.Model(features, logits, name="neighbour_head")


def _unit(x: np.ndarray) -> np.ndarray:
    unit: np.ndarray = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return unit


def _vote(similarity: np.ndarray, labels: np.ndarray, classes: int, temperature: float) -> np.ndarray:
    weights = np.exp((similarity - 1.0) / temperature)  # shifted by the largest possible cosine: no overflow
    return np.stack([weights[:, labels == c].mean(axis=1) for c in range(classes)], axis=1)


def _balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    recalls = [np.mean(predicted[labels == c] == c) for c in range(classes) if np.any(labels == c)]
    return float(np.mean(recalls))
