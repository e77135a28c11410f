"""The engine contract shared by every backend (and by the fake engine that tests use)."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Engine(Protocol):
    """Runs a model: float32 NHWC inputs, already preprocessed, to float32 logits (N, classes)."""

    name: str

    def infer(self, batch: np.ndarray) -> np.ndarray: ...
