"""Heatmaps: CAM and Grad-CAM agree where the maths says they must, the fast engine's maps equal Keras's,
the map points at the right object on real photos, and what cannot be explained is refused clearly."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scripts.pointing_game import play

import imagenet_zoo
from imagenet_zoo.data.images import decode_image
from imagenet_zoo.data.preprocess import input_region, resize_and_crop
from imagenet_zoo.engines.explain import cam_model
from imagenet_zoo.engines.keras import KerasCamEngine, KerasGradCamEngine
from imagenet_zoo.errors import ExplanationUnsupportedError, UsageError
from imagenet_zoo.explain import Explanation, class_index_of, draw_heatmap, positive_unit
from imagenet_zoo.registry import default_registry
from imagenet_zoo.specs import PreprocessMode
from tests.conftest import SAMPLE_DIR, FileServer, run_cli
from tests.test_keras_networks import PHOTOS, registry_serving

TENCH = SAMPLE_DIR / "n01440764_tench.JPEG"
BULLDOG = SAMPLE_DIR / "n02108915_French_bulldog.JPEG"


def _batch(model_name: str) -> np.ndarray:
    """The photos as the model's input pixels (uint8), which the engines scale."""
    config = default_registry().get(model_name).spec.data_config
    return np.stack([resize_and_crop(decode_image(p).image, config) for p in PHOTOS])


def _mode(model_name: str) -> PreprocessMode:
    return default_registry().get(model_name).spec.data_config.mode


def _cam_engine(model, name: str):  # type: ignore[no-untyped-def]
    return KerasCamEngine(model, _mode(name))


def _random_keras(constructor: str):  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(0)
    return getattr(keras.applications, constructor)(weights=None, classifier_activation=None)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("constructor", "name"),
    [("ResNet50", "resnet50"), ("InceptionV3", "inception_v3"), ("Xception", "xception")],
)
def test_grad_cam_is_cam_over_the_number_of_positions(constructor: str, name: str) -> None:
    """Global average pooling + a linear layer: d y_k / d F = w_k / (h w) everywhere, so Grad-CAM's map is
    CAM's divided by h w, and both report the same grid."""
    model = _random_keras(constructor)
    batch = _batch(name)
    logits, cam, classes = _cam_engine(model, name).explain(batch, None)
    grad_logits, grad_cam, grad_classes = KerasGradCamEngine(model, _mode(name)).explain(batch, None)
    np.testing.assert_allclose(grad_logits, logits, rtol=1e-5, atol=1e-5)
    assert classes.tolist() == grad_classes.tolist() == np.argmax(logits, axis=1).tolist()
    positions = cam.shape[1] * cam.shape[2]
    np.testing.assert_allclose(grad_cam * positions, cam, atol=1e-4 * float(np.abs(cam).max()))
    for a, b in zip(cam, grad_cam, strict=True):
        np.testing.assert_allclose(positive_unit(a), positive_unit(b), atol=1e-4)
    # CAM is the logit spread over the positions: its mean plus the bias is the logit itself.
    bias = model.get_layer("predictions").get_weights()[1]
    chosen = logits[np.arange(len(logits)), classes]
    np.testing.assert_allclose(cam.mean(axis=(1, 2)) + bias[classes], chosen, rtol=1e-4, atol=1e-4)


def test_squeezenet_maps_are_its_classifier_before_the_pooling() -> None:
    model = (
        default_registry()
        .get("squeezenet1_1")
        .build(weights=None, include_top=True, pooling=None, input_shape=None)
    )
    logits, maps, classes = _cam_engine(model, "squeezenet1_1").explain(_batch("squeezenet1_1"), 7)
    assert maps.shape == (len(PHOTOS), 13, 13) and classes.tolist() == [7] * len(PHOTOS)
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), logits[:, 7], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_vgg_needs_grad_cam_which_the_keras_engine_computes() -> None:
    model = _random_keras("VGG16")
    with pytest.raises(ExplanationUnsupportedError, match="Grad-CAM"):
        cam_model(model)
    logits, maps, classes = KerasGradCamEngine(model, _mode("vgg16")).explain(_batch("vgg16"), None)
    assert maps.shape == (len(PHOTOS), 7, 7) and np.isfinite(maps).all()
    assert classes.tolist() == np.argmax(logits, axis=1).tolist()


def test_the_fast_engine_refuses_what_it_cannot_explain(with_lite0: Path) -> None:
    with pytest.raises(ExplanationUnsupportedError, match="--engine keras"):
        imagenet_zoo.load("vgg16", explain=True)  # refused before any download
    with pytest.raises(ExplanationUnsupportedError, match="fp32 or bf16"):
        imagenet_zoo.load("efficientnet_lite0", precision="int8", explain=True)
    with pytest.raises(UsageError):
        imagenet_zoo.load("efficientnet_lite0", features=True, explain=True)  # type: ignore[call-overload]
    plain = imagenet_zoo.load("efficientnet_lite0", progress=False)
    with pytest.raises(ExplanationUnsupportedError, match="explain=True"):
        plain.classify(str(TENCH), explain=True)


def test_openvino_maps_equal_keras_maps_for_lite0(with_lite0: Path) -> None:
    photos = [str(p) for p in PHOTOS]
    fast = imagenet_zoo.load("efficientnet_lite0", explain=True, progress=False).classify(
        photos, explain=True
    )
    keras = imagenet_zoo.load("efficientnet_lite0", engine="keras", explain=True, progress=False)
    reference = keras.classify(photos, explain=True)
    plain = imagenet_zoo.load("efficientnet_lite0", progress=False).classify(photos)
    for a, b, c in zip(fast, reference, plain, strict=True):
        assert a.explanation is not None and b.explanation is not None
        assert a.explanation.grid.shape == (7, 7) and a.explanation.method == "cam"
        assert a.explanation.class_index == b.explanation.class_index == c.top.index
        np.testing.assert_allclose(a.explanation.grid, b.explanation.grid, atol=1e-4)
        assert [p.index for p in a.predictions] == [p.index for p in c.predictions]
        assert a.top.score == pytest.approx(c.top.score, abs=1e-5)


@pytest.mark.slow
def test_openvino_maps_equal_keras_maps_with_official_format_weights(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_serving("resnet50", file_server, monkeypatch)
    photos = [str(p) for p in PHOTOS]
    options = {"registry": registry, "progress": False, "explain": True}
    keras = imagenet_zoo.load("resnet50", engine="keras", **options).classify(photos, explain_class=3)
    fast = imagenet_zoo.load("resnet50", **options).classify(photos, explain_class=3)
    for a, b in zip(fast, keras, strict=True):
        assert a.explanation is not None and b.explanation is not None and a.explanation.class_index == 3
        np.testing.assert_allclose(a.explanation.grid, b.explanation.grid, atol=1e-4)


def test_pointing_game_on_composites_of_real_photos(with_lite0: Path) -> None:
    """2x2 composites of four classes: the explained class's peak lies in its quadrant (random: 25 %).
    A CAM prototype scored 91.5 % on composites of other ImageNet photos; target >= 90 %."""
    classifier = imagenet_zoo.load("efficientnet_lite0", explain=True, progress=False)
    hits = play(classifier, SAMPLE_DIR, composites=200, size=896)
    assert sum(hits) / len(hits) >= 0.90


def test_region_is_the_centre_crop_in_the_photo() -> None:
    config = default_registry().get("efficientnet_lite0").spec.data_config  # 256 shorter side, 224 crop
    left, top, right, bottom = input_region(500, 375, config)
    # The longer side is resized to a whole number of pixels: the box is square within that rounding.
    assert (right - left) == pytest.approx(bottom - top, rel=0.002)
    assert bottom - top == pytest.approx(375 * 224 / 256)
    assert (left + right) / 2 == pytest.approx(250, abs=1) and (top + bottom) / 2 == pytest.approx(
        187.5, abs=1
    )
    squash = input_region(500, 375, config.__class__(224, "lite", resize_mode="squash"))
    assert squash == (0.0, 0.0, 500.0, 375.0)


def test_peak_maps_the_grid_back_to_the_photo() -> None:
    grid = np.zeros((7, 7), np.float32)
    grid[6, 0] = 1.0  # bottom-left cell
    explanation = Explanation("cam", 0, "tench", grid, (100.0, 50.0, 450.0, 400.0))
    x, y = explanation.peak()
    assert 100 <= x < 150 and 350 <= y < 400
    assert positive_unit(np.array([[-2.0, 1.0], [4.0, 0.0]])).tolist() == [[0.0, 0.25], [1.0, 0.0]]
    assert positive_unit(-np.ones((2, 2))).max() == 0.0


def test_classes_are_named_by_index_synset_or_label() -> None:
    labels = imagenet_zoo.imagenet1k()
    assert (
        class_index_of(labels, "1")
        == class_index_of(labels, "goldfish")
        == class_index_of(labels, "n01443537")
    )
    with pytest.raises(UsageError, match="names classes"):
        class_index_of(labels, "crane")  # the bird and the machine
    with pytest.raises(UsageError):
        class_index_of(labels, "1000")
    with pytest.raises(UsageError):
        class_index_of(labels, "no such thing")


def test_heatmap_drawing_keeps_the_photo_and_adds_a_legend() -> None:
    photo = Image.new("RGB", (400, 300), (128, 128, 128))
    grid = np.zeros((7, 7), np.float32)
    grid[3, 3] = 1.0
    drawn = draw_heatmap(photo, Explanation("cam", 0, "tench", grid, (50.0, 0.0, 350.0, 300.0)))
    pixels = np.asarray(drawn).astype(int)
    assert drawn.size == photo.size
    assert np.abs(pixels[150, 200] - 128).max() > 40  # hot centre: clearly coloured
    assert np.abs(pixels[20, 100] - 128).max() < 40  # cold corner of the region: the photo shows through
    assert (pixels[150, 10] == 128).all()  # outside the region: untouched


def test_cli_explain_json_table_and_overlay(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["classify", str(BULLDOG), "--explain", "--format", "json"], capsys)
    assert code == 0
    explanation = json.loads(out)[0]["explanation"]
    assert explanation["method"] == "cam" and explanation["label"] == "French bulldog"
    grid = np.array(explanation["grid"])
    assert grid.shape == (7, 7) and grid.min() >= 0 and grid.max() == 1.0
    left, top, right, bottom = explanation["region"]
    assert 0 <= left < right <= 500 and 0 <= top < bottom <= 375

    code, out, _ = run_cli(["classify", str(TENCH), "--explain-class", "goldfish"], capsys)
    assert code == 0 and "cam for goldfish (1): strongest at" in out

    plain, explained = tmp_path / "plain.png", tmp_path / "explained.png"
    assert run_cli(["classify", str(BULLDOG), "--annotate", str(plain)], capsys)[0] == 0
    assert run_cli(["classify", str(BULLDOG), "--explain", "--annotate", str(explained)], capsys)[0] == 0
    a, b = np.asarray(Image.open(plain)).astype(int), np.asarray(Image.open(explained)).astype(int)
    assert a.shape == b.shape and np.abs(a - b).mean() > 5

    code, _, err = run_cli(["classify", str(TENCH), "--explain-class", "crane"], capsys)
    assert code == 2 and "names classes" in err
    code, _, err = run_cli(["classify", str(TENCH), "--model", "vgg16", "--explain"], capsys)
    assert code == 2 and "--engine keras" in err and "Traceback" not in err


def test_a_broken_photo_in_an_explained_batch(with_lite0: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really")
    classifier = imagenet_zoo.load("efficientnet_lite0", explain=True, progress=False)
    results = classifier.classify([str(TENCH), str(broken), str(BULLDOG)], explain=True)
    assert [r.ok for r in results] == [True, False, True]
    assert results[0].explanation is not None and results[1].explanation is None
    assert results[2].explanation is not None and results[2].explanation.label == "French bulldog"


@pytest.mark.slow
def test_bundles_linear_head_cam_neighbours_grad_cam(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A linear head is explained with CAM on the fast engine; a neighbour vote needs Grad-CAM (Keras).
    Half spots, half stripes: the map of "spots" peaks in the spotted half."""
    from tests.test_transfer import _texture, _texture_task

    data = _texture_task(tmp_path / "data", 20, seed=1)
    rng = np.random.default_rng(5)
    half = np.concatenate([np.asarray(_texture("spots", rng)), np.asarray(_texture("stripes", rng))], axis=1)
    bundles = {}
    for head in ("linear", "neighbours"):
        bundles[head] = tmp_path / head
        argv = ["train", str(data), "--output", str(bundles[head]), "--head", head, "--epochs", "15"]
        assert run_cli(argv, capsys)[0] == 0
    linear = imagenet_zoo.load(bundles["linear"], explain=True, progress=False)
    result = linear.classify(half, explain_class="spots")
    assert result.explanation is not None and result.explanation.method == "cam"
    assert result.explanation.grid.shape == (7, 7) and result.explanation.peak()[0] < 256
    with pytest.raises(ExplanationUnsupportedError, match="--engine keras"):
        imagenet_zoo.load(bundles["neighbours"], explain=True, progress=False)
    vote = imagenet_zoo.load(bundles["neighbours"], engine="keras", explain=True, progress=False)
    voted = vote.classify(half, explain_class="spots")
    assert voted.explanation is not None and voted.explanation.method == "grad-cam"
    assert np.isfinite(voted.explanation.grid).all() and voted.explanation.grid.shape == (7, 7)

    # The torch engine explains both from the translated bundle: CAM as OpenVINO does, Grad-CAM as Keras.
    for head, reference in (("linear", result), ("neighbours", voted)):
        translated = imagenet_zoo.load(
            bundles[head], engine="torch", device="cpu", explain=True, progress=False
        )
        ours = translated.classify(half, explain_class="spots")
        assert ours.explanation is not None and reference.explanation is not None
        assert ours.explanation.method == reference.explanation.method
        np.testing.assert_allclose(ours.explanation.grid, reference.explanation.grid, atol=1e-3)
        assert [p.index for p in ours.predictions] == [p.index for p in reference.predictions]
        assert ours.predictions[0].score == pytest.approx(reference.predictions[0].score, abs=1e-4)


def test_a_class_named_by_digits_is_that_class() -> None:
    from imagenet_zoo.data.labels import ClassLabel

    labels = [ClassLabel(i, str(i + 1), str(i + 1)) for i in range(12)]
    assert class_index_of(labels, "2") == 1 and class_index_of(labels, 2) == 2
    with pytest.raises(UsageError):
        class_index_of(labels, "³")
