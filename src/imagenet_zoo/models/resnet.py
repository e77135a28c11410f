"""ResNet50 (He et al., 2015): Keras's builder and the official Keras weights (ported from Caffe)."""

from imagenet_zoo.models.keras_applications import KERAS_WEIGHTS_BASE, keras_application
from imagenet_zoo.registry import RegisteredModel
from imagenet_zoo.specs import Accuracy, DataConfig, ModelSpec, WeightsFile
from imagenet_zoo.weights.store import DownloadedWeights

_URL = f"{KERAS_WEIGHTS_BASE}resnet/"

RESNET50 = ModelSpec(
    name="resnet50",
    family="resnet",
    # Kaiming He's Caffe weights: BGR input, ImageNet mean subtracted, no scaling.
    data_config=DataConfig(input_size=224, mode="caffe"),
    weights=WeightsFile(
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
        "2cb95161c43110f7111970584f804107",
        102_853_048,
        url=f"{_URL}resnet50_weights_tf_dim_ordering_tf_kernels.h5",
    ),
    weights_notop=WeightsFile(
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "4d473c1dd8becc155b73f8504c6f6626",
        94_765_736,
        url=f"{_URL}resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    num_params=25_583_592,
    gflops=7.716,
    accuracy=Accuracy(74.9, 92.1),
    license="MIT (Kaiming He's weights)",
    source="https://arxiv.org/abs/1512.03385",
    aliases=("resnet", "resnet-50"),
)

MODELS = (RegisteredModel(RESNET50, keras_application("ResNet50"), DownloadedWeights()),)
