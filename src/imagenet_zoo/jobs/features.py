"""Feature files: the pooled features of `FeatureExtractor.extract`, written and read back.

`.npz`: arrays `features` (N, D) float32, `paths` (N,) unicode and `model`, read back without pickle.
`.parquet`: one row per photo in `FEATURES_SCHEMA` (path, model, features, error), the same schema the
cluster job writes its extract partitions in, so a single-machine file and a cluster folder read alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.classifier import FeatureSet
from imagenet_zoo.errors import UsageError

FORMATS = (".npz", ".parquet")


def features_schema(pa: Any) -> Any:
    """One row per photo: its features, or (in a cluster partition) the error that stopped it."""
    return pa.schema(
        [
            ("path", pa.string()),
            ("model", pa.string()),
            ("features", pa.list_(pa.float32())),
            ("error", pa.struct([("type", pa.string()), ("message", pa.string())])),
        ]
    )


def save_features(feature_set: FeatureSet, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        np.savez(path, features=feature_set.features, paths=np.array(feature_set.paths, dtype=str),
                 model=np.array(feature_set.model))  # fmt: skip
    elif suffix == ".parquet":
        pa, pq = _pyarrow()
        rows = [
            {"path": p, "model": feature_set.model, "features": f}
            for p, f in zip(feature_set.paths, feature_set.features, strict=True)
        ]
        pq.write_table(pa.Table.from_pylist(rows, schema=features_schema(pa)), path)
    else:
        raise UsageError(f"--output must end in one of {', '.join(FORMATS)}: {path}")


def load_features(path: Path) -> FeatureSet:
    """A features file (or one cluster partition: rows with an error are left out)."""
    if path.suffix.lower() == ".parquet":
        _, pq = _pyarrow()
        rows = [r for r in pq.read_table(path).to_pylist() if r["error"] is None]
        features = np.array([r["features"] for r in rows], dtype=np.float32)
        model = rows[0]["model"] if rows else ""
        return FeatureSet(model, [r["path"] for r in rows], features.reshape(len(rows), -1))
    with np.load(path, allow_pickle=False) as data:  # a features file can never run code
        return FeatureSet(str(data["model"]), [str(p) for p in data["paths"]], data["features"])


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("writing .parquet needs pyarrow: pip install pyarrow (or use .npz)") from None
    return pa, pq
