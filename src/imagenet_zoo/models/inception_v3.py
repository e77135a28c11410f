"""Inception V3 (Szegedy et al., 2015): Keras's builder and the official Keras weights."""

from imagenet_zoo.models.keras_applications import KERAS_WEIGHTS_BASE, keras_application
from imagenet_zoo.registry import RegisteredModel
from imagenet_zoo.specs import Accuracy, DataConfig, ModelSpec, WeightsFile
from imagenet_zoo.weights.store import DownloadedWeights

_URL = f"{KERAS_WEIGHTS_BASE}inception_v3/"

INCEPTION_V3 = ModelSpec(
    name="inception_v3",
    family="inception",
    # Trained by the Keras team in TensorFlow: RGB scaled to [-1, 1], 299x299.
    data_config=DataConfig(input_size=299, mode="tf"),
    weights=WeightsFile(
        "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
        "9a0d58056eeedaa3f26cb7ebd46da564",
        96_112_376,
        url=f"{_URL}inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
    ),
    weights_notop=WeightsFile(
        "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "bcbd6486424b2319ff4ef7d526e38f63",
        87_910_968,
        url=f"{_URL}inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    num_params=23_817_352,
    gflops=11.426,
    accuracy=Accuracy(77.9, 93.7),
    license="Apache-2.0",
    source="https://arxiv.org/abs/1512.00567",
    aliases=("inception", "inceptionv3", "inception-v3"),
)

MODELS = (RegisteredModel(INCEPTION_V3, keras_application("InceptionV3"), DownloadedWeights()),)
