"""Classification as three steps: decode + preprocess (pre), the engine (core), softmax + top-k (post).

Inputs that cannot be decoded become results carrying their error, so one broken file in a batch
never costs the other files their predictions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, overload

import numpy as np

from imagenet_zoo.engines.base import Engine
from imagenet_zoo.errors import ImageError
from imagenet_zoo.images import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageSource,
    InputInfo,
    decode_image,
    describe_source,
)
from imagenet_zoo.labels import ClassLabel, imagenet1k
from imagenet_zoo.preprocess import preprocess
from imagenet_zoo.specs import DataConfig, ModelSpec


@dataclass(frozen=True)
class Prediction:
    rank: int
    index: int
    synset: str
    label: str
    score: float  # softmax probability

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "index": self.index,
            "synset": self.synset,
            "label": self.label,
            "score": self.score,
        }


@dataclass(frozen=True)
class ErrorInfo:
    type: str
    message: str
    exception: ImageError = field(compare=False, repr=False)

    @classmethod
    def of(cls, exc: ImageError) -> ErrorInfo:
        return cls(type(exc).__name__, str(exc), exc)


@dataclass(frozen=True)
class Classification:
    """The result for one input: predictions best first, or the error that stopped it."""

    source: str
    model: str
    predictions: tuple[Prediction, ...] = ()
    input: InputInfo | None = None
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def top(self) -> Prediction:
        if not self.predictions:
            raise ValueError(f"{self.source} has no predictions: {self.error}")
        return self.predictions[0]

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.source, "error": {"type": self.error.type, "message": self.error.message}}
        return {
            "path": self.source,
            "model": self.model,
            "input": self.input.to_dict() if self.input else None,
            "predictions": [p.to_dict() for p in self.predictions],
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probabilities


def top_k(probabilities: np.ndarray, k: int, labels: Sequence[ClassLabel]) -> tuple[Prediction, ...]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return tuple(
        Prediction(rank, int(i), labels[i].synset, labels[i].name, float(probabilities[i]))
        for rank, i in enumerate(order, start=1)
    )


class Classifier:
    """A model ready to classify: its spec, its preprocessing and an engine."""

    def __init__(
        self,
        spec: ModelSpec,
        engine: Engine,
        *,
        data_config: DataConfig | None = None,
        batch_size: int = 8,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.spec = spec
        self.engine = engine
        self.data_config = data_config or spec.data_config
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.labels = imagenet1k()

    @overload
    def classify(self, inputs: ImageSource, *, top: int = 5) -> Classification: ...
    @overload
    def classify(
        self, inputs: list[ImageSource] | tuple[ImageSource, ...], *, top: int = 5
    ) -> list[Classification]: ...

    def classify(self, inputs: Any, *, top: int = 5) -> Classification | list[Classification]:
        """Classify one input (raises its `ImageError`) or a list (failures are returned as results).

        An input is a path, encoded bytes, a PIL image or a uint8 RGB array.
        """
        if isinstance(inputs, (list, tuple)):
            return self.classify_many(inputs, top=top)
        result = self.classify_many([inputs], top=top)[0]
        if result.error is not None:
            raise result.error.exception
        return result

    def classify_many(self, inputs: Iterable[ImageSource], *, top: int = 5) -> list[Classification]:
        if not 1 <= top <= self.spec.num_classes:
            raise ValueError(f"top must be between 1 and {self.spec.num_classes}")
        sources = list(inputs)
        results: list[Classification] = []
        for start in range(0, len(sources), self.batch_size):
            results.extend(self._classify_chunk(sources[start : start + self.batch_size], top))
        return results

    def _classify_chunk(self, sources: Sequence[ImageSource], top: int) -> list[Classification]:
        decoded: list[DecodedImage | ErrorInfo] = [self._decode(s) for s in sources]
        good = [d for d in decoded if isinstance(d, DecodedImage)]
        probabilities = iter(self.predict_proba([d.image for d in good]) if good else [])
        results = []
        for source, item in zip(sources, decoded, strict=True):
            base = Classification(describe_source(source), self.spec.name)
            if isinstance(item, ErrorInfo):
                results.append(replace(base, error=item))
            else:
                predictions = top_k(next(probabilities), top, self.labels)
                results.append(replace(base, predictions=predictions, input=item.info))
        return results

    def _decode(self, source: ImageSource) -> DecodedImage | ErrorInfo:
        try:
            return decode_image(source, max_pixels=self.max_pixels)
        except ImageError as exc:
            return ErrorInfo.of(exc)

    def preprocess(self, images: Sequence[Any]) -> np.ndarray:
        """The float32 NHWC batch the engine receives for these RGB PIL images."""
        return np.stack([preprocess(image, self.data_config) for image in images])

    def predict_proba(self, images: Sequence[Any]) -> np.ndarray:
        """Softmax probabilities (N, 1000) for RGB PIL images."""
        return softmax(self.engine.infer(self.preprocess(images)).astype(np.float64)).astype(np.float32)
