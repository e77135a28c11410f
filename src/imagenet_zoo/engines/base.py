"""The engine contract shared by every backend (and by the fake engine that tests use)."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Engine(Protocol):
    """Runs a model: a batch of photos as the model's input pixels (uint8 NHWC RGB, resized and cropped as
    its `DataConfig` says: `data.preprocess.model_input`) to float32 logits (N, classes). The engine
    scales the pixels as the model's weights expect (`data.preprocess.normalization`), inside its graph
    where it has one, so no caller makes a float32 copy of a photo."""

    name: str

    def infer(self, batch: np.ndarray) -> np.ndarray: ...


def pixel_batch(batch: np.ndarray) -> np.ndarray:
    """`batch` as the contiguous uint8 array an engine takes; a TypeError for any other dtype (floats
    already scaled, scaled again, would give wrong answers without a word)."""
    if batch.dtype != np.uint8:
        raise TypeError(f"an engine takes uint8 pixels, not {batch.dtype}: see imagenet_zoo.engines.base")
    return np.ascontiguousarray(batch)
