"""imagenet-zoo: classify photos with ImageNet-pretrained CNNs.

>>> import imagenet_zoo
>>> imagenet_zoo.load("resnet50").classify("cat.jpg", top=5).top.label

The public API is what this module exports (`__all__`); everything else is internal. Importing it loads
neither Keras nor OpenVINO, nor the jobs, transfer learning or the server.
"""

from importlib.metadata import PackageNotFoundError, version

from imagenet_zoo.api import (
    create_model,
    extract_features,
    load,
    load_engine,
    load_pipeline,
    resolve_data_config,
    resolve_model,
)
from imagenet_zoo.classifier import Classifier, FeatureExtractor, FeatureSet, decode_predictions
from imagenet_zoo.data.hierarchy import GroupScore, Hierarchy, Synset, wordnet
from imagenet_zoo.data.images import InputInfo, decode_image
from imagenet_zoo.data.labels import ClassLabel, imagenet1k
from imagenet_zoo.data.preprocess import Transform, create_transform, preprocess
from imagenet_zoo.engines.base import Engine
from imagenet_zoo.engines.registry import EngineRequest, EngineSpec, engine_registry, register_engine
from imagenet_zoo.errors import (
    CorruptImageError,
    EmptyImageError,
    ExplanationUnsupportedError,
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
from imagenet_zoo.explain import Explanation, draw_heatmap
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.pipeline import LoadConfig, Pipeline, PostOptions
from imagenet_zoo.records import Classification, ErrorInfo, Prediction
from imagenet_zoo.registry import DEFAULT_MODEL, Registry, get_model_spec, list_models
from imagenet_zoo.specs import DataConfig, ModelSpec, WeightsFile

try:
    __version__ = version("imagenet-zoo")
except PackageNotFoundError:  # a source tree on sys.path without being installed
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_MODEL",
    "ClassLabel",
    "Classification",
    "Classifier",
    "CorruptImageError",
    "DataConfig",
    "EmptyImageError",
    "Engine",
    "EngineRequest",
    "EngineSpec",
    "ErrorInfo",
    "Explanation",
    "ExplanationUnsupportedError",
    "FeatureExtractor",
    "FeatureSet",
    "GroupScore",
    "Hierarchy",
    "ImageError",
    "ImageNotFoundError",
    "ImageTooLargeError",
    "ImagenetZooError",
    "InputInfo",
    "LoadConfig",
    "ModelSpec",
    "Pipeline",
    "PostOptions",
    "Prediction",
    "RegisteredModel",
    "Registry",
    "Synset",
    "Transform",
    "UnknownModelError",
    "UnsupportedImageError",
    "UsageError",
    "WeightsError",
    "WeightsFile",
    "WeightsFormatError",
    "WeightsIntegrityError",
    "WeightsUnavailableError",
    "__version__",
    "create_model",
    "create_transform",
    "decode_image",
    "decode_predictions",
    "draw_heatmap",
    "engine_registry",
    "extract_features",
    "get_model_spec",
    "imagenet1k",
    "list_models",
    "load",
    "load_engine",
    "load_pipeline",
    "preprocess",
    "register_engine",
    "resolve_data_config",
    "resolve_model",
    "wordnet",
]
