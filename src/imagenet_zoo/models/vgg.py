"""VGG16 and VGG19 (Simonyan & Zisserman, 2014): Keras's builders and the official Keras weights."""

from imagenet_zoo.models.keras_applications import keras_application_model, keras_weights_file
from imagenet_zoo.specs import DataConfig, ModelSpec, PublishedAccuracy

# Ported from Oxford's Caffe release: BGR input, ImageNet mean subtracted, no scaling.
_DATA = DataConfig(input_size=224, mode="caffe")


VGG16 = ModelSpec(
    name="vgg16",
    family="vgg",
    data_config=_DATA,
    weights=keras_weights_file("vgg16", "vgg16", "64373286793e3c8b2b4e3219cbf3544b", 553_467_096),
    weights_notop=keras_weights_file(
        "vgg16", "vgg16", "6d6bbae143d832006294945121d1f1fc", 58_889_256, notop=True
    ),
    num_params=138_357_544,
    gflops=30.941,
    accuracy=PublishedAccuracy(71.3, 90.1),
    license="CC-BY-4.0 (Oxford VGG weights)",
    source="https://arxiv.org/abs/1409.1556",
    aliases=("vgg", "vgg-16"),
    explain_method="grad-cam",  # Flatten + three dense layers: no class activation map
)

VGG19 = ModelSpec(
    name="vgg19",
    family="vgg",
    data_config=_DATA,
    weights=keras_weights_file("vgg19", "vgg19", "cbe5617147190e668d6c5d5026f83318", 574_710_816),
    weights_notop=keras_weights_file(
        "vgg19", "vgg19", "253f8cb515780f3b799900260a226db6", 80_134_624, notop=True
    ),
    num_params=143_667_240,
    gflops=39.264,
    accuracy=PublishedAccuracy(71.3, 90.0),
    license="CC-BY-4.0 (Oxford VGG weights)",
    source="https://arxiv.org/abs/1409.1556",
    aliases=("vgg-19",),
    explain_method="grad-cam",
)

MODELS = (
    keras_application_model(VGG16, "VGG16"),
    keras_application_model(VGG19, "VGG19"),
)
