"""Classification as three steps: decode + preprocess (pre), the engine (core), softmax + top-k (post).

Inputs that cannot be decoded become results carrying their error, so one broken file in a batch
never costs the other files their predictions.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, overload

import numpy as np

from imagenet_zoo.engines.base import Engine
from imagenet_zoo.errors import ImageError
from imagenet_zoo.images import (
    DEFAULT_MAX_PIXELS,
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


def _chunked(items: Iterator[ImageSource], size: int) -> Iterator[list[ImageSource]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probabilities


def ranked_predictions(logits: np.ndarray, top: int, labels: Sequence[ClassLabel]) -> tuple[Prediction, ...]:
    """Post-processing of one output row: softmax (in float64), then the `top` most likely classes (the
    top 5 of a 2-class model is its 2 classes)."""
    probabilities = softmax(logits.astype(np.float64)).astype(np.float32)
    return top_k(probabilities, min(top, len(labels)), labels)


def prepare_input(
    source: ImageSource, data_config: DataConfig, *, max_pixels: int
) -> tuple[InputInfo, np.ndarray] | ErrorInfo:
    """Pre-processing of one input: decode, then resize/crop/scale; a bad input becomes its error."""
    try:
        decoded = decode_image(source, max_pixels=max_pixels)
    except ImageError as exc:
        return ErrorInfo.of(exc)
    return decoded.info, preprocess(decoded.image, data_config)


def top_k(probabilities: np.ndarray, k: int, labels: Sequence[ClassLabel]) -> tuple[Prediction, ...]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return tuple(
        Prediction(rank, int(i), labels[i].synset, labels[i].name, float(probabilities[i]))
        for rank, i in enumerate(order, start=1)
    )


def class_labels(spec: ModelSpec) -> tuple[ClassLabel, ...]:
    """ImageNet-1k's classes, or a model's own (whose names serve as their ids)."""
    if spec.labels is None:
        return imagenet1k()
    return tuple(ClassLabel(i, name, name) for i, name in enumerate(spec.labels))


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
        workers: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.workers = workers or os.cpu_count() or 1
        # Engines keep one inference request each: calls from several threads (a server) take turns,
        # while decoding, the larger share of the work on small models, still runs in parallel.
        self._engine_lock = threading.Lock()
        self.spec = spec
        self.engine = engine
        self.data_config = data_config or spec.data_config
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.labels = class_labels(spec)

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
        """Classify every input, in input order (see `iter_classify`)."""
        return list(self.iter_classify(inputs, top=top))

    def iter_classify(self, inputs: Iterable[ImageSource], *, top: int = 5) -> Iterator[Classification]:
        """Yield results in input order as each batch of `batch_size` completes (post: softmax, top-k)."""
        if top < 1:
            raise ValueError("top must be at least 1")
        for source, item, logits in self.iter_outputs(inputs):
            base = Classification(describe_source(source), self.spec.name)
            if isinstance(item, ErrorInfo):
                yield replace(base, error=item)
            else:
                predictions = ranked_predictions(logits, top, self.labels)  # type: ignore[arg-type]
                yield replace(base, predictions=predictions, input=item)

    def iter_outputs(
        self, inputs: Iterable[ImageSource]
    ) -> Iterator[tuple[ImageSource, InputInfo | ErrorInfo, np.ndarray | None]]:
        """The engine's raw output row for each input, in input order, or the input's error.

        The next batch is decoded by `workers` threads while the engine runs the current one (Pillow
        releases the GIL while decoding and resizing), so decoding and inference overlap.
        """
        chunks = _chunked(iter(inputs), self.batch_size)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            chunk = next(chunks, None)
            upcoming = [pool.submit(self.prepare, s) for s in chunk or []]
            while chunk is not None:
                prepared = [future.result() for future in upcoming]
                following = next(chunks, None)
                upcoming = [pool.submit(self.prepare, s) for s in following or []]
                yield from self._run_engine(chunk, prepared)
                chunk = following

    def prepare(self, source: ImageSource) -> tuple[InputInfo, np.ndarray] | ErrorInfo:
        """Pre-processing of one input with this classifier's preprocessing (see `prepare_input`)."""
        return prepare_input(source, self.data_config, max_pixels=self.max_pixels)

    def _run_engine(
        self, sources: Sequence[ImageSource], prepared: list[tuple[InputInfo, np.ndarray] | ErrorInfo]
    ) -> Iterator[tuple[ImageSource, InputInfo | ErrorInfo, np.ndarray | None]]:
        """Core: one engine call for the chunk's good inputs."""
        good = [item[1] for item in prepared if not isinstance(item, ErrorInfo)]
        outputs = iter(self._infer(np.stack(good)) if good else [])
        for source, item in zip(sources, prepared, strict=True):
            if isinstance(item, ErrorInfo):
                yield source, item, None
            else:
                yield source, item[0], next(outputs)

    def preprocess(self, images: Sequence[Any]) -> np.ndarray:
        """The float32 NHWC batch the engine receives for these RGB PIL images."""
        return np.stack([preprocess(image, self.data_config) for image in images])

    def predict_proba(self, images: Sequence[Any]) -> np.ndarray:
        """Softmax probabilities (N, 1000) for RGB PIL images."""
        return self._probabilities(self.preprocess(images))

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        return softmax(self._infer(batch).astype(np.float64)).astype(np.float32)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with self._engine_lock:
            return self.engine.infer(batch)
