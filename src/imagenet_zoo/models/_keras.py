"""Importing Keras: pinned to the TensorFlow backend and imported only when a model is really built."""

from __future__ import annotations

import os
from typing import Any


def import_keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # TensorFlow's C++ start-up chatter (CPU feature notices) is noise on a command line.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras
