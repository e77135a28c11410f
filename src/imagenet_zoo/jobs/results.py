"""Files of records written as they are produced (CSV, JSON Lines or a JSON array), and resumed.

Every record is flushed when written, so a crash or Ctrl-C loses nothing already written. A resume reads
what the file holds first and refuses, naming the line, what it cannot read: it never overwrites what it
does not understand. The one thing it repairs is what a crash leaves, a last record cut short (no new line
after it, or a JSON element that never closes); the repair is written to a temporary file that replaces
the original in one rename. A file whose settings are recorded beside it (`jobs.identity`) is resumed only
with the same settings.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from imagenet_zoo.errors import ResultsWriteError, UsageError
from imagenet_zoo.jobs.identity import Identity, check_identity, read_identity, write_identity

# A file name that is not UTF-8 (an old camera's, a Latin-1 system's: caf\xe9.jpg) reaches Python with
# surrogates standing for its bytes; written back as those bytes, a resume reads the same name again.
NAMES = "surrogateescape"
FORMATS = (".csv", ".jsonl", ".json")


class JsonArrayWriter:
    """Writes a JSON array one element at a time; `close` ends the array (also after Ctrl-C). `written`
    elements are already in the stream, after its opening bracket (a resumed file)."""

    def __init__(self, stream: IO[str], *, indent: int | None = None, written: int | None = None) -> None:
        self._stream, self._indent = stream, indent
        self._count = written or 0
        if written is None:
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


class UnreadableResultsError(UsageError):
    """A results file to resume holds something that is not a record this tool writes."""


# Writes what a file to resume keeps: its whole records (a cut-short last one dropped, the last one ended,
# a JSON array left open), the one repair a resume makes.
Repair = Callable[[IO[bytes]], None]


@dataclass(frozen=True)
class _Previous:
    """What a file to resume holds: its records' paths, and the repair it needs, if any."""

    paths: list[str]
    repair: Repair | None = None
    elements: int = 0  # JSON: how many elements the array holds


class RecordsFile:
    """Records appended to `path`, in the format its suffix names: CSV (one column each of `columns`, from
    `flat(record)`), JSON Lines, or a JSON array. With `resume`, the records already there are kept and
    `done` holds their paths; without it, a file that holds anything is replaced only with `overwrite`
    (a rerun that forgot --resume would throw a long job's results away; `resumable`: whether the command
    has --resume to offer instead). With `identity`, the settings of the job are recorded beside the file,
    and a resume with other settings is refused."""

    def __init__(
        self,
        path: Path,
        *,
        columns: list[str],
        resume: bool = False,
        overwrite: bool = False,
        resumable: bool = True,
        formats: tuple[str, ...] = FORMATS,
        identity: Identity | None = None,
        flat: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.path, self.columns, self.suffix = path, columns, path.suffix.lower()
        self._flat = flat
        if self.suffix not in formats:
            raise UsageError(f"--output must end in one of {', '.join(formats)}: {path}")
        self._resumable = resumable
        self._lock = _WriterLock(path)
        try:
            self._open(resume=resume, overwrite=overwrite, identity=identity)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, *, resume: bool, overwrite: bool, identity: Identity | None) -> None:
        path, columns = self.path, self.columns
        holds = path.is_file() and path.stat().st_size > 0
        if holds and not (resume or overwrite):
            instead = "add --resume to continue that job, or " if self._resumable else ""
            raise UsageError(f"{path} already holds {self._held()}: {instead}add --overwrite to replace them")
        resuming = resume and holds
        if resuming and identity is not None:
            check_identity(read_identity(path), identity, where=str(path))
        previous = self._read_previous() if resuming else None
        self.done: set[str] = set(previous.paths) if previous else set()
        self.written, self._broken = 0, False  # records this run wrote; whether a write failed
        if previous is not None and previous.repair is not None:
            _replace_atomically(path, previous.repair)
        try:
            self._file = path.open("a" if resuming else "w", encoding="utf-8", errors=NAMES, newline="")
            if identity is not None and not resuming:
                write_identity(path, identity)
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc}") from exc
        self._csv = csv.writer(self._file) if self.suffix == ".csv" else None
        written = previous.elements if previous else None
        self._array = JsonArrayWriter(self._file, written=written) if self.suffix == ".json" else None
        if self._csv and not resuming:
            self._csv.writerow(columns)

    def _held(self) -> str:
        """What the file holds, for a message: its records, or data this tool cannot read as records."""
        try:
            return f"{len(self._read_previous().paths):,} records"
        except UnreadableResultsError:
            return "data that are not records of this tool"

    def _read_previous(self) -> _Previous:
        try:
            if self.suffix == ".jsonl":  # line by line: a long job's file (an extract's journal) may be GBs
                return _json_lines(self.path)
            text = self.path.read_text(encoding="utf-8", errors=NAMES)
            return (_json_array if self.suffix == ".json" else self._csv_rows)(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise UnreadableResultsError(f"cannot resume from {self.path}: {exc}") from None
        except _NotARecord as exc:
            raise UnreadableResultsError(
                f"cannot resume from {self.path}: {exc}; it was left as it is (fix it, or write to another "
                "--output)"
            ) from None

    def _csv_rows(self, text: str) -> _Previous:
        lines = _Lines(text)
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise _NotARecord(f"line 1: {exc}") from None
        if header != self.columns:
            raise _NotARecord("its columns are not the ones this job writes")
        paths, keep = [], lines.consumed
        while True:
            try:
                row = next(reader, None)
            except csv.Error as exc:
                if lines.at_unfinished_end():
                    break  # the row a crash cut short
                raise _NotARecord(f"line {lines.number}: {exc}") from None
            if row is None:
                break
            if len(row) != len(self.columns):
                if lines.at_unfinished_end():
                    break
                raise _NotARecord(f"line {lines.number} has {len(row)} cells for {len(self.columns)} columns")
            paths.append(_csv_text(row[0]))
            keep = lines.consumed
        return _Previous(paths, _kept_text(text, _ended(text[:keep])))

    def write_record(self, record: dict[str, Any]) -> None:
        """One record: as JSON, or its flat form (default: itself) as a CSV row."""
        try:
            if self._csv:
                row = record if self._flat is None else self._flat(record)
                self._csv.writerow([_csv_cell(row.get(c)) for c in self.columns])
            elif self._array:
                self._array.write(record)
            else:
                self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as exc:
            raise self._failed(exc) from None
        self.written += 1

    def _failed(self, exc: OSError) -> ResultsWriteError:
        self._broken = True
        safe = len(self.done) + self.written
        return ResultsWriteError(
            f"cannot write {self.path}: {exc.strerror or exc}; the {safe:,} records before it are safe: make "
            "room and run the same command with --resume"
        )

    def close(self) -> None:
        try:
            if self._array and not self._broken:
                self._array.close()
            self._file.close()
        except OSError as exc:
            if not self._broken:  # a write that failed already said what happened
                raise self._failed(exc) from None
        finally:
            self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


class _WriterLock:
    """An exclusive lock on `path`'s sibling `.lock` file, held while the file is written: a second job
    on the same results file stops at once, naming the process that writes it. The kernel releases the
    lock when that process dies, so a crash leaves nothing that blocks; a job that ends removes the file
    while it still holds the lock, and a job that locked a removed file takes the new one instead."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        while True:
            try:
                self._file = self.path.open("a+", encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot write beside {path}: {exc}") from None
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.seek(0)
                holder = self._file.read(20).strip() or "another process"
                self._file.close()
                raise UsageError(
                    f"{path} is being written by another job (process {holder}): wait for it to end, or "
                    "write to another --output"
                ) from None
            if self._still_there():
                break
            self._file.close()
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()

    def _still_there(self) -> bool:
        try:
            return os.path.samestat(os.fstat(self._file.fileno()), self.path.stat())
        except FileNotFoundError:
            return False

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        self._file.close()


class _NotARecord(Exception):
    pass


def lines_of(text: str) -> list[str]:
    """The text's lines as the writers end them, at a new line alone: `str.splitlines` also splits at
    U+2028, U+2029, U+0085, \x1c-\x1e, \v and \f, which a file name may hold and the CSV writer does not
    quote."""
    return _LINE.findall(text)


_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")


class _Lines:
    """A text's lines for `csv.reader`, counting the characters it has consumed."""

    def __init__(self, text: str) -> None:
        self._lines = lines_of(text)
        self._text_length = len(text)
        self.number = 0
        self.consumed = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.number == len(self._lines):
            raise StopIteration
        line = self._lines[self.number]
        self.number += 1
        self.consumed += len(line)
        return line

    def at_unfinished_end(self) -> bool:
        """The reader stopped at the file's end, in a last line without its new line."""
        return self.consumed == self._text_length and not self._lines[-1].endswith(("\n", "\r"))


def _ended(text: str) -> str:
    """Whole lines: a last record another tool wrote without its new line gets one."""
    return text if not text or text.endswith("\n") else text + "\n"


def _json_lines(path: Path) -> _Previous:
    """The paths of a JSON Lines file's records, read a line at a time (bytes split at new lines alone)."""
    paths, kept, unended, size = [], 0, False, 0
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            size += len(line)
            text = line.decode("utf-8", NAMES)
            if text.strip():
                try:
                    paths.append(_path_of(json.loads(text)))
                except (ValueError, _NotARecord) as exc:
                    if not line.endswith(b"\n"):
                        break  # the last line, which a crash cut short
                    raise _NotARecord(f"line {number} is not a record ({exc})") from None
            kept, unended = kept + len(line), not line.endswith(b"\n")
    whole = kept == size and not unended
    return _Previous(paths, None if whole else partial(_whole_lines, path, kept, unended))


def _whole_lines(path: Path, kept: int, unended: bool, out: IO[bytes]) -> None:
    """A JSON Lines file's first `kept` bytes (its whole records), copied in chunks, the last one ended."""
    with path.open("rb") as file:
        while kept and (chunk := file.read(min(kept, 1 << 20))):
            out.write(chunk)
            kept -= len(chunk)
    if unended:
        out.write(b"\n")


def _kept_text(text: str, keep: str) -> Repair | None:
    """The repair that leaves `keep` of a file whose text is `text`; none where they are the same."""
    return None if keep == text else partial(_write_text, keep)


def _write_text(text: str, out: IO[bytes]) -> None:
    out.write(text.encode("utf-8", NAMES))


def _json_array(text: str) -> _Previous:
    """The elements of a JSON array, whole or left open by a crash (its last element unfinished)."""
    decoder = json.JSONDecoder()
    position = _skip(text, 0)
    if position == len(text):
        return _Previous([], _kept_text(text, "["))
    if text[position] != "[":
        raise _NotARecord("it is not a JSON array")
    paths: list[str] = []
    position, end = _skip(text, position + 1), position + 1
    while position < len(text) and text[position] != "]":
        if paths:
            if text[position] != ",":
                raise _NotARecord(f"expected ',' at character {position}")
            position = _skip(text, position + 1)
        try:
            element, after = decoder.raw_decode(text, position)
        except ValueError as exc:
            if _unfinished(text[position:]):
                break  # the element a crash cut short
            raise _NotARecord(f"element {len(paths) + 1}: {exc}") from None
        paths.append(_path_of(element))
        position, end = _skip(text, after), after
    if position < len(text) and text[position] == "]" and text[_skip(text, position + 1) :]:
        raise _NotARecord("something follows the end of the array")
    return _Previous(paths, _kept_text(text, text[:end]), len(paths))


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _unfinished(tail: str) -> bool:
    """Whether `tail` is the start of a JSON object that never closes (what a crash leaves)."""
    depth, in_string, escaped = 0, False, False
    for char in tail:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth <= 0:
                return False  # it closes: a malformed element, not an unfinished one
    return tail.startswith("{")


def _path_of(record: Any) -> str:
    path = record.get("path") if isinstance(record, dict) else None
    if not isinstance(path, str):
        raise _NotARecord("a record is an object with a path")
    return path


def _replace_atomically(path: Path, write: Repair) -> None:
    """`path` with what `write` writes as its content, in one rename (its mode kept): a crash leaves one
    or the other."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".repair")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
