"""The model actors of a job on a cluster: each loads the job's pipeline once and runs blocks of photos
through it as the single-machine job does, writing each block's partition."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from imagenet_zoo.api import check_config
from imagenet_zoo.classifier import Classifier, FeatureExtractor
from imagenet_zoo.errors import ClusterError, PartitionWriteError
from imagenet_zoo.jobs.cluster.job import ClusterJob, import_ray
from imagenet_zoo.jobs.cluster.partitions import write_partition
from imagenet_zoo.jobs.cluster.sources import read_source
from imagenet_zoo.records import feature_record


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


class ModelActor:
    """Loads the job's pipeline once per actor, then runs each block of photos through it as the
    single-machine job does (the next batch is decoded in a thread while the engine runs the current one)
    and writes the block's partition."""

    def __init__(self, job: ClusterJob, token: str) -> None:
        runtime: Any = import_ray().get_runtime_context()
        threads = max(1, int(runtime.get_assigned_resources().get("CPU", 1)))
        self.job, self.token = job, token
        config = replace(job.load_config, threads=threads, workers=threads)
        self.pipeline = check_config(config, progress=False).load()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Classify a block and write its partition; return each photo's path and error (or ""), and
        why the partition could not be written (or ""). That comes back as data, not raised: Ray hands
        the driver an actor's exception as text."""
        paths = [os.fsdecode(path) for path in batch["path"]]
        records = list(self._records(paths))
        job, unwritten = self.job, ""
        try:
            if records:  # Ray Data may hand a map an empty block
                write_partition(job.output, job.partition_format, job.task, self.token, records)
        except PartitionWriteError as exc:
            unwritten = str(exc)
        errors = [record.get("error") or {} for record in records]
        return {
            "path": batch["path"],
            "error_type": np.array([error.get("type", "") for error in errors]),
            "error_message": np.array([error.get("message", "") for error in errors]),
            "unwritten": np.array([unwritten] * len(records)),
        }

    def _records(self, paths: list[str]) -> Iterator[dict[str, Any]]:
        if isinstance(self.pipeline, Classifier):
            for result in self.pipeline.run(paths, self.job.post, read=read_source):
                yield result.to_dict()
            return
        assert isinstance(self.pipeline, FeatureExtractor)
        model = self.pipeline.spec.name
        for path, features, error in self.pipeline.run(paths, read=read_source):
            yield feature_record(path, model, features, error)
