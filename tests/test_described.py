"""The zoo's networks as shipped data (`models.described`): each description is what Keras builds, the graph
made from it without Keras is the graph translated from the Keras model, heatmap graphs equal Keras's, and
a description or weights file that is malformed or tampered with is refused with a typed error."""

import gzip
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from imagenet_zoo.engines.explain import cam_model, explaining_graph, grad_cam_model
from imagenet_zoo.engines.graph import translate
from imagenet_zoo.engines.network import drawn_weights, keras_model, network_graph
from imagenet_zoo.engines.registry import EngineRequest
from imagenet_zoo.errors import ExplanationUnsupportedError, ModelTranslationError, WeightsFormatError
from imagenet_zoo.models import ALL_MODELS, described
from imagenet_zoo.models.described import describe, fresh_network, network_description
from imagenet_zoo.registry import default_registry
from imagenet_zoo.specs import Task
from imagenet_zoo.weights.keras_h5 import read_legacy_h5
from tests.keras_graphs import same_graph

NAMES = [model.spec.name for model in ALL_MODELS]
TASKS: list[Task] = ["classify", "features"]
RANDOM = {task: EngineRequest(task=task, random_weights=True, progress=False) for task in TASKS}


def _shipped(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(gzip.decompress(described.description_path(name).read_bytes()))


@pytest.mark.parametrize("name", NAMES)
def test_each_shipped_description_is_what_keras_builds(name: str) -> None:
    model = default_registry().get(name)
    shipped = _shipped(name)
    for task in TASKS:
        network = fresh_network(model, task)
        assert shipped[task] == describe(network), f"{name} {task}: run scripts/write_network_descriptions.py"
        # Built without Keras, from the description, with weights drawn alike: the same graph.
        assert same_graph(network_graph(model, RANDOM[task]), translate(drawn_weights(network)))


def test_the_real_lite0_weights_give_the_graph_keras_gives(with_lite0: Path) -> None:
    model = default_registry().get("efficientnet_lite0")
    request = EngineRequest(progress=False)
    assert same_graph(network_graph(model, request), translate(keras_model(model, request)))


def test_the_heatmap_graphs_compute_what_keras_does() -> None:
    for name in ("efficientnet_lite0", "squeezenet1_1"):
        model = default_registry().get(name)
        graph, head = explaining_graph(network_graph(model, RANDOM["classify"]), "cam", name)
        cam = cam_model(keras_model(model, RANDOM["classify"]))
        reference = translate(cam.network)
        # The same operations and weights; Keras nests the body as a model of its own (its names' prefix).
        assert [node.op for node in graph.nodes] == [node.op for node in reference.nodes]
        pairs = zip(graph.weights.values(), reference.weights.values(), strict=True)
        assert all(np.array_equal(ours, theirs) for ours, theirs in pairs)
        assert [name.rsplit("/", 1)[-1] for name in reference.outputs] == graph.outputs
        assert (head is None) == (cam.head is None) and (head is None or np.array_equal(head, cam.head))
    vgg = default_registry().get("vgg16")
    with pytest.raises(ExplanationUnsupportedError, match="Grad-CAM"):
        explaining_graph(network_graph(vgg, RANDOM["classify"]), "cam", "vgg16")
    graph, head = explaining_graph(network_graph(vgg, RANDOM["classify"]), "grad-cam", "vgg16")
    reference = translate(grad_cam_model(keras_model(vgg, RANDOM["classify"])))
    assert head is None and graph.outputs == ["predictions", "block5_pool"]
    assert reference.outputs[1].endswith("/block5_pool")


def test_building_an_engine_never_imports_keras(with_lite0: Path) -> None:
    import subprocess

    probe = (
        "import sys, imagenet_zoo\n"
        "from imagenet_zoo.pipeline import LoadConfig\n"
        "imagenet_zoo.load('efficientnet_lite0', progress=False, explain=True)\n"
        "config = LoadConfig(model='squeezenet1_1', task='features')\n"
        "imagenet_zoo.load_pipeline(config, random_weights=True, progress=False)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow', 'scipy'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda path: path.write_bytes(b"not gzip"), "unreadable"),
        (lambda path: path.write_bytes(gzip.compress(b"{")), "unreadable"),
        (lambda path: path.write_bytes(gzip.compress(b'{"format": 99}')), "unreadable"),
        (lambda path: path.write_bytes(gzip.compress(b"[" * 100 + b"]" * 100)), "unreadable"),
        (lambda path: path.write_bytes(gzip.compress(b" " * (8 * 2**20 + 1))), "larger"),
        (lambda path: path.unlink(), "unreadable"),
    ],
)
def test_a_damaged_description_is_refused(
    damage,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "squeezenet1_1.json.gz"
    path.write_bytes(described.description_path("squeezenet1_1").read_bytes())
    damage(path)
    monkeypatch.setattr(described, "description_path", lambda model: tmp_path / f"{model}.json.gz")
    with pytest.raises(ModelTranslationError, match=expected):
        network_graph(default_registry().get("squeezenet1_1"), RANDOM["classify"])


def test_a_tampered_configuration_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = _shipped("squeezenet1_1")
    layers = document["classify"]["config"]["layers"]
    inbound = layers[3]["inbound_nodes"]
    layers[3]["inbound_nodes"] = [{"args": [{"class_name": "__keras_tensor__", "config": {}}]}]
    layers[5]["class_name"] = "Lambda"
    (tmp_path / "squeezenet1_1.json.gz").write_bytes(gzip.compress(json.dumps(document).encode()))
    monkeypatch.setattr(described, "description_path", lambda model: tmp_path / f"{model}.json.gz")
    with pytest.raises(ModelTranslationError, match="malformed"):
        network_graph(default_registry().get("squeezenet1_1"), RANDOM["classify"])
    layers[3]["inbound_nodes"] = inbound
    (tmp_path / "squeezenet1_1.json.gz").write_bytes(gzip.compress(json.dumps(document).encode()))
    with pytest.raises(ModelTranslationError, match="Lambda, which imagenet-zoo does not translate"):
        network_graph(default_registry().get("squeezenet1_1"), RANDOM["classify"])


def _legacy_h5(path: Path, layers: dict[str, list[np.ndarray]]) -> Path:
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode() for name in layers]
        for name, arrays in layers.items():
            group = f.create_group(name)
            names = [f"{name}/w{i}:0".encode() for i in range(len(arrays))]
            group.attrs["weight_names"] = names
            for weight_name, array in zip(names, arrays, strict=True):
                group.create_dataset(weight_name.decode(), data=array)
    return path


def test_a_legacy_file_is_read_in_its_layers_order_and_must_match_the_network(tmp_path: Path) -> None:
    """Keras loads a legacy HDF5 file by position (its layer names depend on what Keras built before),
    so the file's names do not matter, and its count and shapes must be the network's."""
    description = network_description("vgg16", "features")
    drawn = {f"conv2d_{i}": [np.full(shape, i, np.float32) for _, shape in variables]
             for i, (_, variables) in enumerate(description.weights)}  # fmt: skip
    network = described.DescribedNetwork(
        description, read_legacy_h5(_legacy_h5(tmp_path / "a.h5", drawn)), "a"
    )
    assert network.get_layer("block3_conv2").get_weights()[0].max() == 5  # the sixth layer with weights
    missing = dict(drawn)
    del missing["conv2d_5"]
    with pytest.raises(WeightsFormatError, match="holds 12 layers with weights; the network has 13"):
        described.DescribedNetwork(description, read_legacy_h5(_legacy_h5(tmp_path / "m.h5", missing)), "m")
    reshaped = dict(drawn, conv2d_0=[np.zeros((3, 3, 3, 8), np.float32), np.zeros(8, np.float32)])
    with pytest.raises(WeightsFormatError, match="block1_conv1 has weights of shapes"):
        described.DescribedNetwork(description, read_legacy_h5(_legacy_h5(tmp_path / "r.h5", reshaped)), "r")
    by_name = {layer: arrays for (layer, _), arrays in zip(description.weights, drawn.values(), strict=True)}
    del by_name["block3_conv2"]
    with pytest.raises(WeightsFormatError, match="no weights for the layer block3_conv2"):
        described.DescribedNetwork(description, by_name, "state dict")
    (tmp_path / "text.h5").write_text("not HDF5")
    with pytest.raises(WeightsFormatError, match="not a Keras weights file"):
        read_legacy_h5(tmp_path / "text.h5")
    with h5py.File(tmp_path / "strings.h5", "w") as f:
        f.attrs["layer_names"] = [b"fc"]
        f.create_group("fc").attrs["weight_names"] = [b"fc/kernel:0"]
        f["fc"].create_dataset("fc/kernel:0", data=np.array([b"text"]))
    with pytest.raises(WeightsFormatError, match="not floating-point"):
        read_legacy_h5(tmp_path / "strings.h5")
