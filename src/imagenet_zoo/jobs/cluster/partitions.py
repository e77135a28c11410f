"""The output folder of a job on a cluster: partition files named after the photos they hold, written
under a name nobody can guess and renamed into place, and the job's settings (`_job.json`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imagenet_zoo.errors import ClusterError, PartitionWriteError
from imagenet_zoo.jobs.cluster.job import ClusterJob
from imagenet_zoo.jobs.cluster.sources import filesystem_of
from imagenet_zoo.jobs.identity import (
    IDENTITY_FILE,
    Identity,
    check_identity,
    encode_identity,
    parse_identity,
)
from imagenet_zoo.records import FEATURES, arrow_schema, parquet_text, without_nulls


class PartitionFolder:
    """The output folder: complete partitions (`part-*.jsonl` / `part-*.parquet`) and unfinished ones."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.filesystem, self.root = filesystem_of(location)

    def claim(self, identity: Identity) -> None:
        """Record the job's settings in the folder, or check they are the ones it was claimed with: a
        folder of another job, even one still starting its actors with no partition written yet, is
        refused naming the difference."""
        path = f"{self.root}/{IDENTITY_FILE}"
        try:
            with self.filesystem.open_input_file(path) as file:
                data: bytes | None = file.read()
        except FileNotFoundError:
            data = None
        if data is None and self.partition_count() == 0:
            with self.filesystem.open_output_stream(path) as stream:
                stream.write(encode_identity(identity))
            return
        check_identity(parse_identity(data, where=path), identity, where=self.location)

    def remove_unfinished(self, token: str) -> None:
        """Delete the temporary files an interrupted run of the job with this `token` left, and no other
        file: another job may be writing into the same folder."""
        for info in self._files():
            name = Path(info.path).name
            if _UNFINISHED.fullmatch(name) and name.startswith(f".part-{token}-"):
                self.filesystem.delete_file(info.path)

    def partition_count(self) -> int:
        """How many complete partitions the folder holds (a cheap listing: the watchdog's progress)."""
        return len(self._complete())

    def paths(self) -> set[str]:
        """The photos the folder holds records of (from Parquet, the path column alone)."""
        paths = set()
        for name, file in self._partitions():
            with self._readable(name):
                if name.endswith(".parquet"):
                    paths.update(_parquet().read_table(file, columns=["path"]).column("path").to_pylist())
                else:
                    paths.update(
                        json.loads(line)["path"] for line in file.read().decode().split("\n") if line
                    )
        return paths

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in the folder's partitions, in partition-name order."""
        for name, file in self._partitions():
            with self._readable(name):
                if name.endswith(".parquet"):
                    rows = [without_nulls(row) for row in _parquet().read_table(file).to_pylist()]
                else:
                    rows = [json.loads(line) for line in file.read().decode().split("\n") if line]
                if not all(isinstance(row, dict) and "path" in row for row in rows):
                    raise ValueError("a line that is not a record")
            yield from rows

    @contextlib.contextmanager
    def _readable(self, name: str) -> Iterator[None]:
        """A partition that is not one this tool wrote (corrupt, or another tool's) is a ClusterError."""
        try:
            yield
        except (ValueError, KeyError, TypeError, OSError) as exc:  # pyarrow's errors are ValueErrors
            raise ClusterError(
                f"{name} in {self.location} is not a partition this tool wrote ({type(exc).__name__}: "
                f"{str(exc)[:200]}); remove it, or write to another folder"
            ) from None

    def _partitions(self) -> Iterator[tuple[str, Any]]:
        """(name, open file) of each complete partition."""
        for info in sorted(self._complete(), key=lambda i: i.path):
            with self.filesystem.open_input_file(info.path) as file:
                yield Path(info.path).name, file

    def _complete(self) -> list[Any]:
        """The complete partitions' file infos (written ones, not `.part-*` leftovers)."""
        return [
            info
            for info in self._files()
            if Path(info.path).name.startswith("part-") and info.path.endswith((".jsonl", ".parquet"))
        ]

    def _files(self) -> list[Any]:
        from pyarrow import fs

        self.filesystem.create_dir(self.root, recursive=True)
        infos = self.filesystem.get_file_info(fs.FileSelector(self.root))
        return [i for i in infos if i.type == fs.FileType.File]


def _parquet() -> Any:
    import pyarrow.parquet as pq

    return pq


def job_token(job: ClusterJob, identity: Identity) -> str:
    """What names a job's temporary files: the same for a rerun of the job, different for another job."""
    key = json.dumps([identity, sorted(job.sources), job.output], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def partition_name(paths: list[str], partition_format: str) -> str:
    """A partition's file name, from the photos it holds: a retried block gets its own name again, and
    different path lists never share one (the list is hashed as JSON: a path may contain a new line)."""
    return f"part-{hashlib.sha256(json.dumps(paths).encode()).hexdigest()[:32]}.{partition_format}"


_UNFINISHED = re.compile(r"\.part-[0-9a-f]{12}-[0-9a-f]{32}-[0-9a-f]+\.(jsonl|parquet)")


def write_partition(
    output: str, partition_format: str, task: str, token: str, records: list[dict[str, Any]]
) -> None:
    """The block's partition, written under a temporary name nobody can guess (created, never opened if
    it exists: a link planted there is not followed), then renamed into place. A write that fails is a
    `PartitionWriteError`."""
    try:
        _write_partition(output, partition_format, task, token, records)
    except OSError as exc:
        raise PartitionWriteError(f"cannot write a partition into {output}: {exc.strerror or exc}") from None


def _write_partition(
    output: str, partition_format: str, task: str, token: str, records: list[dict[str, Any]]
) -> None:
    filesystem, root = filesystem_of(output)
    name = partition_name([r["path"] for r in records], partition_format)
    final = f"{root}/{name}"
    digest = name.removeprefix("part-").split(".")[0]
    unfinished = f"{root}/.part-{token}-{digest}-{secrets.token_hex(8)}.{partition_format}"
    try:
        with _new_file(filesystem, unfinished) as stream:
            if partition_format == "jsonl":
                stream.write("".join(json.dumps(r) + "\n" for r in records).encode())
            else:
                _write_parquet(stream, records, task)
    except BaseException:
        with contextlib.suppress(OSError):  # what was written of it goes: a full disk needs the room
            filesystem.delete_file(unfinished)
        raise
    filesystem.move(unfinished, final)  # a retried block replaces its own partition (a link there too)


def _new_file(filesystem: Any, path: str) -> Any:
    """A file that did not exist: on a local disk created exclusively, never through a link (object
    storage has no links, and the name is random)."""
    from pyarrow import fs

    if isinstance(filesystem, fs.LocalFileSystem):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        return os.fdopen(os.open(path, flags, 0o644), "wb")
    return filesystem.open_output_stream(path)


def _write_parquet(stream: Any, records: list[dict[str, Any]], task: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(pa, FEATURES) if task == "features" else arrow_schema(pa)
    rows = [{**record, "path": parquet_text(record["path"])} for record in records]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), stream)
