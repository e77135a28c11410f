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

This module is the driver; `job` is what the job is asked, `sources` lists and reads photos and URLs,
`actor` is the model actors, `partitions` the output folder, `watchdog` stops a job that stalls. Ray is
optional (`pip install 'imagenet-zoo[ray]'`): only this package imports it, only `--cluster` uses it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import replace
from typing import Any

from imagenet_zoo.errors import ClusterError, PartitionWriteError, UsageError
from imagenet_zoo.jobs.cluster.actor import ModelActor, actor_resources
from imagenet_zoo.jobs.cluster.job import PARTITION_FORMATS, ClusterJob, import_ray
from imagenet_zoo.jobs.cluster.partitions import PartitionFolder, job_token, partition_name
from imagenet_zoo.jobs.cluster.sources import list_sources
from imagenet_zoo.jobs.cluster.watchdog import watched
from imagenet_zoo.jobs.job import JobReport
from imagenet_zoo.records import ErrorInfo, parquet_text

__all__ = [
    "ClusterJob",
    "PartitionFolder",
    "actor_resources",
    "job_token",
    "partition_name",
    "run_cluster_job",
]

_BATCHES_PER_BLOCK = 8
_MAX_BLOCKS = 10_000
_FORWARDED_ENV = ("IMAGENET_ZOO_HOME", "IMAGENET_ZOO_MIRROR")  # where workers find weights and IR


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
    # Parquet partitions hold a name that is not UTF-8 escaped (`records.parquet_text`): both sides are.
    done = {parquet_text(path) for path in output.paths()}
    todo = [s for s in sources if parquet_text(s) not in done]
    ray = import_ray()
    _connect(ray, job.address)
    if not todo:
        return JobReport(len(sources), len(sources), 0)
    dataset = _pipeline(ray, job, todo, token)
    try:
        written, failures = watched(lambda: _collect(dataset), output, job, todo)
    except PartitionWriteError as exc:
        safe = len(output.paths())
        raise PartitionWriteError(
            f"{exc}; {safe:,} photos are safe in {job.output}: rerun the same command to continue"
        ) from None
    failures.sort(key=lambda failure: failure[0])
    return JobReport(
        len(sources), len(sources) - len(todo), written, failures, choice=job_plan.load_plan.choice
    )


def _collect(dataset: Any) -> tuple[int, list[tuple[str, ErrorInfo]]]:
    """Run the job to its end: the actors write the partitions; what comes back is one row per photo,
    its path and, if it failed, its error's type and message. A block whose partition could not be
    written stops the job (`PartitionWriteError`)."""
    written, failures = 0, []
    for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        if len(block["unwritten"]) and block["unwritten"][0]:
            raise PartitionWriteError(str(block["unwritten"][0]))
        written += len(block["path"])
        rows = zip(block["path"], block["error_type"], block["error_message"], strict=True)
        failures += [
            (os.fsdecode(path), ErrorInfo(str(kind), str(message))) for path, kind, message in rows if kind
        ]
    return written, failures


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
    # Paths travel as bytes: Arrow's text is UTF-8, which a name from a Latin-1 system is not.
    photos = ray.data.from_items([{"path": os.fsencode(p)} for p in todo], override_num_blocks=blocks)
    actors, resources = actor_resources(ray.cluster_resources(), job)
    # A whole block per call: the actor's own pipeline overlaps its batches. Ray asks a GPU job for a
    # number: the block's.
    per_call = None if job.load.device == "cpu" else math.ceil(len(todo) / blocks)
    return photos.map_batches(
        ModelActor,
        fn_constructor_kwargs={"job": job, "token": token},
        batch_size=per_call,
        batch_format="numpy",
        **resources,
        # A fixed pool: Ray's autoscaling pool grows only once work queues up, which on a small cluster
        # left one actor doing all the work. More actors than the cluster has room for would never start.
        compute=ray.data.ActorPoolStrategy(size=actors),
    )
