"""Rewrite the stored EfficientNet-Lite0 reference probabilities from the (tested) Keras engine."""

from pathlib import Path

import numpy as np

from imagenet_zoo.registry import default_registry
from imagenet_zoo.selftest import LITE0_REFERENCE, probabilities

if __name__ == "__main__":
    registry = default_registry()
    reference = probabilities(registry.get("efficientnet_lite0"), "keras", "fp32")
    np.savez_compressed(Path(__file__).with_name(LITE0_REFERENCE), probabilities=reference)
    print(reference.argmax(axis=1))
