"""Read the official Keras weights files (the legacy HDF5 layout Keras 2 wrote, which `keras.applications`
still publishes) into numpy arrays, without Keras.

The root lists its layers in the attribute `layer_names`; each layer's group lists its arrays, in the order
`get_weights()` gives them, in `weight_names` (`conv1_conv/kernel:0`, ...). The layers with weights are
given in the file's order: Keras matches them to a network's layers by position, not by name (a layer
Keras named itself, `conv2d_7`, is named after how many were made before it). Only numeric datasets are
read (h5py never unpickles), and a file that is not laid out so is refused with `WeightsFormatError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.errors import WeightsFormatError


def read_legacy_h5(path: Path) -> list[tuple[str, list[np.ndarray]]]:
    """Each layer with weights in the file, in its order: (its name there, its arrays)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
            layers = [(_text(name), _arrays(root[_text(name)])) for name in root.attrs["layer_names"]]
            return [(name, arrays) for name, arrays in layers if arrays]
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise WeightsFormatError(f"{path} is not a Keras weights file in the HDF5 layout: {exc}") from None


def _arrays(group: Any) -> list[np.ndarray]:
    arrays = []
    for name in group.attrs["weight_names"]:
        dataset = group[_text(name)]
        if dataset.dtype.kind != "f":
            raise ValueError(f"{dataset.name} holds {dataset.dtype}, not floating-point numbers")
        arrays.append(np.asarray(dataset[()], dtype=np.float32))
    return arrays


def _text(name: bytes | str) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else name
