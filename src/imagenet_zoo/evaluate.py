"""Top-1 / top-5 accuracy of a labelled set of photos: how users reproduce published accuracy.

Labels are ImageNet-1k classes, found in one of three ways: a file name that starts with the synset id
(`n01440764_tench.JPEG`, as in the shared sample), a parent folder named by the synset id (the ImageNet
validation layout), or a CSV of `path,label` rows where the label is a synset id or a class index.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imagenet_zoo.classifier import Classification, Classifier
from imagenet_zoo.errors import UsageError
from imagenet_zoo.images import find_images
from imagenet_zoo.labels import imagenet1k

_SYNSET = re.compile(r"^(n\d{8})")


@dataclass(frozen=True)
class LabelledPhoto:
    path: str
    label: int  # ImageNet-1k class index


@dataclass(frozen=True)
class Accuracy:
    model: str
    engine: str
    precision: str
    n: int  # photos evaluated (failed ones included)
    top1: float
    top5: float
    failed: int  # photos that could not be decoded, counted as wrong
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0


def _class_index() -> dict[str, int]:
    return {label.synset: label.index for label in imagenet1k()}


def _label_of(value: str, index: dict[str, int]) -> int | None:
    value = value.strip()
    if value.isdigit() and int(value) < len(index):
        return int(value)
    return index.get(value)


def labelled_photos(
    source: Path, classes: tuple[str, ...] | None = None
) -> tuple[list[LabelledPhoto], list[str]]:
    """The labelled photos of a folder or CSV, and the files whose label could not be found.

    With `classes` (a bundle's own classes) labels are those names: the photo's folder, or the CSV label.
    """
    index = _class_index() if classes is None else {name: i for i, name in enumerate(classes)}
    if source.suffix.lower() == ".csv" and source.is_file():
        return _from_csv(source, index)
    if not source.is_dir():
        raise UsageError(f"eval takes a folder of labelled photos or a CSV of path,label: {source}")
    photos, unlabelled = [], []
    for path in find_images([str(source)], recursive=True):
        p = Path(path)
        if classes is not None:
            label = index.get(p.parent.name)
        else:
            match = _SYNSET.match(p.name) or _SYNSET.fullmatch(p.parent.name)
            label = index.get(match.group(1)) if match else None
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
) -> Accuracy:
    """Classify every photo once (top-5) and count hits; undecodable photos count as misses."""
    top1 = top5 = failed = 0
    start = time.perf_counter()
    results = classifier.iter_classify([p.path for p in photos], top=5)
    for result, photo in zip(results, photos, strict=True):
        ranked = [p.index for p in result.predictions]
        failed += not result.ok
        top1 += bool(ranked) and ranked[0] == photo.label
        top5 += photo.label in ranked
        if on_result:
            on_result(result, photo)
    n = len(photos)
    return Accuracy(
        classifier.spec.name,
        engine,
        precision,
        n,
        top1 / n if n else 0.0,
        top5 / n if n else 0.0,
        failed,
        time.perf_counter() - start,
    )
