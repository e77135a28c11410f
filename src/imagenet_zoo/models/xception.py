"""Xception (Chollet, 2016): Keras's builder and the official Keras weights."""

from imagenet_zoo.models.keras_applications import keras_application_model, keras_weights_file
from imagenet_zoo.specs import DataConfig, ModelSpec, PublishedAccuracy

XCEPTION = ModelSpec(
    name="xception",
    family="xception",
    # Trained by the Keras team in TensorFlow: RGB scaled to [-1, 1], 299x299.
    data_config=DataConfig(input_size=299, mode="tf"),
    weights=keras_weights_file("xception", "xception", "0a58e3b7378bc2990ea3b43d5981f1f6", 91_884_032),
    weights_notop=keras_weights_file(
        "xception", "xception", "b0042744bf5b25fce3cb969f33bebb97", 83_683_744, notop=True
    ),
    num_params=22_855_952,
    gflops=16.715,
    accuracy=PublishedAccuracy(79.0, 94.5),
    license="Apache-2.0",
    source="https://arxiv.org/abs/1610.02357",
)

MODELS = (keras_application_model(XCEPTION, "Xception"),)
