"""The five Keras networks, end to end, with weights the test makes in the official file format.

No network: each test builds the `keras.applications` network with random weights, writes them in the
legacy HDF5 layout the official Keras 2 files use, serves the file from a loopback HTTP server under
its official name, and points a test registry (the real spec with this file's MD5) at it. imagenet-zoo
then downloads it through its real download path, verifies it, loads it, and must predict exactly what
`keras.applications` + that module's own `preprocess_input` predict on the same pixels.
"""

import hashlib
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

import imagenet_zoo
from imagenet_zoo.data.images import decode_image
from imagenet_zoo.data.preprocess import resize_and_crop
from imagenet_zoo.engines.openvino_ir import IR_FILE, gflops_per_image, ir_dir
from imagenet_zoo.errors import WeightsIntegrityError
from imagenet_zoo.registry import Registry, default_registry
from imagenet_zoo.weights.store import weights_dir
from tests.conftest import SAMPLE_DIR, FileServer, skimage_photo

NETWORKS = {  # name -> (keras.applications constructor, module with its preprocess_input)
    "vgg16": ("VGG16", "vgg16"),
    "vgg19": ("VGG19", "vgg19"),
    "resnet50": ("ResNet50", "resnet50"),
    "inception_v3": ("InceptionV3", "inception_v3"),
    "xception": ("Xception", "xception"),
}
PHOTOS = [
    skimage_photo("coffee.png"),
    SAMPLE_DIR / "n01440764_tench.JPEG",
    SAMPLE_DIR / "n02124075_Egyptian_cat.JPEG",
    SAMPLE_DIR / "n02692877_airship.JPEG",  # grayscale JPEG
]


def write_official_weights(constructor: str, path: Path, *, include_top: bool = True) -> None:
    """Random weights for `keras.applications.<constructor>`, in the legacy HDF5 layout of Keras 2.

    Freshly initialised classifiers give near-uniform outputs (top scores 1e-9 apart), which would make
    comparing rankings meaningless; the last layer is rescaled so the logits spread out (std ~3).
    """
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(len(path.name))
    model = getattr(keras.applications, constructor)(
        weights=None, include_top=include_top, classifier_activation=None
    )
    if include_top:
        size = model.input_shape[1]
        probe = np.random.default_rng(0).uniform(-1, 1, size=(2, size, size, 3)).astype(np.float32)
        dense = model.get_layer("predictions")
        kernel, bias = dense.get_weights()
        scale = 3.0 / float(np.std(model.predict_on_batch(probe)))
        dense.set_weights([kernel * scale, bias])
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def registry_serving(
    name: str, server: FileServer, monkeypatch: pytest.MonkeyPatch, *, notop: bool = False
) -> Registry:
    """A registry whose `name` expects the file the test wrote (hash and size), fetched via `server`."""
    registered = default_registry().get(name)
    field = "weights_notop" if notop else "weights"
    official = getattr(registered.spec, field)
    served = server.root / official.filename
    write_official_weights(NETWORKS[name][0], served, include_top=not notop)
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    spec = replace(registered.spec, **{field: replace(official, hash=md5, size=served.stat().st_size)})
    monkeypatch.setenv("IMAGENET_ZOO_MIRROR", server.url)
    return Registry([replace(registered, spec=spec)])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NETWORKS))
def test_predictions_equal_keras_applications(
    name: str, file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    registry = registry_serving(name, file_server, monkeypatch)
    spec = registry.get(name).spec
    # The exact evaluation protocol (decode="full"), as the reference below resizes.
    classifier = imagenet_zoo.load(name, engine="keras", decode="full", registry=registry, progress=False)
    assert file_server.requests == [f"/{spec.weights.filename}"]
    results = classifier.classify([str(p) for p in PHOTOS], top=5)

    constructor, module = NETWORKS[name]
    reference_model = getattr(keras.applications, constructor)(
        weights=str(weights_dir() / spec.weights.filename)
    )
    pixels = np.stack([resize_and_crop(decode_image(p).image, spec.data_config) for p in PHOTOS]).astype(
        np.float32
    )
    expected = reference_model.predict(
        getattr(keras.applications, module).preprocess_input(pixels), verbose=0
    )

    ours = classifier.predict_proba([decode_image(p).image for p in PHOTOS])
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)
    for result, row in zip(results, expected, strict=True):
        assert [p.index for p in result.predictions] == list(np.argsort(-row, kind="stable")[:5])
        assert result.predictions[0].score == pytest.approx(float(row.max()), rel=1e-4)

    # The OpenVINO engine, converted from the same Keras model, must give the same answers.
    fast = imagenet_zoo.load(name, engine="openvino", registry=registry, progress=False)
    openvino = fast.predict_proba([decode_image(p).image for p in PHOTOS])
    assert np.abs(openvino - expected).max() < 1e-4
    assert (
        np.argsort(-openvino, kind="stable")[:, :5].tolist()
        == np.argsort(-expected, kind="stable")[:, :5].tolist()
    )
    assert gflops_per_image(ir_dir(registry.get(name)) / IR_FILE) == pytest.approx(spec.gflops, rel=0.01)

    # The torch engine, translated from the same Keras model: the same logits.
    inputs = classifier.preprocess_images([decode_image(p).image for p in PHOTOS])
    translated = imagenet_zoo.load_engine(
        name, engine="torch", device="cpu", registry=registry, progress=False
    )
    reference_logits = classifier.engine.infer(inputs)
    # Within 1e-4 of the logits' scale: with these weights ResNet50's logits reach 1,000, where one fp32
    # step is 6e-5 (OpenVINO's logits differ from Keras's by 7e-4 there).
    scale = max(1.0, float(np.abs(reference_logits).max()))
    assert np.abs(translated.infer(inputs) - reference_logits).max() <= 1e-4 * scale


@pytest.mark.slow
def test_feature_extraction_with_the_notop_file(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    registry = registry_serving("resnet50", file_server, monkeypatch, notop=True)
    spec = registry.get("resnet50").spec
    assert spec.weights_notop is not None
    features = imagenet_zoo.create_model(
        "resnet", include_top=False, pooling="avg", registry=registry, progress=False
    )
    assert features.output_shape == (None, 2048)
    assert file_server.requests == [f"/{spec.weights_notop.filename}"]
    reference = keras.applications.ResNet50(
        weights=str(weights_dir() / spec.weights_notop.filename), include_top=False, pooling="avg"
    )
    batch = np.random.default_rng(0).uniform(-120, 150, size=(2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(
        features.predict_on_batch(batch), reference.predict_on_batch(batch), rtol=1e-4, atol=1e-5
    )


@pytest.mark.slow
def test_a_tampered_official_file_is_rejected_and_removed(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_serving("resnet50", file_server, monkeypatch)
    served = file_server.root / registry.get("resnet50").spec.weights.filename
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit inside a kernel
    served.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError):
        imagenet_zoo.load("resnet50", engine="keras", registry=registry, progress=False)
    assert not (weights_dir() / served.name).exists()
    assert [p.name for p in weights_dir().iterdir() if not p.name.endswith(".lock")] == []
