"""The two tasks over the pipeline: `Classifier` (logits -> softmax, top-k, groups, heatmaps) and
`FeatureExtractor` (pooled features for transfer learning).

Inputs that cannot be decoded become results carrying their error, so one broken file in a batch never
costs the other files their predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Unpack, overload

import numpy as np

from imagenet_zoo.data.hierarchy import GroupScore, Synset, check_imagenet_labels, groups_for, wordnet
from imagenet_zoo.data.images import ImageSource, InputInfo, describe_source
from imagenet_zoo.data.labels import ClassLabel, imagenet1k
from imagenet_zoo.data.preprocess import input_region, resize_and_crop
from imagenet_zoo.explain import Explanation, class_index_of, positive_unit
from imagenet_zoo.pipeline import Batch, Heat, Pipeline, PostKeywords, PostOptions, Ranking, Read, Wanted
from imagenet_zoo.records import Classification, ErrorInfo, Prediction
from imagenet_zoo.specs import ModelSpec


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return probabilities


def probabilities_of(logits: np.ndarray) -> np.ndarray:
    """Softmax probabilities of logits, in float32 as Keras's softmax computes them (its vectorized
    exponential costs a twentieth of float64's on a batch)."""
    return softmax(np.asarray(logits, dtype=np.float32))


def top_k_indices(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Each row's `k` most probable class indices, best first, equal probabilities to the lower index
    (what a stable sort of each row gives), from one partition of the whole batch: only a row whose k-th
    place is tied is sorted."""
    if k >= probabilities.shape[1]:
        return np.argsort(-probabilities, axis=1, kind="stable")
    candidates = np.argpartition(-probabilities, k, axis=1)[:, : k + 1]  # the k + 1 largest, unordered
    values = np.take_along_axis(probabilities, candidates, axis=1)
    order = np.lexsort((candidates, -values), axis=1)
    candidates = np.take_along_axis(candidates, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)
    top = candidates[:, :k]
    # Where the k-th ties the next (or is NaN), classes left out of the candidates may tie too.
    unsure = ~(values[:, k - 1] > values[:, k])
    if unsure.any():
        top[unsure] = np.argsort(-probabilities[unsure], axis=1, kind="stable")[:, :k]
    return top


def ranking_of(probabilities: np.ndarray, k: int) -> Ranking:
    """The `k` best classes of each row of probabilities (rows, classes)."""
    indices = top_k_indices(probabilities, k)
    return Ranking(indices, np.take_along_axis(probabilities, indices, axis=1))


def predictions_of(ranking: Ranking, labels: Sequence[ClassLabel]) -> list[tuple[Prediction, ...]]:
    """Each ranked row as its predictions, best first."""
    return [
        tuple(
            Prediction(rank, index, labels[index].synset, labels[index].name, score)
            for rank, (index, score) in enumerate(zip(indices, scores, strict=True), start=1)
        )
        for indices, scores in zip(ranking.indices.tolist(), ranking.probabilities.tolist(), strict=True)
    ]


def decode_predictions(
    logits: np.ndarray, *, top: int = 5, labels: Sequence[ClassLabel] | None = None
) -> list[tuple[Prediction, ...]]:
    """Keras's `decode_predictions` for any model's output: logits (N, classes), or one row (classes,), to
    the `top` predictions of each row, best first. `labels` default to ImageNet-1k's (`spec.labels`)."""
    rows = np.atleast_2d(np.asarray(logits, dtype=np.float32))
    labels = imagenet1k() if labels is None else labels
    return predictions_of(ranking_of(probabilities_of(rows), min(top, len(labels))), labels)


@dataclass(frozen=True)
class PostPlan:
    """`PostOptions` checked against one model: the groups as synsets, the class to explain as an index."""

    top: int
    synsets: tuple[Synset, ...] = ()
    top_groups: tuple[int, int] | None = None
    explain: bool = False
    heat_class: int | None = None  # with `explain`: this class, or None for each photo's top-1
    probabilities: bool = False

    @property
    def wanted(self) -> Wanted:
        """What each input asks of the engine besides its row: its heatmap's class, "top" or none."""
        if not self.explain:
            return None
        return self.heat_class if self.heat_class is not None else "top"

    @property
    def needs_probabilities(self) -> bool:
        """Whether a record needs every class's probability, not only its top-k's."""
        return bool(self.synsets) or self.top_groups is not None or self.probabilities


DEFAULT_POST = PostOptions()


def plan_post(spec: ModelSpec, options: PostOptions) -> PostPlan:
    """The post configuration checked for a model, before anything is loaded or read (a `UsageError`
    for a group or class it does not have)."""
    if options.top < 1:
        raise ValueError("top must be at least 1")
    synsets = tuple(groups_for(options.groups, spec.labels, spec.name))
    if options.top_groups is not None:
        check_imagenet_labels(spec.labels, spec.name)
    heat_class = None if options.explain_class is None else class_index_of(spec.labels, options.explain_class)
    return PostPlan(
        min(options.top, spec.num_classes),
        synsets,
        options.top_groups,
        options.explains,
        heat_class,
        options.probabilities,
    )


class Classifier(Pipeline):
    """A model ready to classify: its spec, its preprocessing and an engine that outputs logits."""

    @property
    def labels(self) -> tuple[ClassLabel, ...]:
        return self.spec.labels

    def plan(self, options: PostOptions) -> PostPlan:
        """The post configuration checked for this model and its engine (a `UsageError` before any work)."""
        plan = plan_post(self.spec, options)
        if plan.explain:
            self.explaining_engine()
        return plan

    @overload
    def classify(self, inputs: ImageSource, **options: Unpack[PostKeywords]) -> Classification: ...
    @overload
    def classify(
        self, inputs: list[ImageSource] | tuple[ImageSource, ...], **options: Unpack[PostKeywords]
    ) -> list[Classification]: ...

    def classify(self, inputs: Any, **options: Unpack[PostKeywords]) -> Classification | list[Classification]:
        """Classify one input (raises its `ImageError`) or a list (failures are returned as results):
        `run` over them, collected.

        An input is a path, encoded bytes, a PIL image or a uint8 RGB array. The options are
        `PostOptions`'s: `top`; `groups`, WordNet groups ("dog", "bird", or synset ids) whose probabilities
        each result also reports; `top_groups=(k, depth)`, the k most likely groups `depth` is-a steps
        below "entity"; `explain`, a heatmap of the top-1 class's evidence (or of `explain_class`: index,
        synset or label), for a classifier loaded with `explain=True`; `probabilities`, every class's.
        """
        post = PostOptions(**options)
        if isinstance(inputs, (list, tuple)):
            return list(self.run(inputs, post))
        [result] = self.run([inputs], post)
        if result.error is not None and result.error.exception is not None:
            raise result.error.exception
        return result

    def run(
        self,
        inputs: Iterable[Any],
        options: PostOptions | PostPlan = DEFAULT_POST,
        *,
        read: Read | None = None,
    ) -> Iterator[Classification]:
        """The pipeline's one call path: every input through pre, forward and post, results in input order
        as each batch of `batch_size` completes (the options are checked before the first input is read;
        `read` turns an input into what is decoded, in the decoding threads)."""
        plan = options if isinstance(options, PostPlan) else self.plan(options)
        # An engine that ranks on its device sends back the top-k alone when nothing else is needed.
        top = None if plan.explain or plan.needs_probabilities else plan.top
        for batch in self.iter_batches(inputs, wanted=plan.wanted, read=read, top=top):
            yield from self.postprocess(batch, plan)

    def postprocess(self, batch: Batch, plan: PostPlan) -> Iterator[Classification]:
        """Post for a whole batch (one input is a batch of one): softmax and top-k as operations on all
        its rows at once (or the engine's ranking), then each input's record."""
        forward = batch.forward
        probabilities = None if forward is None else probabilities_of(forward.rows)
        ranking = batch.ranking
        if probabilities is not None:
            ranking = ranking_of(probabilities, plan.top)
        ranked = iter(predictions_of(ranking, self.labels) if ranking is not None else ())
        rows: Iterator[np.ndarray | None] = iter(probabilities) if probabilities is not None else repeat(None)
        heats: Iterator[Heat | None] = (
            iter(forward.heats) if forward is not None and forward.heats is not None else repeat(None)
        )
        for source, item in zip(batch.sources, batch.prepared, strict=True):
            name = describe_source(source)
            if isinstance(item, ErrorInfo):
                yield Classification(name, self.spec.name, error=item)
            else:
                yield self._record(name, item[0], next(ranked), next(rows), next(heats), plan)

    def _record(
        self,
        source: str,
        info: InputInfo,
        predictions: tuple[Prediction, ...],
        probabilities: np.ndarray | None,
        heat: Heat | None,
        plan: PostPlan,
    ) -> Classification:
        """One input's result from its ranked predictions (and its probabilities, when the plan needs
        them: groups, or the full softmax row)."""
        scores: tuple[GroupScore, ...] = ()
        if probabilities is not None and plan.synsets:
            scores = wordnet().scores(probabilities, plan.synsets)
        if probabilities is not None and plan.top_groups is not None:
            k, depth = plan.top_groups
            scores += wordnet().top_groups(probabilities, depth=depth, k=k)
        return Classification(
            source,
            self.spec.name,
            predictions=predictions,
            input=info,
            groups=scores,
            explanation=self._explanation(heat, info) if heat is not None else None,
            probabilities=probabilities if plan.probabilities else None,
        )

    def _explanation(self, heat: Heat, info: InputInfo) -> Explanation:
        class_index, raw_map = heat
        method = self.engine.explain_method
        assert method is not None, "a heat comes from an engine that explains"
        region = input_region(info.width, info.height, self.data_config)
        label = self.labels[class_index].name
        return Explanation(method, class_index, label, positive_unit(raw_map), region)

    def preprocess_images(self, images: Sequence[Any]) -> np.ndarray:
        """The uint8 NHWC batch the engine receives for these RGB PIL images (see `Engine`)."""
        return np.stack([resize_and_crop(image, self.data_config) for image in images])

    def predict_proba(self, images: Sequence[Any]) -> np.ndarray:
        """Softmax probabilities (N, classes) for RGB PIL images."""
        return probabilities_of(self.forward(self.preprocess_images(images)).rows)


# One input through a feature extractor: its name, and its features or its error.
ExtractedFeatures = tuple[str, np.ndarray | None, ErrorInfo | None]


@dataclass(frozen=True)
class FeatureSet:
    """Pooled features of the inputs that decoded (rows in input order) and the inputs that did not."""

    model: str
    paths: list[str]
    features: np.ndarray  # (N, D) float32
    failures: list[tuple[str, ErrorInfo]] = field(default_factory=list)


class FeatureExtractor(Pipeline):
    """A model ready to extract features: its engine outputs the global-average-pooled penultimate
    features (Keras's `include_top=False, pooling="avg"`), one vector per photo, for transfer learning."""

    def extract(
        self, inputs: Iterable[ImageSource], *, on_item: Callable[[str, ErrorInfo | None], None] | None = None
    ) -> FeatureSet:
        """Features of every decodable input, in input order; the others are listed with their errors."""
        paths: list[str] = []
        rows: list[np.ndarray] = []
        failures: list[tuple[str, ErrorInfo]] = []
        for name, features, error in self.run(inputs):
            if error is not None:
                failures.append((name, error))
            elif features is not None:
                paths.append(name)
                rows.append(features)
            if on_item:
                on_item(name, error)
        stacked = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
        return FeatureSet(self.spec.name, paths, stacked, failures)

    def run(self, inputs: Iterable[Any], *, read: Read | None = None) -> Iterator[ExtractedFeatures]:
        """The pipeline's one call path: each input's name and features (D,) float32, or its error, in
        input order, as each batch completes (`read` as `Classifier.run` takes it)."""
        for batch in self.iter_batches(inputs, read=read):
            yield from self.postprocess(batch)

    def postprocess(self, batch: Batch) -> Iterator[ExtractedFeatures]:
        """Post for a whole batch: each input's features, flattened, or its error."""
        rows = iter(np.asarray(batch.forward.rows, np.float32) if batch.forward is not None else ())
        for source, item in zip(batch.sources, batch.prepared, strict=True):
            name = describe_source(source)
            if isinstance(item, ErrorInfo):
                yield name, None, item
            else:
                yield name, next(rows).reshape(-1), None
