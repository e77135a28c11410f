"""Results streamed to a file as they are produced (CSV, JSON Lines or JSON), and resumed from one.

Every result is flushed when written, so a crash or Ctrl-C loses nothing already classified. `--resume`
reads which paths a file already holds; a last line cut short by a crash is dropped before appending.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

from imagenet_zoo.api import DEFAULT_ENGINE
from imagenet_zoo.classifier import Classification, ErrorInfo
from imagenet_zoo.data.images import DecodeMode
from imagenet_zoo.errors import UsageError
from imagenet_zoo.registry import DEFAULT_MODEL
from imagenet_zoo.specs import ResizeMode

FORMATS = (".csv", ".jsonl", ".json")
Task = Literal["classify", "extract"]  # what a folder job does to each photo


@dataclass(frozen=True, kw_only=True)
class JobOptions:
    """What every folder job is asked, on one machine (`folder.FolderJob`) or on Ray (`ClusterJob`)."""

    sources: list[str]  # files, folders or glob patterns (and, on a cluster, URLs)
    task: Task = "classify"
    model: str = DEFAULT_MODEL
    engine: str = DEFAULT_ENGINE
    precision: str = "fp32"
    resize: ResizeMode | None = None
    top: int = 5
    batch_size: int = 16
    recursive: bool = False
    decode: DecodeMode = "fast"  # or "full": every pixel, the exact evaluation protocol


@dataclass(frozen=True)
class JobReport:
    """What a folder job did, on one machine or on a cluster."""

    listed: int  # photos found
    skipped: int  # already in the output (a resumed run)
    done: int  # photos processed in this run, failed ones included
    failures: list[tuple[str, ErrorInfo]] = field(default_factory=list)
    seconds: float = 0.0
    feature_shape: tuple[int, ...] | None = None  # extract on one machine: (photos, dimensions)


_INPUT_FIELDS = ("format", "width", "height", "mode", "exif_transposed", "warnings")
_PREDICTION_FIELDS = ("label", "synset", "index", "score")


def csv_header(top: int) -> list[str]:
    ranked = [f"top{k}_{field}" for k in range(1, top + 1) for field in _PREDICTION_FIELDS]
    return ["path", "model", "error_type", "error_message", *_INPUT_FIELDS, *ranked, "groups"]


def flat_result(result: Classification, top: int) -> dict[str, Any]:
    """A result as one flat row (the CSV columns of `csv_header(top)`)."""
    info = result.input.to_dict() if result.input else {}
    row: dict[str, Any] = {
        "path": result.source,
        "model": result.model,
        "error_type": result.error.type if result.error else None,
        "error_message": result.error.message if result.error else None,
        **{field: info.get(field) for field in _INPUT_FIELDS},
        "warnings": "; ".join(info.get("warnings", [])) or None,
        "groups": "; ".join(f"{g.name}={g.score:.6f}" for g in result.groups) or None,
    }
    for k, p in enumerate(result.predictions[:top], start=1):
        row.update({f"top{k}_label": p.label, f"top{k}_synset": p.synset, f"top{k}_index": p.index,
                    f"top{k}_score": f"{p.score:.6f}"})  # fmt: skip
    return row


class JsonArrayWriter:
    """Writes a JSON array one element at a time; `close` ends the array (also after Ctrl-C)."""

    def __init__(self, stream: IO[str], *, indent: int | None = None) -> None:
        self._stream, self._indent, self._count = stream, indent, 0
        stream.write("[")

    def write(self, obj: dict[str, Any]) -> None:
        text = json.dumps(obj, indent=self._indent)
        if self._indent:
            text = "\n".join(" " * self._indent + line for line in text.splitlines())
        self._stream.write(("," if self._count else "") + "\n" + text)
        self._stream.flush()
        self._count += 1

    def close(self) -> None:
        self._stream.write("\n]\n")
        self._stream.flush()


def _drop_partial_last_line(path: Path) -> None:
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with path.open("r+b") as f:
            f.truncate(end)


def _json_objects(path: Path) -> list[dict[str, Any]]:
    """Objects of a JSON array this module wrote (one per line), complete or cut short by a crash."""
    objects = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip().rstrip(",")
        if text.startswith("{"):
            try:
                objects.append(json.loads(text))
            except json.JSONDecodeError:
                break  # the object being written when the run stopped
    return objects


def _csv_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: a string starting like a formula (`=cmd|...`, `+`, `-`,
    `@`, tab, carriage return) gets a leading apostrophe, as OWASP advises; numbers are left alone."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_text(cell: str) -> str:
    """A cell's text as it was before `_csv_cell` guarded it."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] in ("=", "+", "-", "@", "\t", "\r") else cell


class RecordsFile:
    """Records appended to `path`, in the format its suffix names: CSV (one column each of `columns`),
    JSON Lines, or a JSON array. With `resume`, the records already there are kept and `done` holds
    their paths."""

    def __init__(
        self, path: Path, *, columns: list[str], resume: bool = False, formats: tuple[str, ...] = FORMATS
    ) -> None:
        self.path, self.columns, self.suffix = path, columns, path.suffix.lower()
        if self.suffix not in formats:
            raise UsageError(f"--output must end in one of {', '.join(formats)}: {path}")
        resuming = resume and path.is_file() and path.stat().st_size > 0
        previous = self._read_previous() if resuming else []
        self.done: set[str] = {str(row["path"]) for row in previous}
        try:
            self._file = path.open(
                "a" if resuming and self.suffix != ".json" else "w", encoding="utf-8", newline=""
            )
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc}") from exc
        self._csv = csv.writer(self._file) if self.suffix == ".csv" else None
        self._array = JsonArrayWriter(self._file) if self.suffix == ".json" else None
        if self._csv and not resuming:
            self._csv.writerow(columns)
        for obj in previous if self._array else []:
            self._array.write(obj)  # type: ignore[union-attr]

    def _read_previous(self) -> list[dict[str, Any]]:
        if self.suffix == ".json":
            return _json_objects(self.path)
        _drop_partial_last_line(self.path)
        with self.path.open(encoding="utf-8", newline="") as f:
            if self.suffix == ".csv":
                return [{k: _csv_text(v) for k, v in row.items()} for row in csv.DictReader(f)]
            return [json.loads(line) for line in f if line.strip()]

    def write_record(self, record: dict[str, Any], flat: dict[str, Any] | None = None) -> None:
        """One record: `record` as JSON, or its `flat` form (default: itself) as a CSV row."""
        if self._csv:
            row = record if flat is None else flat
            self._csv.writerow([_csv_cell(row.get(c)) for c in self.columns])
        elif self._array:
            self._array.write(record)
            return
        else:
            self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._array:
            self._array.close()
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class ResultsFile(RecordsFile):
    """Classification results appended to `path` (.csv, .jsonl or .json)."""

    def __init__(self, path: Path, *, top: int, resume: bool = False) -> None:
        super().__init__(path, columns=csv_header(top), resume=resume)
        self.top = top

    def write(self, result: Classification) -> None:
        self.write_record(result.to_dict(), flat_result(result, self.top))
