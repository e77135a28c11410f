"""Model families, one file each. Importing this package does not import Keras."""

from imagenet_zoo.models import efficientnet_lite, inception_v3, resnet, squeezenet, vgg, xception

ALL_MODELS = (
    *efficientnet_lite.MODELS,
    *vgg.MODELS,
    *resnet.MODELS,
    *inception_v3.MODELS,
    *xception.MODELS,
    *squeezenet.MODELS,
)
