"""What a job on a Ray cluster is asked, and Ray itself, imported only when a job runs there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagenet_zoo.errors import UsageError, install_hint
from imagenet_zoo.jobs.job import JobOptions

PARTITION_FORMATS = ("jsonl", "parquet")


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


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(f"--cluster needs Ray: {install_hint('ray')}") from None
    return ray
