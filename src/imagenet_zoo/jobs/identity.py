"""What a job's results were made with: the settings that change its answers (the model and a digest of
its weights, the load options marked as changing answers, the top-k, groups and heatmaps).

They are recorded beside a results file (`FILE.job.json`) and in a cluster's output folder (`_job.json`).
A resume or a rerun with other settings is a usage error that names each difference, so one output never
holds two jobs' answers.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

from imagenet_zoo.data.hierarchy import wordnet
from imagenet_zoo.errors import UsageError
from imagenet_zoo.explain import class_index_of
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.pipeline import LoadConfig, PostOptions
from imagenet_zoo.specs import Task

Identity = dict[str, Any]  # JSON values only
IDENTITY_FILE = "_job.json"  # in a cluster's output folder (readers of partitioned data skip `_` files)
MAX_IDENTITY_BYTES = 1 << 20

# The load options whose values change a job's answers (`pipeline.load_option(answers=True)`).
ANSWERING = tuple(option.name for option in fields(LoadConfig) if option.metadata.get("answers"))
_OPTION = {
    "task": "the command",
    "model": "--model",
    "weights": "the model's weights (SHA-256 or MD5)",
    **{name: f"--{name.replace('_', '-')}" for name in ANSWERING},
    "top": "--top",
    "groups": "--groups",
    "top_groups": "--top-groups and --group-depth",
    "explain": "--explain",
    "explain_class": "--explain-class",
}


def job_identity(task: Task, load: LoadConfig, model: RegisteredModel, post: PostOptions | None) -> Identity:
    """The settings of a job that change what it writes, `load` as checked (`post`: a classify job's
    post-processing)."""
    spec = model.spec
    identity: Identity = {"task": task, "model": spec.name, "weights": spec.weights.hash}
    identity |= {name: getattr(load, name) for name in ANSWERING}
    if post is not None:
        identity |= {
            "top": min(post.top, spec.num_classes),
            "groups": [wordnet().group(word).id for word in post.groups],
            "top_groups": list(post.top_groups) if post.top_groups else None,
            "explain": post.explains,
            "explain_class": None
            if post.explain_class is None
            else class_index_of(spec.labels, post.explain_class),
        }
    return identity


def check_identity(recorded: Identity | None, current: Identity, *, where: str) -> None:
    """Refuse to add to `where` (a file or folder holding results) unless it was written with `current`."""
    if recorded is None:
        raise UsageError(
            f"{where} holds results but no record of the settings that wrote them, so this run could mix "
            "its answers with another job's: write to another --output"
        )
    if recorded.get("task") == "extract":  # what earlier versions recorded for the features task
        recorded = {**recorded, "task": "features"}
    differences = [
        f"{_OPTION.get(key, key)} was {recorded.get(key)!r}, now {value!r}"
        for key, value in current.items()
        if recorded.get(key) != value
    ]
    if differences:
        raise UsageError(
            f"{where} holds results of other settings ({'; '.join(differences)}): rerun with the same "
            "settings to add to it, or write to another --output"
        )


def identity_file(results: Path) -> Path:
    """Where a results file's settings are recorded: beside it."""
    return results.with_name(results.name + ".job.json")


def read_identity(results: Path) -> Identity | None:
    """A results file's recorded settings, or None where none are recorded."""
    return parse_identity(_read(identity_file(results)), where=str(identity_file(results)))


def _read(path: Path) -> bytes | None:
    try:
        with path.open("rb") as f:
            return f.read(MAX_IDENTITY_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def parse_identity(data: bytes | None, *, where: str) -> Identity | None:
    if data is None:
        return None
    try:
        identity = json.loads(data) if len(data) <= MAX_IDENTITY_BYTES else None
    except ValueError:
        identity = None
    if not isinstance(identity, dict):
        raise UsageError(f"{where} is not a record of a job's settings: move it away, or write elsewhere")
    return identity


def encode_identity(identity: Identity) -> bytes:
    return json.dumps(identity, indent=2).encode()


def write_identity(results: Path, identity: Identity) -> None:
    """Record `identity` beside `results` (through a temporary file: never half written)."""
    target = identity_file(results)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(encode_identity(identity))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
