"""A `.keras` file read without Keras (`models.keras_archive`): the graph the engines build a bundle from
is the one translated from Keras's own loading of the file, for both heads and both tasks, and a file
that is damaged or asks for too much is refused with a typed error."""

import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from imagenet_zoo.engines.graph import translate
from imagenet_zoo.engines.network import drawn_weights
from imagenet_zoo.errors import ModelTranslationError
from imagenet_zoo.models import keras_archive
from imagenet_zoo.models.bundle import FEATURES_LAYER, load_keras_safely
from imagenet_zoo.models.keras_archive import KerasArchiveError, read_archive, to_snake_case
from imagenet_zoo.registry import default_registry
from imagenet_zoo.transfer.heads import fit_neighbours, neighbour_head
from tests.keras_graphs import same_graph


def _bundle_model(head: str):  # type: ignore[no-untyped-def]
    """A bundle's network as `train` composes it: SqueezeNet's pooled features, then a head."""
    import keras

    from imagenet_zoo.transfer.training import _compose, _dense_head

    base = drawn_weights(
        default_registry()
        .get("squeezenet1_1")
        .build(weights=None, include_top=False, pooling="avg", input_shape=None)
    )
    if head == "dense":
        dense = _dense_head(keras, 512, 3)
        dense.get_layer("predictions").set_weights([np.full((512, 3), 0.01, np.float32), np.arange(3.0)])
        return _compose(keras, base, dense)
    rng = np.random.default_rng(0)
    fit = fit_neighbours(rng.normal(size=(12, 512)), np.arange(12) % 3, 3)
    return _compose(keras, base, neighbour_head(fit, 3))


@pytest.fixture(params=["dense", "neighbours"])
def saved(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "model.keras"
    _bundle_model(request.param).save(path)
    return path


def test_the_graph_read_without_keras_is_the_one_keras_loads(saved: Path) -> None:
    import keras

    loaded = load_keras_safely(saved)
    assert same_graph(translate(read_archive(saved)), translate(loaded))
    features = keras.Model(loaded.inputs, loaded.get_layer(FEATURES_LAYER).output)
    assert same_graph(translate(read_archive(saved, outputs=FEATURES_LAYER)), translate(features))


def test_keras_snake_case_names() -> None:
    from keras.src.utils.naming import to_snake_case as keras_snake_case

    kinds = ["Conv2D", "ReLU", "BatchNormalization", "DepthwiseConv2D", "Functional", "NeighbourVote"]
    assert [to_snake_case(k) for k in kinds] == [keras_snake_case(k) for k in kinds]


def _rewritten(path: Path, change) -> Path:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    change(members)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _config_changed(edit):  # type: ignore[no-untyped-def]
    def change(members: dict[str, bytes]) -> None:
        config = json.loads(members["config.json"])
        edit(config["config"])
        members["config.json"] = json.dumps(config).encode()

    return change


def _weights_as_text(members: dict[str, bytes]) -> None:
    import io

    buffer = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buffer, "r+") as weights:
        del weights["layers/dense/vars/0"]
        weights["layers/dense/vars"].create_dataset("0", data=np.array([b"text"]))
    members["model.weights.h5"] = buffer.getvalue()


@pytest.mark.parametrize(
    ("change", "error", "expected"),
    [
        (lambda members: members.pop("model.weights.h5"), KerasArchiveError, "not a readable"),
        (lambda members: members.update({"config.json": b"{"}), KerasArchiveError, "not a readable"),
        (_config_changed(lambda c: c["layers"].pop(1)), ModelTranslationError, "never come"),
        (_weights_as_text, KerasArchiveError, "not a readable"),
        (
            _config_changed(lambda c: c["layers"][-1].update(class_name="Lambda")),
            ModelTranslationError,
            "Lambda",
        ),
    ],
)
def test_a_damaged_file_is_refused(
    change,
    error: type[Exception],
    expected: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "model.keras"
    _bundle_model("dense").save(path)
    _rewritten(path, change)
    with pytest.raises(error, match=expected):
        translate(read_archive(path))


def test_bounds_before_memory_is_spent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.keras"
    _bundle_model("neighbours").save(path)
    monkeypatch.setattr(keras_archive, "MAX_WEIGHT_VALUES", 100_000)  # SqueezeNet alone holds 720 K
    with pytest.raises(KerasArchiveError, match="past 100000 values"):
        read_archive(path)
    monkeypatch.setattr(keras_archive, "MAX_CONFIG_BYTES", 1_000)
    with pytest.raises(KerasArchiveError, match="larger than 1000 bytes"):
        read_archive(path)
    monkeypatch.undo()
    _rewritten(path, _config_changed(lambda c: c["layers"][-1]["config"].update(temperature=0.0)))
    with pytest.raises(ModelTranslationError, match="temperature must be positive"):
        translate(read_archive(path))


@pytest.mark.parametrize("head", ["linear", "neighbours"])
def test_a_bundle_written_without_keras_is_what_keras_composes(
    head: str, with_lite0: Path, tmp_path: Path
) -> None:
    """`train`'s default heads write the bundle's model file without Keras: Keras loads it (safe mode)
    and computes what the network Keras composes of the same base and head computes."""
    import keras

    from imagenet_zoo.api import create_model
    from imagenet_zoo.models.bundle import bundle_writer
    from imagenet_zoo.transfer.heads import LinearHead, NeighbourHead
    from imagenet_zoo.transfer.linear_head import LinearFit
    from imagenet_zoo.transfer.training import _compose, _keras_head

    rng = np.random.default_rng(1)
    fitted = {
        "linear": LinearHead(
            LinearFit(rng.normal(size=(1280, 3)).astype(np.float32), np.arange(3.0, dtype=np.float32), 1, 1)
        ),
        "neighbours": NeighbourHead(fit_neighbours(rng.normal(size=(9, 1280)), np.arange(9) % 3, 3), 3),
    }[head]
    lite0 = default_registry().get("efficientnet_lite0")
    write, learned = bundle_writer(lite0, fitted.layers())
    write(tmp_path / "model.keras")
    loaded = load_keras_safely(tmp_path / "model.keras")
    composed = _compose(
        keras, create_model("lite0", include_top=False, pooling="avg"), _keras_head(keras, fitted)
    )
    assert learned == sum(int(w.numpy().size) for w in composed.trainable_weights)
    pixels = rng.uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict_on_batch(pixels), composed.predict_on_batch(pixels), atol=1e-5)
    features = keras.Model(composed.inputs, composed.get_layer(FEATURES_LAYER).output).predict_on_batch(
        pixels
    )
    np.testing.assert_allclose(
        fitted.logits(features), composed.predict_on_batch(pixels), rtol=1e-4, atol=1e-4
    )
    assert same_graph(translate(read_archive(tmp_path / "model.keras")), translate(loaded))
