"""The metadata schema: every registered model is fully and consistently described."""

import re
from pathlib import Path

import numpy as np
import pytest

from imagenet_zoo import list_models
from imagenet_zoo.errors import UnknownModelError
from imagenet_zoo.registry import Registry, default_registry
from imagenet_zoo.weights.store import DownloadedWeights

EXPECTED = {"vgg16", "vgg19", "resnet50", "inception_v3", "xception", "efficientnet_lite0", "squeezenet1_1"}
KERAS_APPLICATIONS = {"vgg16", "vgg19", "resnet50", "inception_v3", "xception"}


def test_the_seven_models_are_registered() -> None:
    assert set(list_models()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_schema(name: str) -> None:
    model = default_registry().get(name)
    spec = model.spec
    assert re.fullmatch(r"[a-z0-9_]+", spec.name)
    assert spec.data_config.input_size in (224, 299)
    assert spec.data_config.mode in ("caffe", "tf", "lite", "torch")
    assert 0.5 < spec.data_config.crop_pct <= 1.0
    assert spec.num_params > 1_000_000 and spec.num_classes == 1000
    assert 50 < spec.accuracy.top1 < 100 and spec.license and spec.source.startswith("https://")
    for weights in filter(None, (spec.weights, spec.weights_notop)):
        assert re.fullmatch(r"[0-9a-f]{32}|[0-9a-f]{64}", weights.hash)
        assert weights.size > 1_000_000 and "/" not in weights.filename
    if isinstance(model.weights, DownloadedWeights):
        assert (
            spec.weights.url
            and spec.weights.url.startswith("https://")
            and spec.weights.url.endswith(spec.weights.filename)
        )
        if spec.name in KERAS_APPLICATIONS:  # Keras publishes separate feature-extractor files
            assert spec.weights_notop is not None and spec.weights_notop.url


def test_input_contract_per_family() -> None:
    registry = default_registry()
    for name in ("vgg16", "vgg19", "resnet50"):
        assert (registry.get(name).spec.data_config.input_size, registry.get(name).spec.data_config.mode) == (
            224,
            "caffe",
        )
    for name in ("inception_v3", "xception"):
        assert (registry.get(name).spec.data_config.input_size, registry.get(name).spec.data_config.mode) == (
            299,
            "tf",
        )


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("VGG", "vgg16"),
        ("inception", "inception_v3"),
        ("Inception-V3", "inception_v3"),
        ("resnet", "resnet50"),
        ("lite0", "efficientnet_lite0"),
        ("efficientnet-lite0", "efficientnet_lite0"),
    ],
)
def test_aliases(alias: str, name: str) -> None:
    assert default_registry().get(alias).spec.name == name


def test_unknown_model_is_a_typed_error() -> None:
    with pytest.raises(UnknownModelError, match="choose one of"):
        default_registry().get("alexnet")


def test_an_alias_cannot_name_two_models() -> None:
    vgg16 = default_registry().get("vgg16")
    with pytest.raises(ValueError, match="already names"):
        Registry(
            [
                vgg16,
                vgg16.__class__(
                    vgg16.spec.__class__(**{**vgg16.spec.__dict__, "name": "other"}),
                    vgg16.build,
                    vgg16.weights,
                ),
            ]
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED - {"efficientnet_lite0"}))
def test_parameter_counts_match_the_builders(name: str) -> None:
    model = default_registry().get(name)
    built = model.build(weights=None, include_top=True, pooling=None, input_shape=None)
    assert sum(int(np.prod(w.shape)) for w in built.trainable_weights) == model.spec.num_params


def test_the_readme_model_table_matches_the_registry() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if line.startswith("| `")}
    for model in default_registry():
        spec = model.spec
        row = next(line for key, line in rows.items() if key.startswith(f"`{spec.name}`"))
        cells = [cell.strip() for cell in row.split("|")[2:-1]]
        assert cells[0] == str(spec.data_config.input_size)
        assert cells[2] == f"{spec.num_params / 1e6:.1f}M"
        assert cells[3].startswith(f"{spec.weights.size / 2**20:.0f} MiB")
        assert cells[4] == f"{spec.accuracy.top1:.1f}"
        assert cells[5] == ("-" if spec.accuracy.top5 is None else f"{spec.accuracy.top5:.1f}")
