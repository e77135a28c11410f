"""The reference engine: the Keras model on the TensorFlow backend."""

from __future__ import annotations

from typing import Any

import numpy as np


class KerasEngine:
    name = "keras"

    def __init__(self, model: Any) -> None:
        self._model = model

    def infer(self, batch: np.ndarray) -> np.ndarray:
        # predict_on_batch runs the compiled graph without `predict`'s progress bar and dataset set-up.
        return np.asarray(self._model.predict_on_batch(batch), dtype=np.float32)

    def infer_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of a model with several (a CAM model: logits and class maps)."""
        return [np.asarray(out, dtype=np.float32) for out in self._model.predict_on_batch(batch)]
