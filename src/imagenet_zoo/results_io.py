"""Results streamed to a file as they are produced (CSV, JSON Lines or JSON), and resumed from one.

Every result is flushed when written, so a crash or Ctrl-C loses nothing already classified. `--resume`
reads which paths a file already holds; a last line cut short by a crash is dropped before appending.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from imagenet_zoo.classifier import Classification
from imagenet_zoo.errors import UsageError

FORMATS = (".csv", ".jsonl", ".json")
_INPUT_FIELDS = ("format", "width", "height", "mode", "exif_transposed")
_PREDICTION_FIELDS = ("label", "synset", "index", "score")


def csv_header(top: int) -> list[str]:
    ranked = [f"top{k}_{field}" for k in range(1, top + 1) for field in _PREDICTION_FIELDS]
    return ["path", "model", "error_type", "error_message", *_INPUT_FIELDS, *ranked]


def csv_row(result: Classification, top: int) -> list[Any]:
    error = result.error
    info = result.input.to_dict() if result.input else {}
    ranked: list[Any] = []
    for k in range(top):
        p = result.predictions[k] if k < len(result.predictions) else None
        ranked.extend([p.label, p.synset, p.index, f"{p.score:.6f}"] if p else ["", "", "", ""])
    return [
        result.source,
        result.model,
        error.type if error else "",
        error.message if error else "",
        *(info.get(field, "") for field in _INPUT_FIELDS),
        *ranked,
    ]


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


class ResultsFile:
    """Results appended to `path`, in the format its suffix names."""

    def __init__(self, path: Path, *, top: int, resume: bool = False) -> None:
        self.path, self.top, self.suffix = path, top, path.suffix.lower()
        if self.suffix not in FORMATS:
            raise UsageError(f"--output must end in one of {', '.join(FORMATS)}: {path}")
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
            self._csv.writerow(csv_header(top))
        for obj in previous if self._array else []:
            self._array.write(obj)  # type: ignore[union-attr]

    def _read_previous(self) -> list[dict[str, Any]]:
        if self.suffix == ".json":
            return _json_objects(self.path)
        _drop_partial_last_line(self.path)
        with self.path.open(encoding="utf-8", newline="") as f:
            if self.suffix == ".csv":
                return list(csv.DictReader(f))
            return [json.loads(line) for line in f if line.strip()]

    def write(self, result: Classification) -> None:
        if self._csv:
            self._csv.writerow(csv_row(result, self.top))
        elif self._array:
            self._array.write(result.to_dict())
            return
        else:
            self._file.write(json.dumps(result.to_dict()) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._array:
            self._array.close()
        self._file.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
