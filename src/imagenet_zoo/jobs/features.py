"""Feature files: the pooled features of an extract job, written and read back.

`.npz`: arrays `features` (N, D) float32, `paths` (N,) unicode and `model`, read back without pickle.
`.parquet`: one row per photo, the `records.FEATURES` record (path, model, features, or error), as the
cluster job writes its extract partitions, so a single-machine file and a cluster folder read alike.

A job on one machine streams each photo's features (or error) as one line to a journal beside the output,
`FILE.partial.jsonl`, as `classify` streams its records (`RecordsFile`: one writer at a time, the job's
settings recorded, a line a crash cut short dropped by `--resume`). The features file is written from the
journal at the end, through a temporary file and one rename, in bounded memory (Parquet in row groups, the
npz's arrays streamed into its zip), and the journal is removed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from imagenet_zoo.classifier import FeatureSet
from imagenet_zoo.errors import UsageError
from imagenet_zoo.records import FEATURES, ErrorInfo, arrow_schema, feature_record, parquet_text

FORMATS = (".npz", ".parquet")
JOURNAL_SUFFIX = ".partial.jsonl"
ROW_GROUP = 1024  # Parquet rows written at once
_COPY_CHUNK = 2**20


def journal_of(output: Path) -> Path:
    """Where a single-machine job streams its features until the features file is written."""
    return output.with_name(output.name + JOURNAL_SUFFIX)


def journal_record(path: str, features: np.ndarray | None, error: ErrorInfo | None) -> dict[str, Any]:
    """One photo's line: its features as little-endian float32 bytes in base64 (exact, and a seventh of
    their decimal text), or its error."""
    if error is not None:
        return {"path": path, "error": error.to_dict()}
    assert features is not None
    return {"path": path, "features": base64.b64encode(features.astype("<f4").tobytes()).decode()}


@dataclass
class JournalShape:
    photos: int = 0  # with features
    dimensions: int = 0
    failed: int = 0
    longest: dict[str, int] = field(default_factory=dict)  # characters of each text array of the npz

    def add_text(self, array: str, text: str) -> None:
        self.longest[array] = max(self.longest.get(array, 1), len(text))


def write_features_file(journal: Path, output: Path, model: str) -> JournalShape:
    """The features file of the journal's photos (with their features, or their errors), in the format
    `output`'s suffix names, written through a temporary file beside it and renamed into place."""
    shape = _shape(journal)
    handle, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".partial")
    os.close(handle)
    try:
        if output.suffix.lower() == ".npz":
            _write_npz(journal, Path(temporary), model, shape)
        else:
            _write_parquet(journal, Path(temporary), model)
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return shape


Entry = tuple[str, np.ndarray | None, ErrorInfo | None]  # a photo, and its features or its error


def _entries(journal: Path) -> Iterator[Entry]:
    """The journal's photos, in order. Its lines are ASCII (JSON escapes the rest), so a binary read
    splits them at new lines alone; a last line a crash cut short is not an entry."""
    with journal.open("rb") as lines:
        for line in lines:
            if not line.endswith(b"\n"):
                break
            record = json.loads(line)
            if "features" in record:
                yield record["path"], np.frombuffer(base64.b64decode(record["features"]), "<f4"), None
            else:
                yield record["path"], None, ErrorInfo(record["error"]["type"], record["error"]["message"])


def _shape(journal: Path) -> JournalShape:
    shape = JournalShape()
    for path, features, error in _entries(journal):
        if error is not None:
            shape.failed += 1
            for array, text in zip(_FAILURE_ARRAYS, (path, error.type, error.message), strict=True):
                shape.add_text(array, text)
        elif features is not None:
            if shape.photos and len(features) != shape.dimensions:
                raise UsageError(f"{journal} holds features of two sizes: it is not one job's; move it away")
            shape.photos, shape.dimensions = shape.photos + 1, len(features)
            shape.add_text("paths", path)
    return shape


_FAILURE_ARRAYS = ("failed_paths", "failed_types", "failed_messages")


def _write_npz(journal: Path, target: Path, model: str, shape: JournalShape) -> None:
    """What `np.savez` writes: `features`, `paths`, `model`, and the photos that failed with their errors'
    types and messages. The journal is read once more (after `_shape`): the features stream into their
    member of the zip, and each text array into a temporary file beside it, copied in after (a zip takes
    one member at a time)."""
    arrays = ("paths", *_FAILURE_ARRAYS)
    dtypes = {array: np.dtype(f"<U{shape.longest.get(array, 1)}") for array in arrays}
    with contextlib.ExitStack() as stack:
        texts = {array: stack.enter_context(tempfile.TemporaryFile(dir=target.parent)) for array in arrays}
        archive = stack.enter_context(zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, allowZip64=True))
        with archive.open("features.npy", "w", force_zip64=True) as member:
            _npy_header(member, np.dtype("<f4"), (shape.photos, shape.dimensions))
            for path, features, error in _entries(journal):
                if features is not None:
                    member.write(features.tobytes())
                    texts["paths"].write(np.array(path, dtypes["paths"]).tobytes())
                elif error is not None:
                    for array, text in zip(_FAILURE_ARRAYS, (path, error.type, error.message), strict=True):
                        texts[array].write(np.array(text, dtypes[array]).tobytes())
        for array, spooled in texts.items():
            count = shape.photos if array == "paths" else shape.failed
            with archive.open(f"{array}.npy", "w", force_zip64=True) as member:
                _npy_header(member, dtypes[array], (count,))
                spooled.seek(0)
                shutil.copyfileobj(spooled, member, _COPY_CHUNK)
        with archive.open("model.npy", "w") as member:
            np.lib.format.write_array(member, np.array(model), allow_pickle=False)


def _npy_header(out: IO[bytes], dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_2_0(out, header)


def _write_parquet(journal: Path, target: Path, model: str) -> None:
    """One row per photo, a failed one with its error and no features (as a cluster partition has it)."""
    pa, pq = _pyarrow()
    schema = arrow_schema(pa, FEATURES)
    with pq.ParquetWriter(target, schema) as writer:
        rows: list[dict[str, Any]] = []
        for path, features, error in _entries(journal):
            rows.append(feature_record(parquet_text(path), model, features, error))
            if len(rows) == ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))


def load_features(path: Path) -> FeatureSet:
    """A features file (or one cluster partition): the photos' features, and those that failed with
    their errors (a file written before failures were kept has none)."""
    if path.suffix.lower() == ".parquet":
        _, pq = _pyarrow()
        table = pq.read_table(path).to_pylist()
        rows = [r for r in table if r["error"] is None]
        failures = [
            (r["path"], ErrorInfo(r["error"]["type"], r["error"]["message"]))
            for r in table
            if r["error"] is not None
        ]
        features = np.array([r["features"] for r in rows], dtype=np.float32)
        model = next((r["model"] for r in rows), "")
        return FeatureSet(model, [r["path"] for r in rows], features.reshape(len(rows), -1), failures)
    with np.load(path, allow_pickle=False) as data:  # a features file can never run code
        failed = zip(*(data.get(a, []) for a in _FAILURE_ARRAYS), strict=True)
        failures = [(str(p), ErrorInfo(str(t), str(m))) for p, t, m in failed]
        return FeatureSet(str(data["model"]), [str(p) for p in data["paths"]], data["features"], failures)


def check_writable(output: Path) -> None:
    """The features file's format is one this writes, and pyarrow is there for Parquet."""
    if output.suffix.lower() not in FORMATS:
        raise UsageError(f"--output must end in one of {', '.join(FORMATS)}: {output}")
    if output.suffix.lower() == ".parquet":
        _pyarrow()


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("writing .parquet needs pyarrow: pip install pyarrow (or use .npz)") from None
    return pa, pq
