"""Several models on the same photos, side by side: their top-k, their latency, and where they agree.

Models whose weights are not on this machine are reported with the command that fetches them; nothing
is downloaded behind the user's back.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from imagenet_zoo.api import load
from imagenet_zoo.classifier import Classification
from imagenet_zoo.data.images import DecodeMode, find_images
from imagenet_zoo.model_types import RegisteredModel


@dataclass(frozen=True)
class ModelStatus:
    name: str
    ready: bool

    @property
    def fetch_command(self) -> str | None:
        return None if self.ready else f"imagenet-zoo weights fetch {self.name}"


@dataclass(frozen=True)
class Answer:
    result: Classification
    latency_ms: float


@dataclass
class PhotoComparison:
    path: str
    answers: list[Answer] = field(default_factory=list)

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


def compare(
    sources: list[str],
    models: list[RegisteredModel],
    *,
    top: int,
    engine: str,
    precision: str,
    decode: DecodeMode = "fast",
) -> tuple[list[ModelStatus], list[PhotoComparison]]:
    """Every model on every photo of `sources` (files, folders or globs), one photo at a time."""
    photos = find_images(sources)
    statuses = [ModelStatus(m.spec.name, m.weights_available) for m in models]
    comparisons = [PhotoComparison(p) for p in photos]
    for model, status in zip(models, statuses, strict=True):
        if not status.ready:
            continue
        classifier = load(model, engine=engine, precision=precision, decode=decode, progress=False)
        classifier.classify_many(photos[:1], top=top)  # warm-up: compile caches, first-call allocations
        for comparison in comparisons:
            start = time.perf_counter()
            result = classifier.classify_many([comparison.path], top=top)[0]
            comparison.answers.append(Answer(result, 1000 * (time.perf_counter() - start)))
    return statuses, comparisons
