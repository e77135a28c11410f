"""The classification record is defined once (`records.RECORD`): every output is checked against it."""

import csv
import json
import types
import typing
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from imagenet_zoo import records
from imagenet_zoo.records import RECORD, ListOf, Struct, conforms, csv_columns, flat_row
from imagenet_zoo.server import schemas
from tests.conftest import SAMPLE_DIR, run_cli

_PYTHON = {"str": str, "int": int, "float": float, "bool": bool}


def _types(annotation: typing.Any) -> set[typing.Any]:
    """The types an annotation admits, `None` left out (optional fields are checked apart)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return {t for arg in args for t in _types(arg)} - {type(None)}
    if typing.get_origin(annotation) is typing.Literal:
        return {type(arg) for arg in args}
    return {annotation}


def _agrees(model: type[BaseModel], struct: Struct, extra: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Where a pydantic model of the service's contract differs from the record's struct."""
    fields = model.model_fields
    problems = [f"{model.__name__} lacks {f.name}" for f in struct.fields if f.name not in fields]
    problems += [
        f"{model.__name__} has {name}"
        for name in fields
        if name not in {f.name for f in struct.fields} | extra
    ]
    for spec in struct.fields:
        if spec.name not in fields:
            continue
        admitted = _types(fields[spec.name].annotation)
        kind = spec.type
        if isinstance(kind, Struct):
            [nested] = admitted
            problems += _agrees(nested, kind, {"overlay"} if kind.name == "Explanation" else set())
        elif isinstance(kind, ListOf):
            [listed] = admitted
            (item,) = typing.get_args(listed)
            if isinstance(kind.item, Struct):
                problems += _agrees(item, kind.item)
        elif _PYTHON[kind] not in admitted:
            problems.append(f"{model.__name__}.{spec.name} is {admitted}, not {kind}")
        if spec.optional != (
            not fields[spec.name].is_required() or type(None) in typing.get_args(fields[spec.name].annotation)
        ):
            problems.append(f"{model.__name__}.{spec.name}: optional in one, required in the other")
    return problems


def test_the_services_answer_models_are_the_record() -> None:
    """The service answers a classified upload as `schemas.Classification` and a failed one (in a batch)
    as `schemas.FailedFile`: the record's two shapes."""
    classified = Struct("Classification", tuple(f for f in RECORD.fields if f.name != "error"))
    assert _agrees(schemas.Classification, classified) == []
    assert _agrees(schemas.FailedFile, records.FAILED) == []


def _classified(tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir(parents=True)
    for photo in sorted(SAMPLE_DIR.glob("n0208*"))[:2]:
        (folder / photo.name).symlink_to(photo)
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    output = tmp_path / f"results{suffix}"
    argv = [
        "classify",
        str(folder),
        "--output",
        str(output),
        "--groups",
        "dog,bird",
        "--explain",
        "--top",
        "3",
    ]
    assert run_cli(argv, capsys)[0] == 1
    return output


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_json_results_are_records(
    with_lite0: Path, tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    output = _classified(tmp_path, suffix, capsys)
    text = output.read_text()
    rows = json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 3 and [conforms(row) for row in rows] == [[], [], []]
    assert {"groups", "explanation"} <= rows[0].keys() and set(rows[2]) == {"path", "error"}


def test_csv_results_are_the_records_flattened(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = _classified(tmp_path, ".csv", capsys)
    json_output = _classified(tmp_path / "again", ".jsonl", capsys)
    with output.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == csv_columns(top=3, groups=2)
    expected = [flat_row(json.loads(line)) for line in json_output.read_text().splitlines()]
    for row, record in zip(rows, expected, strict=True):
        assert row["path"].endswith(Path(record["path"]).name)
        assert row["top1_label"] == str(record.get("top1_label", "")) and row["group1_name"] == str(
            record.get("group1_name", "")
        )
        assert row["error_type"] == str(record.get("error_type", ""))
    assert json.loads(rows[0]["explanation_grid"]) == json.loads(expected[0]["explanation_grid"])


def test_the_parquet_schema_reads_back_the_json_record() -> None:
    pa = pytest.importorskip("pyarrow")
    grid = np.round(np.random.default_rng(0).random((7, 7)), 4).tolist()
    record = {
        "path": "a.jpg", "model": "m",
        "input": {"format": "JPEG", "width": 5, "height": 4, "mode": "RGB", "exif_transposed": False},
        "predictions": [{"rank": 1, "index": 3, "synset": "n1", "label": "x", "score": 0.5}],
        "groups": [{"name": "dog", "synset": "n2", "score": 0.25, "classes": 118}],
        "explanation": {"method": "cam", "class_index": 3, "label": "x", "grid": grid,
                        "region": [0.0, 0.0, 5.0, 4.0]},
    }  # fmt: skip
    failed = {"path": "b.jpg", "error": {"type": "CorruptImageError", "message": "broken"}}
    assert conforms(record) == conforms(failed) == []
    table = pa.Table.from_pylist([record, failed], schema=records.arrow_schema(pa))
    assert [records.without_nulls(row) for row in table.to_pylist()] == [record, failed]


def test_conforms_names_what_is_wrong() -> None:
    assert conforms({"path": 3, "model": "m", "input": None, "predictions": []}) == [
        "Classification.path is not str: 3",
        "Classification.input is missing",
    ]
    assert conforms({"path": "a", "error": {"type": "t", "message": "m"}, "extra": 1}) == [
        "unknown field 'extra'"
    ]
    assert conforms({"path": "a", "error": {"type": "t"}}) == ["FailedFile.ErrorDetail.message is missing"]
