"""Feature extraction for transfer learning: one pooled penultimate vector per photo.

Files: `.npz` (arrays `features` (N, D) float32 and `paths` (N,) unicode, read back without pickle) or
`.parquet` (columns `path` and `features`, with pyarrow).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.classifier import Classifier, ErrorInfo
from imagenet_zoo.errors import UsageError
from imagenet_zoo.images import ImageSource, describe_source

FORMATS = (".npz", ".parquet")


@dataclass(frozen=True)
class FeatureSet:
    model: str
    paths: list[str]
    features: np.ndarray  # (N, D) float32


def extract_features(
    extractor: Classifier,
    sources: Iterable[ImageSource],
    *,
    on_item: Callable[[str, ErrorInfo | None], None] | None = None,
) -> tuple[FeatureSet, list[tuple[str, ErrorInfo]]]:
    """Features of every decodable input (in order), and the inputs that failed with their errors."""
    paths: list[str] = []
    rows: list[np.ndarray] = []
    failures: list[tuple[str, ErrorInfo]] = []
    for source, item, output in extractor.iter_outputs(sources):
        name = describe_source(source)
        if isinstance(item, ErrorInfo) or output is None:
            failures.append((name, item))  # type: ignore[arg-type]
        else:
            paths.append(name)
            rows.append(np.asarray(output, np.float32).reshape(-1))
        if on_item:
            on_item(name, item if isinstance(item, ErrorInfo) else None)
    features = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
    return FeatureSet(extractor.spec.name, paths, features), failures


def save_features(feature_set: FeatureSet, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        np.savez(path, features=feature_set.features, paths=np.array(feature_set.paths, dtype=str),
                 model=np.array(feature_set.model))  # fmt: skip
    elif suffix == ".parquet":
        pa, pq = _pyarrow()
        dim = feature_set.features.shape[1] if feature_set.features.size else 0
        column = pa.FixedSizeListArray.from_arrays(pa.array(feature_set.features.reshape(-1)), dim)
        table = pa.table(
            {"path": feature_set.paths, "features": column}, metadata={"model": feature_set.model}
        )
        pq.write_table(table, path)
    else:
        raise UsageError(f"--output must end in one of {', '.join(FORMATS)}: {path}")


def load_features(path: Path) -> FeatureSet:
    if path.suffix.lower() == ".parquet":
        _, pq = _pyarrow()
        table = pq.read_table(path)
        features = np.array(table.column("features").to_pylist(), dtype=np.float32)
        return FeatureSet(
            table.schema.metadata[b"model"].decode(), table.column("path").to_pylist(), features
        )
    with np.load(path, allow_pickle=False) as data:  # a features file can never run code
        return FeatureSet(str(data["model"]), [str(p) for p in data["paths"]], data["features"])


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("writing .parquet needs pyarrow: pip install pyarrow (or use .npz)") from None
    return pa, pq
