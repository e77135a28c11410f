"""The folder job (classify or extract) on a Ray cluster, for collections that outgrow one machine.

A Ray Data pipeline: blocks of the listed photos -> a pool of model actors (each loads the engine once:
the cached OpenVINO IR on its node; each reads, decodes and classifies a block as the single-machine job
does, then writes it as one partition file in the output folder) -> each photo's path and error, back to
the driver. Each partition is written under a temporary name and renamed, and named after the photos it
holds, so a retried block replaces its own file: a killed worker costs time, never results, and never
writes a photo twice. A rerun with the same output skips the photos its partitions already hold.

The actors run the single-machine pipeline with the job's own load and post configuration, so every
record is the single-machine job's (`Classification.to_dict()` for classify, groups and heatmaps
included; path, model and features for extract); a broken photo is a record with its error. The job's
settings are recorded in the folder (`_job.json`): a rerun with other settings is refused.

Ray is optional (`pip install 'imagenet-zoo[ray]'`): only this module imports it, only `--cluster` uses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from imagenet_zoo.api import check_config
from imagenet_zoo.classifier import Classifier, FeatureExtractor
from imagenet_zoo.data.images import IMAGE_SUFFIXES, MAX_FILE_BYTES, find_images
from imagenet_zoo.errors import ClusterError, ImageNotFoundError, ImageTooLargeError, UsageError, install_hint
from imagenet_zoo.jobs.identity import (
    IDENTITY_FILE,
    Identity,
    check_identity,
    encode_identity,
    parse_identity,
)
from imagenet_zoo.jobs.job import JobOptions, JobReport
from imagenet_zoo.records import FEATURES, ErrorInfo, arrow_schema, feature_record, without_nulls

PARTITION_FORMATS = ("jsonl", "parquet")
_BATCHES_PER_BLOCK = 8
_MAX_BLOCKS = 10_000
_FORWARDED_ENV = ("IMAGENET_ZOO_HOME", "IMAGENET_ZOO_MIRROR")  # where workers find weights and IR
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class ClusterJob(JobOptions):
    """Sources may also be URLs pyarrow's filesystems understand."""

    output: str  # a folder every node can write: a shared path or an object-storage URL
    address: str = "local"  # "local" (start Ray here), "auto" (the running cluster) or a Ray address
    partition_format: str = "jsonl"
    max_actors: int | None = None  # default (and at most): one per CPU of the cluster
    progress: bool = False
    # Stop, saying so, when no partition has been written for this long (the first one's wait includes
    # starting the actors and loading the model): a lost worker must not leave the job waiting forever.
    stall_timeout_s: float = 300.0


def run_cluster_job(job: ClusterJob) -> JobReport:
    if job.partition_format not in PARTITION_FORMATS:
        raise UsageError(f"partitions are written as {' or '.join(PARTITION_FORMATS)}")
    if not (math.isfinite(job.stall_timeout_s) and job.stall_timeout_s > 0):  # NaN would never stall
        raise UsageError("--stall-timeout must be a positive number of seconds")
    job.check()  # what the job cannot do is refused here, not in every actor
    if job.address not in ("local", "auto"):
        _check_reachable(job.address)
    sources = list_sources(job.sources, recursive=job.recursive)
    if not sources:
        raise UsageError("no image files found (use --recursive for sub-folders)")
    job_plan = job.check(photos=len(sources))
    identity = job_plan.identity
    job = replace(job, load=job_plan.load_plan.config)  # every actor runs the engine and device chosen here
    output, token = PartitionFolder(job.output), job_token(job, identity)
    output.claim(identity)
    output.remove_unfinished(token)
    done = output.paths()
    todo = [s for s in sources if s not in done]
    ray = _import_ray()
    _connect(ray, job.address)
    if not todo:
        return JobReport(len(sources), len(sources), 0)
    dataset = _pipeline(ray, job, todo, token)
    written, failures = _watched(lambda: _collect(dataset), output, job, todo)
    failures.sort(key=lambda failure: failure[0])
    return JobReport(
        len(sources), len(sources) - len(todo), written, failures, choice=job_plan.load_plan.choice
    )


def _collect(dataset: Any) -> tuple[int, list[tuple[str, ErrorInfo]]]:
    """Run the job to its end: the actors write the partitions; what comes back is one row per photo,
    its path and, if it failed, its error's type and message."""
    written, failures = 0, []
    for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        written += len(block["path"])
        rows = zip(block["path"], block["error_type"], block["error_message"], strict=True)
        failures += [(str(path), ErrorInfo(str(kind), str(message))) for path, kind, message in rows if kind]
    return written, failures


_WATCH_INTERVAL_S = 2.0
_INTERRUPT_ARRIVES_S = 1.0  # a signal sent to this thread is handled well within this
_STARTUP_S = 120.0  # before the first partition: the actors start and load the model too


def _watched(work: Callable[[], T], output: PartitionFolder, job: ClusterJob, todo: list[str]) -> T:
    """Run `work` (the whole job) while watching the output folder: if no partition appears for
    `job.stall_timeout_s` (plus `_STARTUP_S` before the first one), interrupt the job as Ctrl-C would (Ray
    Data then stops its tasks and actors) and raise a `ClusterError` that says what is left to do.

    Only a job run from the main thread is watched: the interruption is delivered to that thread."""
    if threading.current_thread() is not threading.main_thread():
        return work()
    stalled, finished, deciding = threading.Event(), threading.Event(), threading.Lock()

    def watch() -> None:
        written, last_progress = output.partition_count(), time.monotonic()
        allowance = job.stall_timeout_s + _STARTUP_S
        while not finished.wait(min(_WATCH_INTERVAL_S, job.stall_timeout_s)):
            count = output.partition_count()
            if count != written:
                written, last_progress, allowance = count, time.monotonic(), job.stall_timeout_s
                continue
            with deciding:  # never once the job has ended
                if time.monotonic() - last_progress > allowance and not finished.is_set():
                    stalled.set()
                    # A real SIGINT to the main thread: it interrupts a blocking wait there too (waiting
                    # for the next block), which `_thread.interrupt_main` leaves blocked.
                    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                    return

    watcher = threading.Thread(target=watch, name="cluster-watchdog", daemon=True)
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:  # started in the background (`&`, nohup): Ctrl-C stays ignored, the watchdog's is not
        signal.signal(signal.SIGINT, partial(_interrupt_if, stalled))
    watcher.start()
    result: list[T] = []
    try:
        result.append(work())
        with deciding:
            finished.set()
        if stalled.is_set():  # the job ended as the watchdog stopped it: its interrupt arrives now
            time.sleep(_INTERRUPT_ARRIVES_S)
    except KeyboardInterrupt:
        if not stalled.is_set():
            raise  # the user's Ctrl-C
        if not result:
            raise _stalled(output, job, todo) from None
    finally:
        finished.set()
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return result[0]


def _interrupt_if(stalled: threading.Event, signum: int, frame: object) -> None:
    if stalled.is_set():
        raise KeyboardInterrupt


def _stalled(output: PartitionFolder, job: ClusterJob, todo: list[str]) -> ClusterError:
    done = output.paths()
    waiting = [path for path in todo if path not in done]
    examples = ", ".join(waiting[:3]) + (", ..." if len(waiting) > 3 else "")
    return ClusterError(
        f"the job stopped making progress: no partition was written for {job.stall_timeout_s:g} s "
        f"(--stall-timeout), with {len(waiting)} photos still to do ({examples}); it was stopped. "
        f"The {output.partition_count()} partitions written are kept: run the same command again to "
        "resume from them"
    )


def list_sources(sources: list[str], *, recursive: bool) -> list[str]:
    """Local files, folders and globs (as the single-machine path expands them), then URLs."""
    local = [s for s in sources if "://" not in s]
    found = find_images(local, recursive=recursive) if local else []
    for url in (s for s in sources if "://" in s):
        found.extend(_list_url(url, recursive=recursive))
    return found


def _list_url(url: str, *, recursive: bool) -> list[str]:
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(url)
    prefix = url[: url.index("://") + 3]
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.File or info.type == fs.FileType.NotFound:
        return [url]  # a missing file is reported per photo, like a local one
    selector = fs.FileSelector(path, recursive=recursive)
    infos = filesystem.get_file_info(selector)
    return sorted(
        prefix + i.path.lstrip("/") if prefix != "file://" else prefix + i.path
        for i in infos
        if i.type == fs.FileType.File and Path(i.path).suffix.lower() in IMAGE_SUFFIXES
    )


class PartitionFolder:
    """The output folder: complete partitions (`part-*.jsonl` / `part-*.parquet`) and unfinished ones."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.filesystem, self.root = _filesystem(location)

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


def _filesystem(location: str) -> tuple[Any, str]:
    from pyarrow import fs

    if "://" in location:
        return fs.FileSystem.from_uri(location)  # type: ignore[no-any-return]
    return fs.LocalFileSystem(), str(Path(location).resolve())


def _parquet() -> Any:
    import pyarrow.parquet as pq

    return pq


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(f"--cluster needs Ray: {install_hint('ray')}") from None
    return ray


def _connect(ray: Any, address: str) -> None:
    env = {name: os.environ[name] for name in _FORWARDED_ENV if name in os.environ}
    options: dict[str, Any] = {
        "runtime_env": {"env_vars": env},
        "log_to_driver": False,  # workers' TensorFlow/OpenVINO chatter; failures still raise here
        "logging_level": logging.WARNING,
    }
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")  # per-run plans and stats: not for a terminal
    if ray.is_initialized():
        return
    try:
        if address == "local":
            # A Ray of its own on this machine, for this run: "local" starts one even where a file left
            # by an earlier Ray (/tmp/ray/ray_current_cluster) names a cluster, which may be long gone.
            ray.init(address="local", include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        cause = exc.__cause__ or exc  # Ray's own explanation (e.g. a missing auth token) is the cause
        raise ClusterError(
            f"cannot start or reach Ray at {address!r}: {type(cause).__name__}: {cause}".strip()
        ) from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a wrong address: Ray itself retries an unreachable one for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--cluster takes local, auto or HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address}: {exc.strerror or exc}") from None


def _pipeline(ray: Any, job: ClusterJob, todo: list[str], token: str) -> Any:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = job.progress
    # Blocks of a few batches: the unit of retry (a killed worker redoes at most this) and of output.
    blocks = min(math.ceil(len(todo) / (_BATCHES_PER_BLOCK * job.load.batch_size)), _MAX_BLOCKS)
    photos = ray.data.from_items([{"path": p} for p in todo], override_num_blocks=blocks)
    actors, resources = actor_resources(ray.cluster_resources(), job)
    # A whole block per call: the actor's own pipeline overlaps its batches. Ray asks a GPU job for a
    # number: the block's.
    per_call = None if job.load.device == "cpu" else math.ceil(len(todo) / blocks)
    return photos.map_batches(
        _ModelActor,
        fn_constructor_kwargs={"job": job, "token": token},
        batch_size=per_call,
        batch_format="numpy",
        **resources,
        # A fixed pool: Ray's autoscaling pool grows only once work queues up, which on a small cluster
        # left one actor doing all the work. More actors than the cluster has room for would never start.
        compute=ray.data.ActorPoolStrategy(size=actors),
    )


def actor_resources(cluster: dict[str, float], job: ClusterJob) -> tuple[int, dict[str, float]]:
    """How many actors, and what each asks Ray for: one per CPU; on a GPU, one per GPU, with an equal
    share of the CPUs to decode for it."""
    cpus = max(1, int(cluster.get("CPU", 1)))
    if job.load.device == "cpu":
        return min(job.max_actors or cpus, cpus), {"num_cpus": 1}
    gpus = int(cluster.get("GPU", 0))
    if gpus < 1:
        raise ClusterError(f"the job runs on {job.load.device}, and the cluster has no GPU")
    actors = min(job.max_actors or gpus, gpus)
    return actors, {"num_gpus": 1, "num_cpus": max(1, cpus // gpus)}


def _read(location: str) -> str | bytes:
    """A local path is decoded from the file (as the single-machine path does); a URL's bytes are read."""
    if "://" not in location:
        return location
    filesystem, path = _filesystem(location)
    try:
        with filesystem.open_input_file(path) as file:
            if file.size() > MAX_FILE_BYTES:
                raise ImageTooLargeError(f"{location}: {file.size()} bytes, more than {MAX_FILE_BYTES}")
            data: bytes = file.read()
            return data
    except (OSError, FileNotFoundError) as exc:
        raise ImageNotFoundError(f"{location}: cannot read: {exc}") from exc


class _ModelActor:
    """Loads the job's pipeline once per actor, then runs each block of photos through it as the
    single-machine job does (the next batch is decoded in a thread while the engine runs the current one)
    and writes the block's partition."""

    def __init__(self, job: ClusterJob, token: str) -> None:
        runtime: Any = _import_ray().get_runtime_context()
        threads = max(1, int(runtime.get_assigned_resources().get("CPU", 1)))
        self.job, self.token = job, token
        config = replace(job.load_config, threads=threads, workers=threads)
        self.pipeline = check_config(config, progress=False).load()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Classify a block and write its partition; return each photo's path and error (or "")."""
        paths = [str(path) for path in batch["path"]]
        records = list(self._records(paths))
        job = self.job
        if records:  # Ray Data may hand a map an empty block
            _write_partition(job.output, job.partition_format, job.task, self.token, records)
        errors = [record.get("error") or {} for record in records]
        return {
            "path": batch["path"],
            "error_type": np.array([error.get("type", "") for error in errors]),
            "error_message": np.array([error.get("message", "") for error in errors]),
        }

    def _records(self, paths: list[str]) -> Iterator[dict[str, Any]]:
        if isinstance(self.pipeline, Classifier):
            for result in self.pipeline.run(paths, self.job.post, read=_read):
                yield result.to_dict()
            return
        assert isinstance(self.pipeline, FeatureExtractor)
        model = self.pipeline.spec.name
        for path, item, output in self.pipeline.iter_outputs(paths, read=_read):
            error = item if isinstance(item, ErrorInfo) else None
            yield feature_record(path, model, output, error)


def job_token(job: ClusterJob, identity: Identity) -> str:
    """What names a job's temporary files: the same for a rerun of the job, different for another job."""
    key = json.dumps([identity, sorted(job.sources), job.output], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def partition_name(paths: list[str], partition_format: str) -> str:
    """A partition's file name, from the photos it holds: a retried block gets its own name again, and
    different path lists never share one (the list is hashed as JSON: a path may contain a new line)."""
    return f"part-{hashlib.sha256(json.dumps(paths).encode()).hexdigest()[:32]}.{partition_format}"


_UNFINISHED = re.compile(r"\.part-[0-9a-f]{12}-[0-9a-f]{32}-[0-9a-f]+\.(jsonl|parquet)")


def _write_partition(
    output: str, partition_format: str, task: str, token: str, records: list[dict[str, Any]]
) -> None:
    """The block's partition, written under a temporary name nobody can guess (created, never opened if
    it exists: a link planted there is not followed), then renamed into place."""
    filesystem, root = _filesystem(output)
    name = partition_name([r["path"] for r in records], partition_format)
    final = f"{root}/{name}"
    digest = name.removeprefix("part-").split(".")[0]
    unfinished = f"{root}/.part-{token}-{digest}-{secrets.token_hex(8)}.{partition_format}"
    with _new_file(filesystem, unfinished) as stream:
        if partition_format == "jsonl":
            stream.write("".join(json.dumps(r) + "\n" for r in records).encode())
        else:
            _write_parquet(stream, records, task)
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

    schema = arrow_schema(pa, FEATURES) if task == "extract" else arrow_schema(pa)
    pq.write_table(pa.Table.from_pylist(records, schema=schema), stream)
