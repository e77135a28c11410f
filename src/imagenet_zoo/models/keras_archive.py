"""A Keras 3 model file (`.keras`: a zip of `config.json` and `model.weights.h5`) read as what
`engines.graph.translate` reads of a `keras.Model`, without Keras: how the engines build a bundle.

Only JSON and numeric HDF5 datasets are read (nothing is deserialized into objects, so nothing in the
file can run code), within bounds: the configuration's size, and the number of weight values. Keras
stores a layer's arrays under a path named after the layer's class, not its name (`layers/conv2d_3/vars/0`:
the fourth Conv2D of its model, counted in the order the configuration lists the layers, a nested model's
inside its own `layers/`); `_weight_paths` follows that rule (`keras.src.saving.saving_lib`).
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.errors import WeightsFormatError

MAX_CONFIG_BYTES = 16 * 2**20
MAX_WEIGHT_VALUES = 2**28  # 1 GB of float32: VGG19, the zoo's largest, holds 144 M
_NESTED = ("Functional", "Model", "Sequential")


class KerasArchiveError(WeightsFormatError):
    """A `.keras` file that cannot be read as a network of plain layers."""


def read_archive(path: Path, *, outputs: str | None = None) -> ArchiveNetwork:
    """The network in a `.keras` file, its weights read now; with `outputs`, the network cut after that
    layer (the configuration's layers up to it, and it the only output)."""
    import h5py

    try:
        with zipfile.ZipFile(path) as archive:
            if archive.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
                raise KerasArchiveError(f"{path}: its configuration is larger than {MAX_CONFIG_BYTES} bytes")
            config = json.loads(archive.read("config.json"))["config"]
            if outputs is not None:
                config = _cut_after(config, outputs)
            paths = _weight_paths(config, "")
            with archive.open("model.weights.h5") as packed, h5py.File(packed, "r") as weights:
                arrays = _read_arrays(weights, paths)
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as exc:
        raise KerasArchiveError(f"{path} is not a readable Keras model file: {exc!r}") from None
    return ArchiveNetwork(config, arrays, prefix="")


def _cut_after(config: dict[str, Any], layer: str) -> dict[str, Any]:
    names = [_name(entry) for entry in config["layers"]]
    kept = config["layers"][: names.index(layer) + 1]
    return {**config, "layers": kept, "output_layers": [[layer, 0, 0]]}


def to_snake_case(name: str) -> str:
    """Keras's `naming.to_snake_case`: `Conv2D` -> conv2d, `ReLU` -> re_lu."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _weight_paths(config: dict[str, Any], prefix: str) -> dict[str, str]:
    """Where each layer's arrays are in the weights file, by the layer's path of names (`base/conv1`)."""
    paths: dict[str, str] = {}
    used: dict[str, int] = {}
    for entry in config["layers"]:
        kind = to_snake_case(str(entry["class_name"]))
        used[kind] = used.get(kind, -1) + 1
        where = f"{prefix}layers/{kind}" + (f"_{used[kind]}" if used[kind] else "")
        name = _name(entry)
        if entry["class_name"] in _NESTED:
            nested = _weight_paths(entry["config"], where + "/")
            paths.update({f"{name}/{inner}": path for inner, path in nested.items()})
        else:
            paths[name] = where
    return paths


def _name(entry: dict[str, Any]) -> str:
    """A layer's name in its model's configuration (a Sequential's layers name themselves in `config`)."""
    return str(entry.get("name") or entry["config"]["name"])


def _read_arrays(weights: Any, paths: dict[str, str]) -> dict[str, list[np.ndarray]]:
    arrays: dict[str, list[np.ndarray]] = {}
    total = 0
    for layer, path in paths.items():
        variables = weights.get(f"{path}/vars")
        datasets = [] if variables is None else [variables[str(i)] for i in range(len(variables))]
        for dataset in datasets:
            total += int(dataset.size)
            if dataset.dtype.kind != "f" or total > MAX_WEIGHT_VALUES:
                raise ValueError(f"{dataset.name}: {dataset.dtype}, or past {MAX_WEIGHT_VALUES} values")
        arrays[layer] = [np.asarray(dataset[()], dtype=np.float32) for dataset in datasets]
    return arrays


@dataclass(frozen=True)
class _ArchiveLayer:
    weights: list[np.ndarray]

    def get_weights(self) -> list[np.ndarray]:
        return self.weights


class ArchiveNetwork:
    """A model of the file (or a model nested in it): its configuration, and its layers' arrays by the
    path of names from the file's model (`prefix` names this one's)."""

    def __init__(self, config: dict[str, Any], arrays: dict[str, list[np.ndarray]], prefix: str) -> None:
        self._config, self._arrays, self._prefix = config, arrays, prefix
        self.name = str(config.get("name", "model"))
        self._entries = {_name(entry): entry for entry in config["layers"]}
        inputs = [entry for entry in config["layers"] if entry["class_name"] == "InputLayer"]
        self.input_shape = tuple(inputs[0]["config"]["batch_shape"]) if inputs else None

    def get_config(self) -> dict[str, Any]:
        return self._config

    def get_layer(self, name: str) -> ArchiveNetwork | _ArchiveLayer:
        entry = self._entries[name]
        path = f"{self._prefix}{name}"
        if entry["class_name"] in _NESTED:
            return ArchiveNetwork(entry["config"], self._arrays, prefix=path + "/")
        return _ArchiveLayer(self._arrays.get(path, []))


# The Keras whose file layout `write_archive` writes (and whose configurations `models/networks/` hold).
WRITTEN_AS_KERAS = "3.15.1"
FLOAT32_POLICY = {
    "module": "keras",
    "class_name": "DTypePolicy",
    "config": {"name": "float32"},
    "registered_name": None,
}


@dataclass(frozen=True)
class ArchiveLayer:
    """One layer of a model file to write: its Keras class and configuration, and its arrays in the order
    `get_weights()` gives them."""

    class_name: str
    config: dict[str, Any]
    weights: list[np.ndarray]
    module: str = "keras.layers"
    registered_name: str | None = None
    build_config: dict[str, Any] | None = None
    call_kwargs: dict[str, Any] | None = None


def identity_layer(name: str) -> ArchiveLayer:
    return ArchiveLayer("Identity", {"name": name, "trainable": True, "dtype": FLOAT32_POLICY}, [])


def dropout_layer(name: str, rate: float) -> ArchiveLayer:
    config = {
        "name": name,
        "trainable": True,
        "dtype": FLOAT32_POLICY,
        "rate": rate,
        "seed": None,
        "noise_shape": None,
    }
    return ArchiveLayer("Dropout", config, [], call_kwargs={"training": False})


def dense_layer(name: str, kernel: np.ndarray, bias: np.ndarray) -> ArchiveLayer:
    config = {
        "name": name,
        "trainable": True,
        "dtype": FLOAT32_POLICY,
        "units": int(kernel.shape[1]),
        "activation": "linear",
        "use_bias": True,
        "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                               "config": {"seed": None}, "registered_name": None},
        "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros", "config": {},
                             "registered_name": None},
        "kernel_regularizer": None,
        "bias_regularizer": None,
        "kernel_constraint": None,
        "bias_constraint": None,
    }  # fmt: skip
    build = {"input_shape": [None, int(kernel.shape[0])]}
    return ArchiveLayer("Dense", config, [kernel, bias], build_config=build)


def chained_model(
    name: str, base: dict[str, Any], base_weights: dict[str, list[np.ndarray]], head: list[ArchiveLayer]
) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """A functional model as Keras saves it: an input, `base` (a functional model's configuration, whose
    arrays are `base_weights` by layer name) called on it, then each layer of `head` on the one before;
    and its arrays by path of names."""
    inputs = [entry for entry in base["layers"] if entry["class_name"] == "InputLayer"]
    shape = inputs[0]["config"]["batch_shape"]
    pixels = {"batch_shape": shape, "dtype": "float32", "sparse": False, "ragged": False, "name": "pixels",
              "optional": False}  # fmt: skip
    layers: list[dict[str, Any]] = [
        {"module": "keras.layers", "class_name": "InputLayer", "config": pixels, "registered_name": None,
         "name": "pixels", "inbound_nodes": []},
        {"module": "keras.src.models.functional", "class_name": "Functional", "config": base,
         "registered_name": "Functional", "build_config": {"input_shape": None}, "compile_config": {},
         "name": base["name"], "inbound_nodes": [_call("pixels", shape, {"mask": None})]},
    ]  # fmt: skip
    arrays = {f"{base['name']}/{layer}": values for layer, values in base_weights.items()}
    before = str(base["name"])
    for layer in head:
        entry: dict[str, Any] = {"module": layer.module, "class_name": layer.class_name,
                                 "config": layer.config,
                                 "registered_name": layer.registered_name}  # fmt: skip
        if layer.build_config is not None:
            entry["build_config"] = layer.build_config
        call = _call(before, [None, _width(head)], layer.call_kwargs)
        entry |= {"name": layer.config["name"], "inbound_nodes": [call]}
        layers.append(entry)
        arrays[layer.config["name"]] = layer.weights
        before = layer.config["name"]
    config = {"name": name, "trainable": True, "layers": layers, "input_layers": ["pixels", 0, 0],
              "output_layers": [before, 0, 0]}  # fmt: skip
    return config, arrays


def _width(head: list[ArchiveLayer]) -> int | None:
    """How many values each row of the head's input holds (as the first layer that knows says): every
    layer of a head on pooled features keeps it until the last."""
    for sized in head:
        build = sized.build_config or {}
        if "input_shape" in build:
            return int(build["input_shape"][-1])
        if sized.weights:
            return int(sized.weights[0].shape[-1])
    return None


def _call(source: str, shape: list[int | None], kwargs: dict[str, Any] | None) -> dict[str, Any]:
    tensor = {"class_name": "__keras_tensor__",
              "config": {"shape": shape, "dtype": "float32", "keras_history": [source, 0, 0]}}  # fmt: skip
    return {"args": [tensor], "kwargs": kwargs or {}}


def write_archive(path: Path, config: dict[str, Any], arrays: dict[str, list[np.ndarray]]) -> None:
    """A `.keras` file, as Keras writes it, of a functional model's configuration and its arrays by path
    of names (`base/conv1`): Keras loads it (safe mode), and so does `read_archive`."""
    import io

    import h5py

    saved = {"module": "keras.src.models.functional", "class_name": "Functional", "config": config,
             "registered_name": "Functional", "build_config": {"input_shape": None},
             "compile_config": {}}  # fmt: skip
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as weights:
        weights.create_group("vars").attrs["name"] = config["name"]
        for layer, where in _weight_paths(config, "").items():
            group = weights.require_group(f"{where}/vars")
            group.attrs["name"] = layer.rsplit("/", 1)[-1]
            for i, value in enumerate(arrays.get(layer, [])):
                group.create_dataset(str(i), data=np.asarray(value, dtype=np.float32))
    metadata = {"keras_version": WRITTEN_AS_KERAS, "date_saved": "by imagenet-zoo"}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(saved))
        archive.writestr("model.weights.h5", buffer.getvalue())
