"""Bundles: a user's own classifier (trained by `imagenet-zoo train`), a model source like the zoo's
families, usable wherever a zoo model is.

A bundle is a folder holding `model.keras` (the whole network: ImageNet base + new head, logits out),
`bundle.json` (class names, the base's preprocessing, the model file's SHA-256) and a confusion-matrix
plot. The engines that build from a graph read the model file without Keras (`models.keras_archive`:
JSON and numeric arrays only, so a layer they do not know, a Lambda's Python among them, is refused);
the Keras engine and `create_model` load it with Keras's safe mode, which refuses a Lambda layer or a
config naming arbitrary modules with `BundleError`, never executing it. How its heatmap is computed
follows from its head, read from the model file's configuration.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.data.labels import ClassLabel
from imagenet_zoo.errors import UsageError, WeightsFormatError
from imagenet_zoo.model_types import NetworkSource, Pooling, RegisteredModel
from imagenet_zoo.models._keras import import_keras
from imagenet_zoo.models.described import pretrained_network
from imagenet_zoo.models.keras_archive import (
    ArchiveLayer,
    ArchiveNetwork,
    chained_model,
    identity_layer,
    read_archive,
    write_archive,
)
from imagenet_zoo.specs import (
    MAX_CLASSES,
    PREPROCESS_MODES,
    DataConfig,
    ExplainMethod,
    ModelSpec,
    PublishedAccuracy,
    Task,
    WeightsFile,
)
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
    folder: Path,
    write_model: Callable[[Path], None],
    *,
    num_params: int,
    classes: list[str],
    base: ModelSpec,
    extra: dict[str, Any],
) -> Path:
    """The bundle's folder: its model file (written by `write_model`), then the manifest naming its hash."""
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / MODEL_FILE
    write_model(model_path)
    manifest = {
        "format": FORMAT,
        "name": folder.resolve().name,
        "base": base.name,
        "classes": classes,
        "data_config": dataclasses.asdict(base.data_config),
        "num_params": num_params,
        "gflops": base.gflops,
        "model_sha256": file_digest(model_path, "sha256"),
        "model_size": model_path.stat().st_size,
        **extra,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return folder


def bundle_writer(base: RegisteredModel, head: list[ArchiveLayer]) -> tuple[Callable[[Path], None], int]:
    """How to write, without Keras, the model file of `base`'s pooled features (its shipped description
    and its weights) followed by `head`; and how many values it learned (what Keras counts as trainable:
    not the batch norms' statistics, nor a neighbour vote's training photos)."""
    network = pretrained_network(base, "features")
    config = network.get_config()
    weights = {layer: network.get_layer(layer).get_weights() for layer, _ in network.variables}
    learned = sum(
        int(np.prod(shape))
        for _, variables in network.variables
        for name, shape in variables
        if name not in ("moving_mean", "moving_variance")
    ) + sum(int(a.size) for layer in head if layer.class_name == "Dense" for a in layer.weights)
    model_config, arrays = chained_model("bundle", config, weights, [identity_layer(FEATURES_LAYER), *head])
    return partial(write_archive, config=model_config, arrays=arrays), learned


def load_bundle(folder: Path, *, name: str | None = None) -> RegisteredModel:
    """A bundle as a model: its spec, a builder that loads it safely, and its file.

    It is reported as `name` (default: the folder's path), never as the manifest's name, which two bundles
    may share with each other or with a zoo model."""
    manifest = read_manifest(folder)
    classes = tuple(ClassLabel(i, label, label) for i, label in enumerate(manifest["classes"]))
    spec = ModelSpec(
        name=name or str(folder),
        family="bundle",
        data_config=DataConfig(**manifest["data_config"]),
        weights=WeightsFile(MODEL_FILE, manifest["model_sha256"], manifest["model_size"]),
        num_params=stored_parameter_count(folder / MODEL_FILE),
        gflops=manifest["gflops"],
        accuracy=PublishedAccuracy(100 * manifest.get("validation", {}).get("accuracy", 0.0)),
        license="the user's own",
        source=str(folder.resolve()),
        labels=classes,
        explain_method=explain_method(folder / MODEL_FILE),
    )
    return RegisteredModel(
        spec, _builder(folder, len(classes)), BundleWeights(folder), _network_source(len(classes))
    )


_LINEAR_LAYERS = {"Dropout", "Identity"}
MAX_CONFIG_BYTES = 16 * 2**20


def explain_method(model_file: Path) -> ExplainMethod:
    """CAM when every layer after the pooled features is linear (dropout, identity, a dense layer without
    activation): the head can then be applied at each position of the feature map. Anything else (the
    neighbour vote) needs Grad-CAM. Read from the model file's configuration, without loading it."""
    layers = _layer_configs(model_file)
    names = [layer.get("config", {}).get("name") for layer in layers]
    if FEATURES_LAYER not in names:
        return "grad-cam"
    head = layers[names.index(FEATURES_LAYER) + 1 :]
    return "cam" if head and all(map(_is_linear, head)) else "grad-cam"


def _is_linear(layer: dict[str, Any]) -> bool:
    kind, config = layer.get("class_name"), layer.get("config", {})
    return kind in _LINEAR_LAYERS or (kind == "Dense" and config.get("activation") in (None, "linear"))


def _layer_configs(model_file: Path) -> list[dict[str, Any]]:
    try:
        with zipfile.ZipFile(model_file) as archive:
            if archive.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
                raise BundleError(f"{model_file}: its configuration is larger than {MAX_CONFIG_BYTES} bytes")
            config = json.loads(archive.read("config.json"))
        layers = config["config"]["layers"]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{model_file} is not a readable Keras model file: {exc}") from exc
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise BundleError(f"{model_file}: its configuration has no list of layers")
    return layers


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_MANIFEST_BYTES = 16 * 2**20
_DATA_CONFIG_KEYS = {field.name for field in dataclasses.fields(DataConfig)}


def read_manifest(folder: Path) -> dict[str, Any]:
    """`bundle.json`, checked field by field before anything in it is used (it is the user's file)."""
    path = folder / MANIFEST
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{folder} is not a readable bundle: {exc}") from exc
    problem = _manifest_problem(manifest)
    if problem:
        raise BundleError(f"{path}: {problem}")
    return manifest  # type: ignore[no-any-return]


MAX_CLASS_NAME = 200  # characters


def _manifest_problem(m: Any) -> str | None:
    """What is wrong with a manifest, or None."""
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        return f"not a {FORMAT} manifest"
    problem = naming_problem(m.get("name"), m.get("classes"))
    if problem:
        return problem
    if not (isinstance(m.get("model_sha256"), str) and _SHA256.fullmatch(m["model_sha256"])):
        return "model_sha256 must be 64 lowercase hex digits"
    if not (_is_int(m.get("model_size")) and m["model_size"] > 0):
        return "model_size must be a positive whole number"
    if not (isinstance(m.get("gflops"), (int, float)) and math.isfinite(m["gflops"]) and m["gflops"] >= 0):
        return "gflops must be a finite number, not negative"
    return _data_config_problem(m.get("data_config"))


def naming_problem(name: Any, classes: Any) -> str | None:
    """What a bundle's loader refuses in its name (its folder's) and class names, or None: `train` asks
    before it trains."""
    if not (isinstance(name, str) and _SAFE_NAME.fullmatch(name)):
        return "name must be a plain file name (letters, digits, '_', '-', '.')"
    if not (isinstance(classes, list) and 1 <= len(classes) <= MAX_CLASSES):
        return f"classes must be a list of 1 to {MAX_CLASSES} names"
    well_formed = all(isinstance(c, str) and 0 < len(c) <= MAX_CLASS_NAME for c in classes)
    if not well_formed or len(set(classes)) != len(classes):
        return f"classes must be distinct names of 1 to {MAX_CLASS_NAME} characters"
    return None


def _data_config_problem(config: Any) -> str | None:
    if not (isinstance(config, dict) and set(config) == _DATA_CONFIG_KEYS):
        return f"data_config must have exactly {sorted(_DATA_CONFIG_KEYS)}"
    if not (_is_int(config["input_size"]) and 32 <= config["input_size"] <= 1024):
        return "data_config.input_size must be a whole number from 32 to 1024"
    if config["mode"] not in PREPROCESS_MODES:
        return f"data_config.mode must be one of {sorted(PREPROCESS_MODES)}"
    if config["interpolation"] not in ("nearest", "bilinear", "bicubic"):
        return "data_config.interpolation must be nearest, bilinear or bicubic"
    if not (isinstance(config["crop_pct"], (int, float)) and 0.5 <= config["crop_pct"] <= 1.0):
        return "data_config.crop_pct must be from 0.5 to 1"  # a tiny one asked for giant resizes
    if config["resize_mode"] not in ("crop", "squash"):
        return "data_config.resize_mode must be crop or squash"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def stored_parameter_count(model_file: Path) -> int:
    """How many weight values the model file stores (from the shapes in its weights, not from the
    manifest): what the server's memory budget counts."""
    import h5py

    sizes: list[int] = []

    def count(_name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            sizes.append(item.size)

    try:
        with (
            zipfile.ZipFile(model_file) as archive,
            archive.open("model.weights.h5") as weights,
            h5py.File(weights, "r") as h5,
        ):
            h5.visititems(count)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{model_file} is not a readable Keras model file: {exc}") from exc
    return int(sum(sizes))


def _builder(folder: Path, classes: int) -> Any:
    def build(
        *, weights: Path | None, include_top: bool, pooling: Pooling, input_shape: tuple[int, int, int] | None
    ) -> Any:
        model = load_keras_safely(folder / MODEL_FILE)
        if model.output_shape[-1] != classes:
            raise BundleError(
                f"{folder}: the model has {model.output_shape[-1]} outputs for {classes} classes"
            )
        if include_top:
            return model
        keras = import_keras()
        return keras.Model(model.inputs, model.get_layer(FEATURES_LAYER).output)

    return build


def _network_source(classes: int) -> NetworkSource:
    """The bundle's network read from its file without Keras (`models.keras_archive`), for the engines
    that build from a graph: the whole network, or up to its pooled features."""

    def network(spec: ModelSpec, weights: Path | None, task: Task) -> ArchiveNetwork:
        if weights is None:
            raise UsageError(f"{spec.name} is a bundle: its weights are its own, never random")
        if _output_count(_layer_configs(weights)) != classes:
            raise BundleError(f"{weights}: the model's outputs are not its {classes} classes")
        return read_archive(weights, outputs=FEATURES_LAYER if task == "features" else None)

    return network


def _output_count(layers: list[dict[str, Any]]) -> int | None:
    """How many outputs the last layer makes: a Dense layer's units, the neighbour vote's classes."""
    config = layers[-1].get("config", {}) if layers else {}
    count = config.get("units", config.get("classes"))
    return count if _is_int(count) else None


def load_keras_safely(path: Path, *, compile: bool = False) -> Any:
    keras = import_keras()
    import imagenet_zoo.models.neighbour_vote  # noqa: F401  (registers the neighbours head's layer, our code)

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
