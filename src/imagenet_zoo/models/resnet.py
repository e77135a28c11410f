"""ResNet50 (He et al., 2015): Keras's builder and the official Keras weights (ported from Caffe)."""

from imagenet_zoo.models.keras_applications import keras_application_model, keras_weights_file
from imagenet_zoo.specs import DataConfig, ModelSpec, PublishedAccuracy

RESNET50 = ModelSpec(
    name="resnet50",
    family="resnet",
    # Kaiming He's Caffe weights: BGR input, ImageNet mean subtracted, no scaling.
    data_config=DataConfig(input_size=224, mode="caffe"),
    weights=keras_weights_file("resnet", "resnet50", "2cb95161c43110f7111970584f804107", 102_853_048),
    weights_notop=keras_weights_file(
        "resnet", "resnet50", "4d473c1dd8becc155b73f8504c6f6626", 94_765_736, notop=True
    ),
    num_params=25_583_592,
    gflops=7.716,
    accuracy=PublishedAccuracy(74.9, 92.1),
    license="MIT (Kaiming He's weights)",
    source="https://arxiv.org/abs/1512.03385",
    aliases=("resnet", "resnet-50"),
)

MODELS = (keras_application_model(RESNET50, "ResNet50"),)
