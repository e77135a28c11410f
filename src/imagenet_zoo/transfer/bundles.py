"""Bundles: a user's own classifier (trained by `imagenet-zoo train`), usable wherever a zoo model is.

A bundle is a folder holding `model.keras` (the whole network: ImageNet base + new head, logits out),
`bundle.json` (class names, the base's preprocessing, the model file's SHA-256) and a confusion-matrix
plot. It is loaded with Keras's safe mode: a model with a Lambda layer (arbitrary Python) or a config
naming arbitrary modules is refused with `BundleError`, never executed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from imagenet_zoo.data.labels import ClassLabel
from imagenet_zoo.errors import UsageError, WeightsFormatError
from imagenet_zoo.model_types import Pooling, RegisteredModel
from imagenet_zoo.models._keras import import_keras
from imagenet_zoo.specs import Accuracy, DataConfig, ModelSpec, WeightsFile
from imagenet_zoo.weights.download import file_digest
from imagenet_zoo.weights.store import verify_packaged_file

FORMAT = "imagenet-zoo-bundle/1"
MANIFEST = "bundle.json"
MODEL_FILE = "model.keras"
FEATURES_LAYER = "features"  # the pooled base output inside the bundled model


class BundleError(WeightsFormatError):
    """A bundle that is incomplete, of another format, or asks to run code."""


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def save_bundle(
    folder: Path, model: Any, *, classes: list[str], base: ModelSpec, extra: dict[str, Any]
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / MODEL_FILE
    model.save(model_path)
    manifest = {
        "format": FORMAT,
        "name": folder.resolve().name,
        "base": base.name,
        "classes": classes,
        "data_config": dataclasses.asdict(base.data_config),
        "num_params": int(sum(int(w.numpy().size) for w in model.trainable_weights)),
        "gflops": base.gflops,
        "model_sha256": file_digest(model_path, "sha256"),
        "model_size": model_path.stat().st_size,
        **extra,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return folder


def load_bundle(folder: Path, *, name: str | None = None) -> RegisteredModel:
    """A bundle as a model: its spec, a builder that loads it safely, and its file.

    It is reported as `name` (default: the folder's path), never as the manifest's name, which two bundles
    may share with each other or with a zoo model."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{folder} is not a readable bundle: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{folder}: unknown bundle format {manifest.get('format')!r}")
    classes = tuple(ClassLabel(i, label, label) for i, label in enumerate(manifest["classes"]))
    spec = ModelSpec(
        name=name or str(folder),
        family="bundle",
        data_config=DataConfig(**manifest["data_config"]),
        weights=WeightsFile(MODEL_FILE, manifest["model_sha256"], manifest["model_size"]),
        num_params=manifest["num_params"],
        gflops=manifest["gflops"],
        accuracy=Accuracy(100 * manifest.get("validation", {}).get("accuracy", 0.0)),
        license="the user's own",
        source=str(folder.resolve()),
        labels=classes,
    )
    return RegisteredModel(spec, _builder(folder), BundleWeights(folder))


def _builder(folder: Path) -> Any:
    def build(
        *, weights: Path | None, include_top: bool, pooling: Pooling, input_shape: tuple[int, int, int] | None
    ) -> Any:
        model = load_keras_safely(folder / MODEL_FILE)
        if include_top:
            return model
        keras = import_keras()
        return keras.Model(model.inputs, model.get_layer(FEATURES_LAYER).output)

    return build


def load_keras_safely(path: Path, *, compile: bool = False) -> Any:
    keras = import_keras()
    import imagenet_zoo.transfer.heads  # noqa: F401  (registers the neighbours head's layer, our code, not the file's)

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=compile)
    except Exception as exc:  # Keras raises assorted types for refused or broken configs
        raise BundleError(
            f"refused to load {path}: {exc}. Bundles may hold only standard Keras layers and imagenet-zoo's "
            "own; a Lambda layer or any other class would run code from the file"
        ) from exc


class BundleWeights:
    """The bundle's model file is its weights: present by definition, hash-checked against the manifest."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def path(self, spec: ModelSpec, *, include_top: bool = True) -> Path:
        return self._folder / MODEL_FILE

    def is_present(self, spec: ModelSpec, *, include_top: bool = True) -> bool:
        return self.path(spec).is_file()

    def fetch(self, spec: ModelSpec, *, include_top: bool = True, progress: bool = True) -> Path:
        return self.verify(spec)

    def verify(self, spec: ModelSpec, *, include_top: bool = True) -> Path:
        path = self.path(spec)
        verify_packaged_file(path, spec.weights)  # a changed model file no longer matches its manifest
        return path

    def import_file(self, spec: ModelSpec, file: Path, *, include_top: bool = True) -> Path:
        raise UsageError("a bundle is a folder: pass its path as the model instead of importing a file")
