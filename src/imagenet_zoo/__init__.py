"""imagenet-zoo: classify photos with ImageNet-pretrained CNNs.

>>> import imagenet_zoo
>>> imagenet_zoo.load("resnet50").classify("cat.jpg", top=5).top.label
"""

from imagenet_zoo.api import DEFAULT_MODEL, create_model, load
from imagenet_zoo.classifier import Classification, Classifier, Prediction
from imagenet_zoo.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImagenetZooError,
    ImageNotFoundError,
    ImageTooLargeError,
    UnknownModelError,
    UnsupportedImageError,
    UsageError,
    WeightsError,
    WeightsFormatError,
    WeightsIntegrityError,
    WeightsUnavailableError,
)
from imagenet_zoo.images import InputInfo, decode_image
from imagenet_zoo.labels import ClassLabel, imagenet1k
from imagenet_zoo.preprocess import preprocess
from imagenet_zoo.registry import get_model_spec, list_models
from imagenet_zoo.specs import DataConfig, ModelSpec, WeightsFile

__all__ = [
    "DEFAULT_MODEL",
    "ClassLabel",
    "Classification",
    "Classifier",
    "CorruptImageError",
    "DataConfig",
    "EmptyImageError",
    "ImageError",
    "ImageNotFoundError",
    "ImageTooLargeError",
    "ImagenetZooError",
    "InputInfo",
    "ModelSpec",
    "Prediction",
    "UnknownModelError",
    "UnsupportedImageError",
    "UsageError",
    "WeightsError",
    "WeightsFile",
    "WeightsFormatError",
    "WeightsIntegrityError",
    "WeightsUnavailableError",
    "create_model",
    "decode_image",
    "get_model_spec",
    "imagenet1k",
    "list_models",
    "load",
    "preprocess",
]
