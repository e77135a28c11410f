"""The Python API: every accepted input kind, batches with failures, no mutation of user data."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imagenet_zoo
from imagenet_zoo import Classification, Classifier
from tests.conftest import skimage_photo

COFFEE = skimage_photo("coffee.png")


def test_public_api_is_small_and_typed() -> None:
    assert {"load", "list_models", "create_model", "Classifier", "Prediction"} <= set(imagenet_zoo.__all__)
    assert "efficientnet_lite0" in imagenet_zoo.list_models()


def test_every_input_kind_gives_the_same_answer(lite0_classifier: Classifier) -> None:
    with Image.open(COFFEE) as image:
        pil = image.convert("RGB")
    inputs = [str(COFFEE), COFFEE, COFFEE.read_bytes(), pil, np.asarray(pil)]
    results = [lite0_classifier.classify(x, top=3) for x in inputs]
    for result in results:
        assert isinstance(result, Classification)
        assert [p.index for p in result.predictions] == [p.index for p in results[0].predictions]
        assert result.top.label == "espresso"
        assert result.predictions[0].score == pytest.approx(results[0].predictions[0].score, abs=1e-5)


def test_a_single_bad_input_raises_its_typed_error(lite0_classifier: Classifier) -> None:
    with pytest.raises(imagenet_zoo.UnsupportedImageError):
        lite0_classifier.classify(b"definitely not an image")
    with pytest.raises(imagenet_zoo.ImageNotFoundError):
        lite0_classifier.classify("/no/such/photo.jpg")


def test_a_batch_keeps_going_past_a_bad_input(lite0_classifier: Classifier) -> None:
    results = lite0_classifier.classify([str(COFFEE), b"", str(COFFEE)], top=2)
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error is not None and results[1].error.type == "EmptyImageError"
    assert results[0].top.index == results[2].top.index == 967
    with pytest.raises(ValueError):
        _ = results[1].top


def test_batches_larger_than_batch_size_keep_order(lite0_classifier: Classifier) -> None:
    photos = [skimage_photo(n) for n in ("coffee.png", "chelsea.png")] * 9  # 18 > batch_size 16
    results = lite0_classifier.classify([str(p) for p in photos], top=1)
    assert [r.source for r in results] == [str(p) for p in photos]
    assert [r.top.index for r in results[:2]] * 9 == [r.top.index for r in results]


def test_scores_are_probabilities(lite0_classifier: Classifier) -> None:
    result = lite0_classifier.classify(str(COFFEE), top=1000)
    assert sum(p.score for p in result.predictions) == pytest.approx(1.0, abs=1e-4)
    assert [p.rank for p in result.predictions[:3]] == [1, 2, 3]
    with pytest.raises(ValueError):
        lite0_classifier.classify(str(COFFEE), top=0)


def test_the_callers_array_is_not_modified(lite0_classifier: Classifier) -> None:
    with Image.open(COFFEE) as image:
        pixels = np.asarray(image.convert("RGB")).copy()
    before = pixels.copy()
    lite0_classifier.classify(pixels)
    np.testing.assert_array_equal(pixels, before)


def test_load_rejects_unknown_names(with_lite0: Path) -> None:
    with pytest.raises(imagenet_zoo.UnknownModelError):
        imagenet_zoo.load("alexnet")
    with pytest.raises(imagenet_zoo.UsageError):
        imagenet_zoo.load("lite0", engine="tensorrt")


def test_squash_option(with_lite0: Path) -> None:
    classifier = imagenet_zoo.load("lite0", resize="squash")
    assert classifier.data_config.resize_mode == "squash"
    assert classifier.classify(str(COFFEE)).top.label == "espresso"


def test_the_load_keywords_are_the_load_config_less_model_and_task() -> None:
    from dataclasses import fields
    from typing import get_type_hints

    from imagenet_zoo.pipeline import LoadConfig, LoadKeywords

    declared = {field.name for field in fields(LoadConfig)} - {"model", "task"}
    assert set(get_type_hints(LoadKeywords)) == declared
