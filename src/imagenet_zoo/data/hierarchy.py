"""What kind of thing a photo shows: ImageNet-1k's classes as leaves of the WordNet noun hierarchy.

ImageNet has 118 dog breeds and no "dog". The 1,000 classes are leaves of WordNet's is-a hierarchy, so
the probability that a photo shows a dog is the sum of the softmax over the classes under "dog": a
zero-shot group classifier, no training. The hierarchy ships with the package (`labels/`, WordNet 3.0
relations as ImageNet published them: 1,860 synsets, the classes and their ancestors up to "entity").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from importlib.resources import files
from typing import Any

import numpy as np

from imagenet_zoo.data.labels import ClassLabel, imagenet1k
from imagenet_zoo.errors import UsageError

ROOT = "n00001740"  # entity


@dataclass(frozen=True)
class Synset:
    id: str  # WordNet id, e.g. n02084071
    parents: tuple[str, ...]
    lemmas: tuple[str, ...]  # the words that name it, e.g. ("dog", "domestic dog", "Canis familiaris")

    @property
    def name(self) -> str:
        return self.lemmas[0] if self.lemmas else self.id


@dataclass(frozen=True)
class GroupScore:
    """How likely a photo shows something of one kind: the summed probability of its classes."""

    name: str
    synset: str
    score: float
    classes: int  # how many of the 1,000 classes the group holds

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "synset": self.synset, "score": self.score, "classes": self.classes}


class Hierarchy:
    """The WordNet synsets above ImageNet-1k's classes, with the classes each one holds."""

    def __init__(self, synsets: Sequence[Synset]) -> None:
        self.synsets = {s.id: s for s in synsets}
        self._children: dict[str, list[str]] = {s.id: [] for s in synsets}
        for synset in synsets:
            for parent in synset.parents:
                self._children[parent].append(synset.id)
        self._class_index = {label.synset: label.index for label in imagenet1k()}

    def classes_under(self, synset: str) -> frozenset[int]:
        """Indices of the ImageNet-1k classes at or below `synset` (each once, however many paths)."""
        return self._classes_under[synset]

    @cached_property
    def _classes_under(self) -> dict[str, frozenset[int]]:
        result: dict[str, frozenset[int]] = {}

        def visit(synset: str) -> frozenset[int]:
            if synset not in result:
                own = {self._class_index[synset]} if synset in self._class_index else set()
                result[synset] = frozenset(own.union(*(visit(c) for c in self._children[synset])))
            return result[synset]

        for synset in self.synsets:
            visit(synset)
        return result

    @cached_property
    def depths(self) -> dict[str, int]:
        """Is-a steps from "entity" by the shortest path (a synset may have several parents)."""
        depths, frontier = {ROOT: 0}, [ROOT]
        while frontier:
            following = []
            for synset in frontier:
                for child in self._children[synset]:
                    if child not in depths:
                        depths[child] = depths[synset] + 1
                        following.append(child)
            frontier = following
        return depths

    def matching(self, word: str) -> list[Synset]:
        """Synsets one of whose lemmas has `word` as a whole word (case-insensitive), or that id's."""
        word = word.strip().lower()
        if word in self.synsets:
            return [self.synsets[word]]
        pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
        return [s for s in self.synsets.values() if any(pattern.search(lemma) for lemma in s.lemmas)]

    def group(self, word: str) -> Synset:
        """The synset a word names exactly (a lemma or a synset id); an unknown or ambiguous word is a
        usage error that lists the candidates, so the user can pick one by its id."""
        key = word.strip().lower()
        if key in self.synsets:
            return self.synsets[key]
        exact = [s for s in self.synsets.values() if key in (lemma.lower() for lemma in s.lemmas)]
        if len(exact) == 1:
            return exact[0]
        if not exact:
            near = ", ".join(f"{s.id} ({s.name})" for s in self.matching(key)[:8])
            raise UsageError(f"no group is named {word!r}" + (f"; close: {near}" if near else ""))
        listed = "; ".join(f"{s.id}: {', '.join(s.lemmas)}" for s in exact)
        raise UsageError(
            f"{word!r} names {len(exact)} groups ({listed}); give the synset id of the one you mean"
        )

    def scores(self, probabilities: np.ndarray, groups: Sequence[Synset]) -> tuple[GroupScore, ...]:
        """Each group's probability for one photo: the sum of its classes' softmax probabilities."""
        return tuple(
            GroupScore(
                g.name, g.id, float(probabilities[self._indices[g.id]].sum()), len(self._indices[g.id])
            )
            for g in groups
        )

    def top_groups(self, probabilities: np.ndarray, *, depth: int, k: int) -> tuple[GroupScore, ...]:
        """The `k` most likely groups among the synsets `depth` steps below "entity"."""
        level = self._levels.get(depth, [])
        return tuple(sorted(self.scores(probabilities, level), key=lambda g: -g.score)[:k])

    @cached_property
    def _indices(self) -> dict[str, np.ndarray]:
        """Each synset's class indices as an array, made once: scores are summed for every photo."""
        return {s: np.array(sorted(classes), dtype=np.intp) for s, classes in self._classes_under.items()}

    @cached_property
    def _levels(self) -> dict[int, list[Synset]]:
        levels: dict[int, list[Synset]] = {}
        for synset, depth in self.depths.items():
            levels.setdefault(depth, []).append(self.synsets[synset])
        return levels


def check_imagenet_labels(labels: Sequence[ClassLabel], model: str) -> None:
    """Groups are WordNet's, over ImageNet-1k's classes: a model with classes of its own has none."""
    if tuple(labels) != imagenet1k():
        raise UsageError(f"{model} has classes of its own: groups are WordNet's, over ImageNet-1k's")


def groups_for(words: Sequence[str], labels: Sequence[ClassLabel], model: str) -> list[Synset]:
    """The groups `words` name (lemmas or synset ids), for a model whose outputs are `labels`."""
    if words:
        check_imagenet_labels(labels, model)
    return [wordnet().group(word) for word in words]


@cache
def wordnet() -> Hierarchy:
    """The hierarchy shipped with the package (read once)."""
    text = files("imagenet_zoo.data.labels").joinpath("imagenet1k_wordnet_hierarchy.tsv").read_text("utf-8")
    synsets = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            synset, parents, lemmas = line.split("\t")
            synsets.append(
                Synset(synset, tuple(p for p in parents.split(",") if p), tuple(lemmas.split(", ")))
            )
    return Hierarchy(synsets)
