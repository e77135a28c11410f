"""Several models on the same photos, side by side: their top-k, their latency, and where they agree.

Models whose weights are not on this machine are reported with the command that fetches them; nothing
is downloaded behind the user's back.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from imagenet_zoo.api import load_pipeline
from imagenet_zoo.classifier import Classifier
from imagenet_zoo.data.images import find_images
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.pipeline import LoadConfig, PostOptions
from imagenet_zoo.records import Classification


@dataclass(frozen=True)
class ModelStatus:
    name: str
    ready: bool

    @property
    def fetch_command(self) -> str | None:
        return None if self.ready else f"imagenet-zoo weights fetch {self.name}"


@dataclass(frozen=True)
class TimedResult:
    result: Classification
    latency_ms: float


@dataclass
class PhotoComparison:
    path: str
    answers: list[TimedResult] = field(default_factory=list)

    def agreement(self) -> dict[str, Any]:
        """The most common top-1 label among the models that answered, and who gave it."""
        tops = {a.result.model: a.result.top.label for a in self.answers if a.result.ok}
        if not tops:
            return {"label": None, "models": [], "all_agree": False}
        label, _count = Counter(tops.values()).most_common(1)[0]
        agreeing = [model for model, top in tops.items() if top == label]
        return {"label": label, "models": agreeing, "all_agree": len(agreeing) == len(tops)}

    def to_dict(self) -> dict[str, Any]:
        answers = [{**a.result.to_dict(), "latency_ms": round(a.latency_ms, 2)} for a in self.answers]
        return {"path": self.path, "answers": answers, "agreement": self.agreement()}


def compare_models(
    sources: list[str], models: list[RegisteredModel], load: LoadConfig, *, top: int
) -> tuple[list[ModelStatus], list[PhotoComparison]]:
    """Every model on every photo of `sources` (files, folders or globs), one photo at a time, each loaded
    as `load` says (its model replaced)."""
    photos = find_images(sources)
    statuses = [ModelStatus(m.spec.name, m.weights_available) for m in models]
    comparisons = [PhotoComparison(p) for p in photos]
    post = PostOptions(top=top)
    for model, status in zip(models, statuses, strict=True):
        if not status.ready:
            continue
        classifier = load_pipeline(replace(load, model=model), progress=False)
        assert isinstance(classifier, Classifier)
        list(classifier.run(photos[:1], post))  # warm-up: compile caches, first-call allocations
        for comparison in comparisons:
            start = time.perf_counter()
            [result] = classifier.run([comparison.path], post)
            comparison.answers.append(TimedResult(result, 1000 * (time.perf_counter() - start)))
    return statuses, comparisons
