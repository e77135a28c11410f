"""One path from photo to answer, in three public stages, as a Hugging Face pipeline has them:
`preprocess` (decode + resize/crop: a photo to the model's input pixels, or the photo's error), `forward`
(the engine on a batch) and `postprocess` (a whole batch's rows to their records, vectorised).

Each task's `run` (`Classifier.run`, `FeatureExtractor.run`) chains them, and it is the one call path:
the library's conveniences, the folder job and the Ray actors call it; the service, whose dynamic batcher
runs `forward` on rows from many requests, hands each request's rows back to the same `postprocess`. What
to load is one `LoadConfig` and what to report one `PostOptions`, each checked once, before any work.
"""

from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Self, TypedDict

import numpy as np
from PIL import Image

from imagenet_zoo.data.images import (
    DECODE_MODES,
    DEFAULT_DECODE_BUDGET,
    DEFAULT_MAX_PIXELS,
    DecodeBudget,
    DecodeMode,
    ImageSource,
    InputInfo,
    give_back_large_buffers,
)
from imagenet_zoo.data.preprocess import (
    BatchPreprocessor,
    Prepared,
    Transform,
    create_transform,
    decode_for,
    model_input,
    pixels_for,
)
from imagenet_zoo.engines.base import Engine, as_engine
from imagenet_zoo.engines.registry import (
    AUTO,
    DEFAULT_ENGINE,
    GPU_WORTH_PHOTOS,
    EngineKeywords,
    EngineOptions,
    engine_registry,
    engine_summaries,
    per_engine,
)
from imagenet_zoo.errors import ExplanationUnsupportedError, ImageError
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.records import ErrorInfo
from imagenet_zoo.registry import DEFAULT_MODEL
from imagenet_zoo.specs import RESIZE_MODES, DataConfig, ModelSpec, ResizeMode, Task, load_option

MAX_BATCH_SIZE = 4096  # photos per engine call: 2.4 GB of 224x224 input once the engine has it in float32
MAX_WORKERS = 256  # decoding threads

ModelRef = str | os.PathLike[str] | RegisteredModel


def _engine_help() -> str:
    return (
        f"auto (default): torch on an NVIDIA GPU where there is one (for {GPU_WORTH_PHOTOS} photos or more), "
        f"else {DEFAULT_ENGINE}; {engine_summaries()}"
    )


@dataclass(frozen=True, kw_only=True)
class LoadConfig(EngineOptions):
    """What to load and how to feed it: the one load configuration of the library, the jobs, the service,
    bench, eval, compare, training and the cluster (`api.load_pipeline` checks it against the engine).
    The fields made with `specs.load_option` are the commands' flags, and their job identity where they
    change answers: adding an option is a field here (or, for one the engine reads, in `EngineOptions`)
    and the code that reads it."""

    model: ModelRef = DEFAULT_MODEL  # a zoo name or alias, or a bundle folder (each command's own flag)
    engine: str = load_option(
        AUTO, _engine_help, choices=lambda: [AUTO, *engine_registry().names()], answers=True
    )
    device: str = load_option(
        AUTO,
        lambda: (
            "where the engine runs: auto (default: the GPU where the engine runs there and this machine "
            "has one, else the CPU), or " + per_engine(lambda spec: spec.devices)
        ),
        choices=lambda: engine_registry().devices(),
    )
    task: Task = "classify"  # the command's
    resize: ResizeMode | None = load_option(
        None,
        "crop: shorter side + centre crop (each model's own protocol, the default); squash: the whole photo "
        "to the input size (the classic tutorial)",
        choices=lambda: RESIZE_MODES,
        answers=True,
    )
    decode: DecodeMode = load_option(
        "fast",
        "fast (default): decode large JPEGs only at the resolution the model needs; full: every pixel, the "
        "exact ImageNet evaluation protocol",
        choices=lambda: DECODE_MODES,
        answers=True,
    )
    batch_size: int = load_option(8, "photos per engine call (default {default})", most=MAX_BATCH_SIZE)
    workers: int | None = load_option(None, "decoding threads (default: one per core)", most=MAX_WORKERS)
    max_pixels: int = DEFAULT_MAX_PIXELS  # the service's is its own flag (--max-megapixels)


class LoadKeywords(EngineKeywords, total=False):
    """`LoadConfig` as keyword arguments (`load("resnet50", precision="int8")`), less what `load` says in
    its own words (the model, the task as `features`); a test keeps the two declarations the same."""

    engine: str
    device: str
    resize: ResizeMode | None
    decode: DecodeMode
    batch_size: int
    workers: int | None
    max_pixels: int


@dataclass(frozen=True, kw_only=True)
class PostOptions:
    """What post-processing reports for each photo besides its top-k: the one post configuration, checked
    once per model (`Classifier.plan`). Plain data: a job sends it to other processes as it is."""

    top: int = 5  # at most the model's classes (a 2-class bundle reports 2)
    groups: Sequence[str] = ()  # WordNet groups whose probability to report: lemmas or synset ids
    top_groups: tuple[int, int] | None = None  # (k, depth): the k most likely groups at that depth
    explain: bool = False  # a heatmap of the top-1 class's evidence...
    explain_class: str | int | None = None  # ...or of this class (index, synset id or label)
    probabilities: bool = False  # keep every class's probability in the result (a protocol's output)

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))  # a list from a caller: still plain data

    @property
    def explains(self) -> bool:
        return self.explain or self.explain_class is not None


class PostKeywords(TypedDict, total=False):
    """`PostOptions` as keyword arguments (`Classifier.classify(photo, top=3)`); a test keeps the two
    declarations the same."""

    top: int
    groups: Sequence[str]
    top_groups: tuple[int, int] | None
    explain: bool
    explain_class: str | int | None
    probabilities: bool


Heat = tuple[int, np.ndarray]  # the class a heatmap is for, and its raw map
# For one input: the class whose heatmap to compute with its logits, "top" for its top-1, or None for none.
Wanted = int | Literal["top"] | None
Read = Callable[[Any], ImageSource]  # an input to what is decoded (a URL to its bytes)


def reduced(image: Image.Image, max_side: int) -> Image.Image:
    """A copy of `image` at most `max_side` pixels a side (as `thumbnail` makes it), made without a
    full-size copy first."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image.copy()
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


class Pipeline:
    """Pre-processing and the engine, shared by classifiers and feature extractors."""

    def __init__(
        self,
        spec: ModelSpec,
        engine: Any,
        *,
        data_config: DataConfig | None = None,
        batch_size: int = 8,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        workers: int | None = None,
        decode: DecodeMode = "fast",
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.spec = spec
        self.engine: Engine = as_engine(engine)  # owns its concurrency: calls never take turns above it
        self.data_config = data_config or spec.data_config
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.workers = workers or os.cpu_count() or 1
        self.decode = decode
        self.budget = DecodeBudget(DEFAULT_DECODE_BUDGET)  # what all its decoding threads hold at once
        give_back_large_buffers()
        # An engine on a GPU may decode and preprocess whole batches there (`engines.torch_device`).
        self.batch_preprocessor: BatchPreprocessor | None = self.engine.batch_preprocessor(
            self.data_config, decode=decode, max_pixels=max_pixels, cpu_path=self._model_input
        )

    @classmethod
    def configured(cls, spec: ModelSpec, engine: Any, config: LoadConfig, data_config: DataConfig) -> Self:
        """The pipeline a checked load configuration describes, around its loaded engine, feeding it as
        `data_config` says (`api.resolve_data_config`: the model's, with the configuration's resize)."""
        return cls(
            spec,
            engine,
            data_config=data_config,
            batch_size=config.batch_size,
            max_pixels=config.max_pixels,
            workers=config.workers,
            decode=config.decode,
        )

    @property
    def transform(self) -> Transform:
        """Decoded RGB image -> this model's input (what `preprocess` applies after decoding)."""
        return create_transform(self.data_config)

    def preprocess(self, source: ImageSource) -> Prepared:
        """Pre: one input to the model's input and what it was, or its error (never raised)."""
        try:
            return self._model_input(source)
        except ImageError as exc:
            return ErrorInfo.of(exc)

    def _model_input(self, source: ImageSource) -> tuple[InputInfo, np.ndarray]:
        config, decode = self.data_config, self.decode
        return model_input(source, config, max_pixels=self.max_pixels, decode=decode, budget=self.budget)

    def preprocess_keeping(
        self, source: ImageSource, max_side: int | None
    ) -> tuple[Prepared, Image.Image | None]:
        """`preprocess`, also keeping the photo as decoded for it, reduced to at most `max_side` pixels a
        side (to draw a heatmap on without decoding it again); no photo when `max_side` is None."""
        if max_side is None:
            return self.preprocess(source), None
        config, decode = self.data_config, self.decode
        try:
            with self.budget.admission() as admit:
                decoded = decode_for(source, config, max_pixels=self.max_pixels, decode=decode, admit=admit)
                pixels = pixels_for(decoded, config, decode=decode)
                photo = reduced(decoded.image, max_side)
                info = decoded.info
                del decoded  # the full-size photo goes before the budget it was admitted under is given back
        except ImageError as exc:
            return ErrorInfo.of(exc), None
        return (info, pixels), photo

    def forward(self, batch: np.ndarray, wanted: Sequence[Wanted] | None = None) -> Forward:
        """Core: the engine on a batch of model inputs; with `wanted`, each row's heatmap it asks for,
        from the same pass."""
        if wanted is None or all(w is None for w in wanted):
            return Forward(self.engine.infer(batch), None)
        choice = [w if isinstance(w, int) else None for w in wanted]  # rows asking none: dropped below
        logits, maps, classes = self.explaining_engine().explain(batch, choice)
        heats = [None if w is None else (int(k), m) for w, k, m in zip(wanted, classes, maps, strict=True)]
        return Forward(logits, heats)

    def explaining_engine(self) -> Engine:
        """The engine, if it draws heatmaps (ExplanationUnsupportedError if not)."""
        if self.engine.explain_method is None:
            raise ExplanationUnsupportedError(
                f"{self.spec.name} was not loaded to explain: load it with explain=True"
            )
        return self.engine

    def iter_batches(
        self,
        inputs: Iterable[Any],
        *,
        wanted: Wanted = None,
        read: Read | None = None,
        top: int | None = None,
    ) -> Iterator[Batch]:
        """The inputs in batches of `batch_size`, in input order: each input's model input or error, and
        the engine's output for those that decoded; with `wanted`, each one's heatmap too. With `top`, an
        engine that ranks classes where it computes them (`Engine.ranks_where_it_infers`: a GPU's
        memory) gives their `top` best classes instead of their logits. `read` turns an input into what
        is decoded (a URL into its bytes) in the decoding threads; its `ImageError` is that input's
        error.

        The next batch is decoded by `workers` threads while the engine runs the current one (Pillow
        releases the GIL while decoding and resizing), so decoding and inference overlap. On a GPU the
        engine's batch preprocessor prepares the next `BATCHES_AHEAD_ON_DEVICE` batches, each in a thread
        of its own, so that one batch's files are read while the one before is decoded on the device."""
        chunks = _chunked(iter(inputs), self.batch_size)
        prepare = self.preprocess if read is None else partial(self._read_and_preprocess, read)
        on_device = self.batch_preprocessor if read is None and wanted is None else None
        with ThreadPoolExecutor(max_workers=self.workers) as pool:

            def submit(chunk: list[Any]) -> Callable[[], list[Prepared]]:
                if on_device is not None:
                    batch = pool.submit(on_device, chunk)
                    return batch.result
                futures = [pool.submit(prepare, s) for s in chunk]
                return lambda: [future.result() for future in futures]

            ahead = BATCHES_AHEAD_ON_DEVICE if on_device is not None else 1  # prepared while one runs
            upcoming = collections.deque((chunk, submit(chunk)) for chunk in itertools.islice(chunks, ahead))
            while upcoming:
                chunk, prepare_chunk = upcoming.popleft()
                prepared = prepare_chunk()
                following = next(chunks, None)
                if following is not None:
                    upcoming.append((following, submit(following)))
                yield self._forward_chunk(chunk, prepared, wanted, top)

    def _read_and_preprocess(self, read: Read, source: Any) -> Prepared:
        try:
            return self.preprocess(read(source))
        except ImageError as exc:
            return ErrorInfo.of(exc)

    def _forward_chunk(
        self, sources: Sequence[Any], prepared: list[Prepared], wanted: Wanted, top: int | None
    ) -> Batch:
        good = [item[1] for item in prepared if not isinstance(item, ErrorInfo)]
        if not good:
            return Batch(sources, prepared)
        batch = self.engine.stacked(good)
        if top is not None and self.engine.ranks_where_it_infers and wanted is None:
            return Batch(sources, prepared, ranking=Ranking(*self.engine.infer_top(batch, top)))
        return Batch(sources, prepared, self.forward(batch, [wanted] * len(good)))


@dataclass(frozen=True)
class Ranking:
    """Each row's best classes, best first: their indices (rows, k) and softmax probabilities (rows, k);
    equal probabilities rank the lower class index first."""

    indices: np.ndarray
    probabilities: np.ndarray


@dataclass(frozen=True)
class Forward:
    """What the engine gave for a batch: one row per input (logits or features), and each row's heat
    where one was wanted."""

    rows: np.ndarray
    heats: list[Heat | None] | None

    @classmethod
    def of_rows(cls, outputs: Sequence[tuple[np.ndarray, Heat | None]]) -> Forward:
        """A batch's output from its rows as a dynamic batcher answers them, one (row, heat) each."""
        heats = [heat for _, heat in outputs]
        rows = np.stack([row for row, _ in outputs])
        return cls(rows, heats if any(heat is not None for heat in heats) else None)


@dataclass(frozen=True)
class Batch:
    """One batch through the engine: its inputs, each one's model input or error, and for those that
    decoded (in the same order) the engine's output or, from an engine that ranks, their ranking;
    neither when none decoded."""

    sources: Sequence[Any]
    prepared: list[Prepared]
    forward: Forward | None = None
    ranking: Ranking | None = None


# Batches a GPU's batch preprocessor prepares at once while the engine runs one: reading one batch's
# files overlaps decoding the other's on the device. Each needs a core of its own: on 2 cores a second one
# slowed the GPU path's CPU side (`scripts/bench_host_path.py`).
BATCHES_AHEAD_ON_DEVICE = 2 if (os.cpu_count() or 1) >= 4 else 1


def _chunked(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
