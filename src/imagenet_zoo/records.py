"""The classification record, defined once.

`RECORD` says which fields a result has, their types and which may be absent. Everything that writes or
describes results derives from it: `Classification.to_dict` (JSON, JSON Lines, the service's answers),
`csv_columns` / `flat_row` (CSV), `arrow_schema` (the cluster's Parquet partitions); the service's
pydantic models are checked against it by a test (`conforms` checks any record).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from imagenet_zoo.data.hierarchy import GroupScore
from imagenet_zoo.data.images import InputInfo
from imagenet_zoo.errors import ImageError
from imagenet_zoo.explain import Explanation

Scalar = Literal["str", "int", "float", "float32", "bool"]


@dataclass(frozen=True)
class Struct:
    name: str
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class ListOf:
    item: Scalar | Struct | ListOf


@dataclass(frozen=True)
class Field:
    name: str
    type: Scalar | Struct | ListOf
    optional: bool = False  # absent from a record that does not have it (null in Parquet, empty in CSV)


PREDICTION = Struct(
    "Prediction",
    (
        Field("rank", "int"),
        Field("index", "int"),
        Field("synset", "str"),
        Field("label", "str"),
        Field("score", "float"),
    ),
)
INPUT = Struct(
    "InputInfo",
    (
        Field("format", "str", optional=True),
        Field("width", "int"),
        Field("height", "int"),
        Field("mode", "str"),
        Field("exif_transposed", "bool"),
        Field("warnings", ListOf("str"), optional=True),
    ),
)
GROUP = Struct(
    "GroupScore",
    (Field("name", "str"), Field("synset", "str"), Field("score", "float"), Field("classes", "int")),
)
EXPLANATION = Struct(
    "Explanation",
    (
        Field("method", "str"),
        Field("class_index", "int"),
        Field("label", "str"),
        Field("grid", ListOf(ListOf("float"))),
        Field("region", ListOf("float")),
    ),
)
ERROR = Struct("ErrorDetail", (Field("type", "str"), Field("message", "str")))
# A photo that could not be classified: its path and error, nothing else.
FAILED = Struct("FailedFile", (Field("path", "str"), Field("error", ERROR)))
# One photo of an extract job, as a features file and a cluster partition hold it: its pooled features,
# or (a photo that failed) the error that stopped it (`feature_record`).
FEATURES = Struct(
    "Features",
    (
        Field("path", "str"),
        Field("model", "str", optional=True),
        Field("features", ListOf("float32"), optional=True),
        Field("error", ERROR, optional=True),
    ),
)
RECORD = Struct(
    "Classification",
    (
        Field("path", "str"),
        Field("model", "str"),
        Field("input", INPUT),
        Field("predictions", ListOf(PREDICTION)),
        Field("groups", ListOf(GROUP), optional=True),  # asked-for WordNet groups
        Field("explanation", EXPLANATION, optional=True),  # asked-for heatmap
        Field("error", ERROR, optional=True),  # a failed photo's record is `FAILED`
    ),
)


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
    was raised in this process (a record read back from a file has type and message alone)."""

    type: str
    message: str
    exception: ImageError | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, exc: ImageError) -> ErrorInfo:
        """The error of an input, kept without its traceback: the frames of a failed decode hold its
        buffers (400 MB for a 571-byte hostile file), which every failure kept would add up."""
        return cls(type(exc).__name__, str(exc), _without_frames(exc))

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
    # full-softmax output. Not part of the record; not compared.
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
        """The record (`RECORD`): what every output format writes."""
        if self.error is not None:
            return {"path": self.source, "error": self.error.to_dict()}
        record = {
            "path": self.source,
            "model": self.model,
            "input": self.input.to_dict() if self.input else None,
            "predictions": [p.to_dict() for p in self.predictions],
        }
        if self.groups:
            record["groups"] = [g.to_dict() for g in self.groups]
        if self.explanation is not None:
            record["explanation"] = self.explanation.to_dict()
        return record


def _without_frames(exc: ImageError) -> ImageError:
    chained: BaseException | None = exc
    while chained is not None:
        chained.__traceback__ = None
        chained = chained.__cause__ or chained.__context__
    return exc


def conforms(record: Any, struct: Struct = RECORD) -> list[str]:
    """What in `record` does not fit `struct` (fields, types, absences), as readable problems; a record
    with an `error` is a `FAILED` one."""
    if not isinstance(record, dict):
        return [f"{struct.name} is not an object"]
    if struct is RECORD and "error" in record:
        struct = FAILED
    problems = [f"unknown field {name!r}" for name in record if name not in {f.name for f in struct.fields}]
    for spec in struct.fields:
        if record.get(spec.name) is None:
            if not spec.optional:
                problems.append(f"{struct.name}.{spec.name} is missing")
            continue
        problems += [f"{struct.name}.{p}" for p in _value_problems(record[spec.name], spec.type, spec.name)]
    return problems


_PYTHON: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "float32": (float, int),
    "bool": (bool,),
}


def _value_problems(value: Any, kind: Scalar | Struct | ListOf, name: str) -> list[str]:
    if isinstance(kind, Struct):
        return conforms(value, kind)
    if isinstance(kind, ListOf):
        if not isinstance(value, list):
            return [f"{name} is not a list"]
        return [p for item in value for p in _value_problems(item, kind.item, name)]
    ok = isinstance(value, _PYTHON[kind]) and (kind == "bool" or not isinstance(value, bool))
    return [] if ok else [f"{name} is not {kind}: {value!r}"]


def arrow_schema(pa: Any, struct: Struct = RECORD) -> Any:
    """The record as a pyarrow schema (every field nullable: a failed photo's record has two)."""
    return pa.schema([(f.name, _arrow_type(pa, f.type)) for f in struct.fields])


def _arrow_type(pa: Any, kind: Scalar | Struct | ListOf) -> Any:
    if isinstance(kind, Struct):
        return pa.struct([(f.name, _arrow_type(pa, f.type)) for f in kind.fields])
    if isinstance(kind, ListOf):
        return pa.list_(_arrow_type(pa, kind.item))
    return {
        "str": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "float32": pa.float32(),
        "bool": pa.bool_(),
    }[kind]


def feature_record(
    path: str, model: str, features: np.ndarray | None, error: ErrorInfo | None
) -> dict[str, Any]:
    """A photo's `FEATURES` record: its features (any shape, flattened), or its error."""
    if error is not None:
        return {"path": path, "error": error.to_dict()}
    assert features is not None, "a photo without an error has features"
    return {"path": path, "model": model, "features": np.asarray(features, np.float32).reshape(-1).tolist()}


def parquet_text(name: str) -> str:
    """A file name as Parquet's UTF-8 text: bytes that are not UTF-8 (which reach Python as surrogate
    escapes) written as `\\xNN`, as Python shows them."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def without_nulls(value: Any) -> Any:
    """A Parquet row as the record it was: fields a record does not have are absent, at every level."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


# CSV: one column per scalar; a struct's fields as `struct_field`; the ranked predictions and the groups as
# numbered columns (`top1_label`, `group2_score`: how many is a setting of the job); other lists as JSON.
_NUMBERED = {"predictions": "top", "groups": "group"}


def csv_columns(top: int, groups: int) -> list[str]:
    """The CSV header of a job reporting `top` predictions and `groups` groups per photo."""
    counts = {"predictions": top, "groups": groups}
    columns: list[str] = []
    for spec in RECORD.fields:
        columns += _columns(spec, counts.get(spec.name, 0))
    return columns


def _columns(spec: Field, count: int) -> list[str]:
    kind = spec.type
    if isinstance(kind, Struct):
        return [f"{spec.name}_{f.name}" for f in kind.fields]
    if isinstance(kind, ListOf) and isinstance(kind.item, Struct) and spec.name in _NUMBERED:
        prefix = _NUMBERED[spec.name]
        return [f"{prefix}{k}_{f.name}" for k in range(1, count + 1) for f in kind.item.fields]
    return [spec.name]


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """A record as one CSV row (columns of `csv_columns`; absent fields are left out)."""
    row: dict[str, Any] = {}
    for spec in RECORD.fields:
        value = record.get(spec.name)
        if value is None:
            continue
        kind = spec.type
        if isinstance(kind, Struct):
            row.update({f"{spec.name}_{k}": _cell(v) for k, v in value.items()})
        elif spec.name in _NUMBERED:
            for k, item in enumerate(value, start=1):
                row.update({f"{_NUMBERED[spec.name]}{k}_{name}": _cell(v) for name, v in item.items()})
        else:
            row[spec.name] = _cell(value)
    return row


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (list, dict)) else value
