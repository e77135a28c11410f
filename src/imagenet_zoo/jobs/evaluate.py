"""Top-1 / top-5 accuracy of a labelled set of photos: how users reproduce published accuracy.

Labels are ImageNet-1k classes, found in one of three ways: a file name that starts with the synset id
(`n01440764_tench.JPEG`, as in the shared sample), a parent folder named by the synset id (the ImageNet
validation layout), or a CSV of `path,label` rows where the label is a synset id or a class index.
"""

from __future__ import annotations

import contextlib
import csv
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from imagenet_zoo.api import load_pipeline, resolve_model
from imagenet_zoo.classifier import Classifier
from imagenet_zoo.data.hierarchy import wordnet
from imagenet_zoo.data.images import find_images
from imagenet_zoo.data.labels import ClassLabel, imagenet1k
from imagenet_zoo.errors import UsageError
from imagenet_zoo.jobs.results import RecordsFile
from imagenet_zoo.pipeline import LoadConfig, PostOptions
from imagenet_zoo.records import Classification

_SYNSET = re.compile(r"^(n\d{8})")


@dataclass(frozen=True)
class LabelledPhoto:
    path: str
    label: int  # ImageNet-1k class index


@dataclass(frozen=True)
class GroupAccuracy:
    """A WordNet group as a yes/no classifier (its probability >= 0.5), against the photos' labels."""

    name: str
    synset: str
    true_positives: int
    false_positives: int
    true_negatives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        return self.true_positives / max(1, self.true_positives + self.false_positives)

    @property
    def recall(self) -> float:
        return self.true_positives / max(1, self.true_positives + self.false_negatives)

    @property
    def balanced_accuracy(self) -> float:
        specificity = self.true_negatives / max(1, self.true_negatives + self.false_positives)
        return (self.recall + specificity) / 2


@dataclass(frozen=True)
class Evaluation:
    """How a model on an engine scored on labelled photos."""

    model: str
    engine: str
    precision: str
    n: int  # photos evaluated (failed ones included)
    top1: float
    top5: float
    failed: int  # photos that could not be decoded, counted as wrong
    seconds: float
    group: GroupAccuracy | None = None

    @property
    def images_per_second(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0


def _label_of(value: str, index: dict[str, int]) -> int | None:
    """The class a label names: its synset id or class name first (a bundle's classes may be named "1",
    "2", ...), else its index."""
    value = value.strip()
    if value in index:
        return index[value]
    if value.isascii() and value.isdigit() and len(value) <= len(str(len(index))) and int(value) < len(index):
        return int(value)
    return None


def labelled_photos(
    source: Path, labels: Sequence[ClassLabel] | None = None
) -> tuple[list[LabelledPhoto], list[str]]:
    """The labelled photos of a folder or CSV, and the files whose label could not be found.

    `labels` are the model's classes (default: ImageNet-1k's). A photo's label is the synset id its file
    name starts with, else its folder's name (a synset id, or a bundle's class), or the CSV's label.
    """
    index = {label.synset: label.index for label in (imagenet1k() if labels is None else labels)}
    if source.suffix.lower() == ".csv" and source.is_file():
        return _from_csv(source, index)
    if not source.is_dir():
        raise UsageError(f"eval takes a folder of labelled photos or a CSV of path,label: {source}")
    photos, unlabelled = [], []
    for path in find_images([str(source)], recursive=True):
        p = Path(path)
        match = _SYNSET.match(p.name)
        label = index.get(match.group(1)) if match else None
        label = index.get(p.parent.name) if label is None else label
        if label is None:
            unlabelled.append(path)
        else:
            photos.append(LabelledPhoto(path, label))
    return photos, unlabelled


def _from_csv(source: Path, index: dict[str, int]) -> tuple[list[LabelledPhoto], list[str]]:
    photos, unlabelled = [], []
    with source.open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if len(row) < 2 or row[0].strip().lower() == "path":
                continue
            path = Path(row[0].strip())
            path = path if path.is_absolute() else source.parent / path  # relative to the CSV, not the cwd
            label = _label_of(row[1], index)
            if label is None:
                unlabelled.append(str(path))
            else:
                photos.append(LabelledPhoto(str(path), label))
    return photos, unlabelled


def evaluate(
    classifier: Classifier,
    photos: list[LabelledPhoto],
    *,
    engine: str,
    precision: str,
    on_result: Callable[[Classification, LabelledPhoto], None] | None = None,
    group: str | None = None,
) -> Evaluation:
    """Classify every photo once (top-5) and count hits; undecodable photos count as misses. With
    `group`, also how well that group's probability tells its photos from the others."""
    top1 = top5 = failed = 0
    counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    scored = wordnet().group(group) if group else None
    members = wordnet().classes_under(scored.id) if scored else frozenset()
    start = time.perf_counter()
    post = PostOptions(top=5, groups=(group,) if group else ())
    results = classifier.run([p.path for p in photos], post)
    for result, photo in zip(results, photos, strict=True):
        ranked = [p.index for p in result.predictions]
        failed += not result.ok
        top1 += bool(ranked) and ranked[0] == photo.label
        top5 += photo.label in ranked
        if group:
            said = bool(result.groups) and result.groups[0].score >= 0.5
            counts[("t" if said == (photo.label in members) else "f") + ("p" if said else "n")] += 1
        if on_result:
            on_result(result, photo)
    n = len(photos)
    return Evaluation(
        classifier.spec.name,
        engine,
        precision,
        n,
        top1 / n if n else 0.0,
        top5 / n if n else 0.0,
        failed,
        time.perf_counter() - start,
        GroupAccuracy(scored.name, scored.id, counts["tp"], counts["fp"], counts["tn"], counts["fn"])
        if scored
        else None,
    )


# The per-photo records of `--output` (.jsonl or .csv).
RECORD_COLUMNS = [
    "model",
    "path",
    "label",
    "top1_index",
    "top1_label",
    "top1_score",
    "correct_top1",
    "correct_top5",
    "error_type",
]


def photo_record(result: Classification, photo: LabelledPhoto) -> dict[str, Any]:
    ranked = [p.index for p in result.predictions]
    top = result.predictions[0] if result.predictions else None
    return {
        "model": result.model,
        "path": result.source,
        "label": photo.label,
        "top1_index": top.index if top else None,
        "top1_label": top.label if top else None,
        "top1_score": round(top.score, 6) if top else None,
        "correct_top1": bool(ranked) and ranked[0] == photo.label,
        "correct_top5": photo.label in ranked,
        "error_type": result.error.type if result.error else None,
    }


@dataclass(frozen=True)
class MissingWeights:
    model: str

    @property
    def message(self) -> str:
        return f"weights missing: imagenet-zoo weights fetch {self.model}"


def evaluate_models(
    source: Path,
    models: list[str],
    load: LoadConfig,
    *,
    output: Path | None = None,
    overwrite: bool = False,
    group: str | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> list[Evaluation | MissingWeights]:
    """Each model's accuracy on the labelled photos of `source`, loaded as `load` says (its model
    replaced by each of `models`); per-photo records go to `output` (a file that holds records is
    replaced only with `overwrite`)."""
    rows: list[Evaluation | MissingWeights] = []
    with contextlib.ExitStack() as stack:
        records = (
            stack.enter_context(
                RecordsFile(
                    output,
                    columns=RECORD_COLUMNS,
                    formats=(".jsonl", ".csv"),
                    overwrite=overwrite,
                    resumable=False,
                )
            )
            if output
            else None
        )
        for name in models:
            model = resolve_model(name)
            photos, unlabelled = labelled_photos(source, model.spec.labels)
            if not photos:
                raise UsageError(
                    f"no photos in {source} carry a label {name} knows (ImageNet: a synset id in the file "
                    "or folder name; a bundle: a sub-folder named like one of its classes)"
                )
            if unlabelled:
                warn(f"{len(unlabelled)} photos have no label for {name}; left out")
            if not model.weights_available:
                rows.append(MissingWeights(model.spec.name))
                continue
            classifier = load_pipeline(replace(load, model=model))
            assert isinstance(classifier, Classifier)
            on_result = (lambda r, p: records.write_record(photo_record(r, p))) if records else None
            rows.append(
                evaluate(
                    classifier,
                    photos,
                    engine=load.engine,
                    precision=load.precision,
                    on_result=on_result,
                    group=group,
                )
            )
    return rows
