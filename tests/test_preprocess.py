"""Each preprocessing mode against Keras's own `preprocess_input`, and the resize/crop geometry."""

import numpy as np
import pytest
from PIL import Image

from imagenet_zoo.data.preprocess import normalize, preprocess, resize_and_crop
from imagenet_zoo.registry import default_registry
from imagenet_zoo.specs import DataConfig


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(2, 7, 5, 3)).astype(np.float32)


@pytest.mark.parametrize("mode", ["caffe", "tf", "torch"])
def test_modes_match_keras_preprocess_input(mode: str, pixels: np.ndarray) -> None:
    from keras.applications.imagenet_utils import preprocess_input

    expected = preprocess_input(pixels.copy(), mode=mode)
    np.testing.assert_allclose(normalize(pixels, mode), expected, rtol=0, atol=1e-5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "keras_module"),
    [
        ("vgg16", "vgg16"),
        ("vgg19", "vgg19"),
        ("resnet50", "resnet50"),
        ("inception_v3", "inception_v3"),
        ("xception", "xception"),
    ],
)
def test_each_keras_model_uses_its_own_modules_preprocess_input(
    name: str, keras_module: str, pixels: np.ndarray
) -> None:
    import keras

    reference = getattr(keras.applications, keras_module).preprocess_input(pixels.copy())
    mode = default_registry().get(name).spec.data_config.mode
    np.testing.assert_allclose(normalize(pixels, mode), reference, rtol=0, atol=1e-5)


def test_lite_mode_is_minus_127_over_128() -> None:
    x = np.array([[0, 127, 255]], dtype=np.uint8)
    np.testing.assert_allclose(normalize(x, "lite"), [[-127 / 128, 0.0, 1.0]])


@pytest.mark.parametrize("mode", ["caffe", "tf", "lite", "torch"])
def test_normalize_never_mutates_the_callers_array(mode: str, pixels: np.ndarray) -> None:
    before = pixels.copy()
    out = normalize(pixels, mode)  # type: ignore[arg-type]
    assert out is not pixels and not np.shares_memory(out, pixels)
    np.testing.assert_array_equal(pixels, before)


def test_caffe_mode_swaps_to_bgr() -> None:
    red = np.zeros((1, 1, 3), np.float32)
    red[..., 0] = 255
    out = normalize(red, "caffe")
    np.testing.assert_allclose(out[0, 0], [-103.939, -116.779, 255 - 123.68], atol=1e-4)


def _striped(width: int, height: int) -> Image.Image:
    """Columns coloured by x so the crop position can be read back from the output."""
    x = np.tile(np.arange(width, dtype=np.uint8)[None, :, None], (height, 1, 3))
    return Image.fromarray(x)


def test_crop_resizes_the_shorter_side_then_takes_the_centre() -> None:
    config = DataConfig(input_size=224, mode="lite", interpolation="nearest")
    assert config.resize_shorter_to == 256
    out = resize_and_crop(_striped(200, 100), config)  # -> 512 x 256, crop x in [144, 368)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # nearest resize by 2.56: output column 144 samples input column 144/2.56 = 56.
    assert out[0, 0, 0] == 56 and out[0, -1, 0] == 143


def test_squash_keeps_the_whole_width() -> None:
    config = DataConfig(input_size=224, mode="lite", interpolation="nearest", resize_mode="squash")
    out = resize_and_crop(_striped(200, 100), config)
    assert out.shape == (224, 224, 3)
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 199


def test_299_models_resize_to_341_then_crop() -> None:
    config = default_registry().get("xception").spec.data_config
    assert (config.input_size, config.resize_shorter_to) == (299, 341)
    assert preprocess(_striped(400, 300), config).shape == (299, 299, 3)


def test_reference_inputs_are_reproduced_from_the_photos(shared_data) -> None:  # type: ignore[no-untyped-def]
    """The shared reference tensors were made from scikit-image's chelsea and coffee photos."""
    from tests.conftest import skimage_photo

    config = default_registry().get("efficientnet_lite0").spec.data_config
    expected = np.load(shared_data / "efficientnet_lite0_reference_io.npz")["x_nhwc"]
    for i, name in enumerate(["chelsea.png", "coffee.png"]):
        with Image.open(skimage_photo(name)) as image:
            ours = preprocess(image.convert("RGB"), config)
        np.testing.assert_array_equal(ours, expected[i])
