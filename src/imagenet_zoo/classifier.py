"""Classification as three steps: decode + preprocess (pre), the engine (core), softmax + top-k (post).

Inputs that cannot be decoded become results carrying their error, so one broken file in a batch
never costs the other files their predictions.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, overload

import numpy as np

from imagenet_zoo.data.hierarchy import GroupScore, Synset, check_imagenet_labels, groups_for, wordnet
from imagenet_zoo.data.images import (
    DEFAULT_MAX_PIXELS,
    DecodeMode,
    ImageSource,
    InputInfo,
    decode_image,
    describe_source,
)
from imagenet_zoo.data.labels import ClassLabel, imagenet1k
from imagenet_zoo.data.preprocess import (
    Transform,
    create_transform,
    draft_short_side,
    input_region,
    preprocess,
)
from imagenet_zoo.engines.base import Engine
from imagenet_zoo.errors import ExplanationUnsupportedError, ImageError, UnsupportedImageError
from imagenet_zoo.explain import ExplainingEngine, Explanation, class_index_of, positive_unit
from imagenet_zoo.specs import DataConfig, ExplainMethod, ModelSpec


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
    """Why one input has no result: the error's type name and message, and the exception itself where it
    was raised in this process (a cluster worker's errors arrive as type and message alone)."""

    type: str
    message: str
    exception: ImageError | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, exc: ImageError) -> ErrorInfo:
        return cls(type(exc).__name__, str(exc), exc)

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "message": self.message}


@dataclass(frozen=True)
class Classification:
    """The result for one input: predictions best first, or the error that stopped it."""

    source: str
    model: str
    predictions: tuple[Prediction, ...] = ()
    input: InputInfo | None = None
    error: ErrorInfo | None = None
    groups: tuple[GroupScore, ...] = ()  # asked-for WordNet groups and their probabilities
    explanation: Explanation | None = None  # where the evidence for one class lies
    # Every class's probability, kept only when asked (`PostOptions.probabilities`): a protocol's
    # full-softmax output. Not in to_dict(); not compared.
    probabilities: np.ndarray | None = field(default=None, repr=False, compare=False)

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
            return {"path": self.source, "error": self.error.to_dict()}
        result = {
            "path": self.source,
            "model": self.model,
            "input": self.input.to_dict() if self.input else None,
            "predictions": [p.to_dict() for p in self.predictions],
        }
        if self.groups:
            result["groups"] = [g.to_dict() for g in self.groups]
        if self.explanation is not None:
            result["explanation"] = self.explanation.to_dict()
        return result


def _chunked(items: Iterator[ImageSource], size: int) -> Iterator[list[ImageSource]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probabilities


def probabilities_of(logits: np.ndarray) -> np.ndarray:
    """Softmax probabilities of logits, computed in float64 and returned as float32."""
    probabilities: np.ndarray = softmax(logits.astype(np.float64)).astype(np.float32)
    return probabilities


def ranked_predictions(logits: np.ndarray, top: int, labels: Sequence[ClassLabel]) -> tuple[Prediction, ...]:
    """Post-processing of one output row: softmax, then the `top` most likely classes (the top 5 of a
    2-class model is its 2 classes)."""
    return top_k(probabilities_of(logits), min(top, len(labels)), labels)


def decode_predictions(
    logits: np.ndarray, *, top: int = 5, labels: Sequence[ClassLabel] | None = None
) -> list[tuple[Prediction, ...]]:
    """Keras's `decode_predictions` for any model's output: logits (N, classes), or one row (classes,), to
    the `top` predictions of each row, best first. `labels` default to ImageNet-1k's (`spec.labels`)."""
    rows = np.atleast_2d(np.asarray(logits, dtype=np.float32))
    return [ranked_predictions(row, top, imagenet1k() if labels is None else labels) for row in rows]


def prepare_input(
    source: ImageSource, data_config: DataConfig, *, max_pixels: int, decode: DecodeMode = "fast"
) -> tuple[InputInfo, np.ndarray] | ErrorInfo:
    """Pre-processing of one input: decode, then resize/crop/scale; a bad input becomes its error.

    `decode="fast"` decodes and resizes only at the resolution the model needs (see `data.images`);
    `"full"` decodes every pixel and resizes in one step, the exact ImageNet evaluation protocol."""
    fast = decode == "fast"
    try:
        short_side = draft_short_side(data_config) if fast else None
        decoded = decode_image(source, max_pixels=max_pixels, min_short_side=short_side)
    except ImageError as exc:
        return ErrorInfo.of(exc)
    try:
        return decoded.info, preprocess(decoded.image, data_config, fast=fast)
    except (ValueError, OSError, MemoryError) as exc:  # Pillow's resize of a hostile photo
        return ErrorInfo.of(UnsupportedImageError(f"cannot resize this image: {type(exc).__name__}: {exc}"))


def top_k(probabilities: np.ndarray, k: int, labels: Sequence[ClassLabel]) -> tuple[Prediction, ...]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return tuple(
        Prediction(rank, int(i), labels[i].synset, labels[i].name, float(probabilities[i]))
        for rank, i in enumerate(order, start=1)
    )


# One input's result from the engine: the input, what decoding found (or the error), the output row, and
# when asked, the class a heatmap is for and its raw map.
Heat = tuple[int, np.ndarray]
Output = tuple[ImageSource, InputInfo | ErrorInfo, np.ndarray | None, Heat | None]
_NO_HEAT = object()  # `explain` left out: the engine's plain output


class _Pipeline:
    """Pre-processing and the engine (core), shared by classifiers and feature extractors."""

    def __init__(
        self,
        spec: ModelSpec,
        engine: Engine,
        *,
        data_config: DataConfig | None = None,
        batch_size: int = 8,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        workers: int | None = None,
        decode: DecodeMode = "fast",
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
        self.decode = decode

    @property
    def transform(self) -> Transform:
        """Decoded RGB image -> this model's input (what `prepare` applies after decoding)."""
        return create_transform(self.data_config)

    def iter_outputs(
        self,
        inputs: Iterable[ImageSource],
        *,
        explain: Any = _NO_HEAT,
        read: Callable[[Any], ImageSource] | None = None,
    ) -> Iterator[Output]:
        """The engine's raw output row for each input, in input order, or the input's error; with
        `explain` (a class index, or None for each input's top-1), each row's heatmap too. `read` turns an
        input into what is decoded (a URL into its bytes) in the decoding threads; its `ImageError` is
        that input's error.

        The next batch is decoded by `workers` threads while the engine runs the current one (Pillow
        releases the GIL while decoding and resizing), so decoding and inference overlap.
        """
        chunks = _chunked(iter(inputs), self.batch_size)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            prepare = self.prepare if read is None else partial(self._read_and_prepare, read)
            chunk = next(chunks, None)
            upcoming = [pool.submit(prepare, s) for s in chunk or []]
            while chunk is not None:
                prepared = [future.result() for future in upcoming]
                following = next(chunks, None)
                upcoming = [pool.submit(prepare, s) for s in following or []]
                yield from self._run_engine(chunk, prepared, explain)
                chunk = following

    def prepare(self, source: ImageSource) -> tuple[InputInfo, np.ndarray] | ErrorInfo:
        """Pre-processing of one input with this model's preprocessing (see `prepare_input`)."""
        return prepare_input(source, self.data_config, max_pixels=self.max_pixels, decode=self.decode)

    def _read_and_prepare(
        self, read: Callable[[Any], ImageSource], source: Any
    ) -> tuple[InputInfo, np.ndarray] | ErrorInfo:
        try:
            return self.prepare(read(source))
        except ImageError as exc:
            return ErrorInfo.of(exc)

    def _run_engine(
        self,
        sources: Sequence[ImageSource],
        prepared: list[tuple[InputInfo, np.ndarray] | ErrorInfo],
        explain: Any = _NO_HEAT,
    ) -> Iterator[Output]:
        """Core: one engine call for the chunk's good inputs."""
        good = [item[1] for item in prepared if not isinstance(item, ErrorInfo)]
        heats: Iterator[Heat | None] = itertools.repeat(None)
        if not good:
            outputs: Iterator[np.ndarray] = iter([])
        elif explain is _NO_HEAT:
            outputs = iter(self.infer_batch(np.stack(good)))
        else:
            logits, maps, classes = self.explain_batch(np.stack(good), explain)
            outputs, heats = iter(logits), zip(classes.tolist(), maps, strict=True)
        for source, item in zip(sources, prepared, strict=True):
            if isinstance(item, ErrorInfo):
                yield source, item, None, None
            else:
                yield source, item[0], next(outputs), next(heats)

    def infer_batch(self, batch: np.ndarray) -> np.ndarray:
        """Core alone: the engine on a preprocessed batch (callers in several threads take turns)."""
        with self._engine_lock:
            return self.engine.infer(batch)

    def explain_batch(
        self, batch: np.ndarray, class_index: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Core alone, with heatmaps: logits, raw maps and their classes (see `ExplainingEngine`)."""
        engine = self.explaining_engine()
        with self._engine_lock:
            return engine.explain(batch, class_index)

    def explaining_engine(self) -> ExplainingEngine:
        """The engine, if it draws heatmaps (ExplanationUnsupportedError if not)."""
        if not isinstance(self.engine, ExplainingEngine):
            raise ExplanationUnsupportedError(
                f"{self.spec.name} was not loaded to explain: load it with explain=True"
            )
        return self.engine


@dataclass(frozen=True)
class PostOptions:
    """What post-processing reports besides the top-k: WordNet groups, the most likely groups."""

    top: int = 5
    synsets: tuple[Synset, ...] = ()
    top_groups: tuple[int, int] | None = None  # (k, depth)
    probabilities: bool = False  # keep the whole softmax row in the result


class Classifier(_Pipeline):
    """A model ready to classify: its spec, its preprocessing and an engine that outputs logits."""

    @property
    def labels(self) -> tuple[ClassLabel, ...]:
        return self.spec.labels

    @overload
    def classify(
        self,
        inputs: ImageSource,
        *,
        top: int = 5,
        groups: Sequence[str] = (),
        explain: bool = False,
        explain_class: int | str | None = None,
    ) -> Classification: ...
    @overload
    def classify(
        self,
        inputs: list[ImageSource] | tuple[ImageSource, ...],
        *,
        top: int = 5,
        groups: Sequence[str] = (),
        explain: bool = False,
        explain_class: int | str | None = None,
    ) -> list[Classification]: ...

    def classify(
        self,
        inputs: Any,
        *,
        top: int = 5,
        groups: Sequence[str] = (),
        explain: bool = False,
        explain_class: int | str | None = None,
    ) -> Classification | list[Classification]:
        """Classify one input (raises its `ImageError`) or a list (failures are returned as results).

        An input is a path, encoded bytes, a PIL image or a uint8 RGB array. `groups` names WordNet
        groups ("dog", "bird", or synset ids) whose probabilities each result also reports. `explain`
        adds a heatmap of the top-1 class's evidence (or of `explain_class`: index, synset or label) to
        each result; the classifier must be loaded with `explain=True`.
        """
        options: dict[str, Any] = {
            "top": top,
            "groups": groups,
            "explain": explain,
            "explain_class": explain_class,
        }
        if isinstance(inputs, (list, tuple)):
            return self.classify_many(inputs, **options)
        result = self.classify_many([inputs], **options)[0]
        if result.error is not None and result.error.exception is not None:
            raise result.error.exception
        return result

    def classify_many(
        self,
        inputs: Iterable[ImageSource],
        *,
        top: int = 5,
        groups: Sequence[str] = (),
        top_groups: tuple[int, int] | None = None,
        explain: bool = False,
        explain_class: int | str | None = None,
    ) -> list[Classification]:
        """Classify every input, in input order (see `iter_classify`)."""
        return list(
            self.iter_classify(
                inputs,
                top=top,
                groups=groups,
                top_groups=top_groups,
                explain=explain,
                explain_class=explain_class,
            )
        )

    def iter_classify(
        self,
        inputs: Iterable[ImageSource],
        *,
        top: int = 5,
        groups: Sequence[str] = (),
        top_groups: tuple[int, int] | None = None,
        explain: bool = False,
        explain_class: int | str | None = None,
    ) -> Iterator[Classification]:
        """Yield results in input order as each batch of `batch_size` completes (post: softmax, top-k,
        the probability of each of `groups`, and with `top_groups=(k, depth)` the k most likely groups
        `depth` is-a steps below "entity"; with `explain`, the heatmap of the top-1 or `explain_class`)."""
        post = self.post_options(top=top, groups=groups, top_groups=top_groups)
        heat_class: Any = _NO_HEAT
        if explain or explain_class is not None:
            heat_class = None if explain_class is None else class_index_of(self.labels, explain_class)
        for source, item, logits, heat in self.iter_outputs(inputs, explain=heat_class):
            yield self.postprocess(describe_source(source), item, logits, heat, post)

    def post_options(
        self, *, top: int = 5, groups: Sequence[str] = (), top_groups: tuple[int, int] | None = None
    ) -> PostOptions:
        """Checked post-processing options (an unknown group is a `UsageError` before any work)."""
        if top < 1:
            raise ValueError("top must be at least 1")
        synsets = tuple(groups_for(groups, self.labels, self.spec.name))
        if top_groups is not None:
            check_imagenet_labels(self.labels, self.spec.name)
        return PostOptions(min(top, len(self.labels)), synsets, top_groups)

    def postprocess(
        self,
        source: str,
        item: InputInfo | ErrorInfo,
        logits: np.ndarray | None,
        heat: Heat | None,
        post: PostOptions,
    ) -> Classification:
        """Post: one input's engine output to its result (softmax, top-k, groups, heatmap)."""
        base = Classification(source, self.spec.name)
        if isinstance(item, ErrorInfo) or logits is None:
            return replace(base, error=item if isinstance(item, ErrorInfo) else None)
        probabilities = probabilities_of(logits)
        predictions = top_k(probabilities, post.top, self.labels)
        scores = wordnet().scores(probabilities, post.synsets) if post.synsets else ()
        if post.top_groups is not None:
            k, depth = post.top_groups
            scores += wordnet().top_groups(probabilities, depth=depth, k=k)
        explanation = self._explanation(heat, item) if heat is not None else None
        kept = probabilities if post.probabilities else None
        return replace(
            base,
            predictions=predictions,
            input=item,
            groups=scores,
            explanation=explanation,
            probabilities=kept,
        )

    def _explanation(self, heat: Heat, info: InputInfo) -> Explanation:
        class_index, raw_map = heat
        method: ExplainMethod = getattr(self.engine, "explain_method", "cam")
        region = input_region(info.width, info.height, self.data_config)
        label = self.labels[class_index].name
        return Explanation(method, class_index, label, positive_unit(raw_map), region)

    def preprocess(self, images: Sequence[Any]) -> np.ndarray:
        """The float32 NHWC batch the engine receives for these RGB PIL images."""
        return np.stack([self.transform(image) for image in images])

    def predict_proba(self, images: Sequence[Any]) -> np.ndarray:
        """Softmax probabilities (N, classes) for RGB PIL images."""
        return probabilities_of(self.infer_batch(self.preprocess(images)))


@dataclass(frozen=True)
class FeatureSet:
    """Pooled features of the inputs that decoded (rows in input order) and the inputs that did not."""

    model: str
    paths: list[str]
    features: np.ndarray  # (N, D) float32
    failures: list[tuple[str, ErrorInfo]] = field(default_factory=list)


class FeatureExtractor(_Pipeline):
    """A model ready to extract features: its engine outputs the global-average-pooled penultimate
    features (Keras's `include_top=False, pooling="avg"`), one vector per photo, for transfer learning."""

    def extract(
        self, inputs: Iterable[ImageSource], *, on_item: Callable[[str, ErrorInfo | None], None] | None = None
    ) -> FeatureSet:
        """Features of every decodable input, in input order; the others are listed with their errors."""
        paths: list[str] = []
        rows: list[np.ndarray] = []
        failures: list[tuple[str, ErrorInfo]] = []
        for source, item, output, _ in self.iter_outputs(inputs):
            name = describe_source(source)
            if isinstance(item, ErrorInfo):
                failures.append((name, item))
            elif output is not None:
                paths.append(name)
                rows.append(np.asarray(output, np.float32).reshape(-1))
            if on_item:
                on_item(name, item if isinstance(item, ErrorInfo) else None)
        features = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
        return FeatureSet(self.spec.name, paths, features, failures)
