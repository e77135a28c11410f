"""Inception V3 (Szegedy et al., 2015): Keras's builder and the official Keras weights."""

from imagenet_zoo.models.keras_applications import keras_application_model, keras_weights_file
from imagenet_zoo.specs import DataConfig, ModelSpec, PublishedAccuracy

INCEPTION_V3 = ModelSpec(
    name="inception_v3",
    family="inception",
    # Trained by the Keras team in TensorFlow: RGB scaled to [-1, 1], 299x299.
    data_config=DataConfig(input_size=299, mode="tf"),
    weights=keras_weights_file(
        "inception_v3", "inception_v3", "9a0d58056eeedaa3f26cb7ebd46da564", 96_112_376
    ),
    weights_notop=keras_weights_file(
        "inception_v3", "inception_v3", "bcbd6486424b2319ff4ef7d526e38f63", 87_910_968, notop=True
    ),
    num_params=23_817_352,
    gflops=11.426,
    accuracy=PublishedAccuracy(77.9, 93.7),
    license="Apache-2.0",
    source="https://arxiv.org/abs/1512.00567",
    aliases=("inception", "inceptionv3", "inception-v3"),
)

MODELS = (keras_application_model(INCEPTION_V3, "InceptionV3"),)
