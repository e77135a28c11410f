"""`imagenet-zoo export`: every family written as ONNX and as an OpenVINO IR, run by ONNX Runtime and by
OpenVINO (software this project did not write) against the engine's own answers; `model.json` and Triton's
`config.pbtxt` as their readers parse them; what it refuses, and what it never overwrites."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import openvino as ov
import pytest
from google.protobuf import text_format

from imagenet_zoo.api import check_config, resolve_model
from imagenet_zoo.data.preprocess import normalization, normalize
from imagenet_zoo.engines.network import network_graph
from imagenet_zoo.engines.registry import EngineRequest, get_engine
from imagenet_zoo.export import model_json
from imagenet_zoo.export.onnx_graph import onnx_model
from imagenet_zoo.export.openvino_model import probabilities_model
from imagenet_zoo.pipeline import LoadConfig
from tests.conftest import SAMPLE_DIR, run_cli
from tests.fakes import constant_bundle

FAMILIES = ["resnet50", "inception_v3", "xception", "squeezenet1_1", "efficientnet_lite0"]


def _probabilities(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def _engine_probabilities(name: str, pixels: np.ndarray) -> np.ndarray:
    """The OpenVINO engine's answer for uint8 pixels (which it scales inside its graph, as the ONNX file
    does inside its own)."""
    engine = check_config(LoadConfig(model=name, engine="openvino"), progress=False, random_weights=True)
    return _probabilities(engine.load_engine().infer(pixels))


def _onnx_session(name: str) -> ort.InferenceSession:
    model = resolve_model(name)
    graph = network_graph(model, EngineRequest(random_weights=True, progress=False))
    scaling = normalization(model.spec.data_config.mode)
    proto = onnx_model(graph, scaling, name=name, classes=model.spec.num_classes)
    return ort.InferenceSession(proto.SerializeToString())


def _openvino_export(name: str) -> ov.CompiledModel:
    model = resolve_model(name)
    xml = get_engine("openvino").prepare(model, EngineRequest(random_weights=True, progress=False))  # type: ignore[misc]
    exported = probabilities_model(ov.Core().read_model(str(xml)), name=name)
    return ov.Core().compile_model(exported, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _pixels(name: str, count: int = 2) -> np.ndarray:
    size = resolve_model(name).spec.data_config.input_size
    return np.random.default_rng(7).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


@pytest.mark.slow
@pytest.mark.parametrize("name", [*FAMILIES, pytest.param("vgg16", marks=pytest.mark.slow)])
def test_every_family_round_trips_through_onnx_runtime_and_openvino(name: str) -> None:
    pixels = _pixels(name)
    expected = _engine_probabilities(name, pixels)
    (onnx_answer,) = _onnx_session(name).run(None, {"pixels": pixels})
    openvino_answer = _openvino_export(name)(pixels)["probabilities"]
    for answer in (onnx_answer, openvino_answer):
        np.testing.assert_allclose(answer, expected, atol=1e-5)
        assert (answer.argmax(axis=1) == expected.argmax(axis=1)).all()


def readme_client() -> str:
    """The README's ONNX Runtime client, as a user would copy it."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("A client with Pillow and ONNX Runtime alone") :]
    return section[section.index("```python\n") + len("```python\n") : section.index("\n```\n")]


@pytest.mark.slow
def test_the_readme_client_answers_as_classify_on_the_shared_photos(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], lite0_classifier: object
) -> None:
    code, _, err = run_cli(["export", "lite0", "--format", "onnx", "--output", str(tmp_path / "x")], capsys)
    assert code == 0, err
    client = tmp_path / "client.py"
    client.write_text(readme_client())
    photos = sorted(SAMPLE_DIR.iterdir())
    run = subprocess.run([sys.executable, str(client), str(tmp_path / "x"), *map(str, photos)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    answers = [line.split()[1] for line in run.stdout.splitlines()]
    theirs = lite0_classifier.classify([str(p) for p in photos], top=1)  # type: ignore[attr-defined]
    zoo = [r.predictions[0].synset for r in theirs]
    labels = [p.name.split("_")[0] for p in photos]
    assert len(answers) == 200
    assert np.mean([a == z for a, z in zip(answers, zoo, strict=True)]) >= 0.995
    ours = np.mean([a == t for a, t in zip(answers, labels, strict=True)])
    assert abs(ours - np.mean([z == t for z, t in zip(zoo, labels, strict=True)])) <= 0.0025


def test_model_json_says_how_to_feed_the_model() -> None:
    spec = resolve_model("lite0").spec
    meta = model_json(spec, "onnx", "model.onnx")
    assert meta == {
        "model": "efficientnet_lite0",
        "format": "onnx",
        "file": "model.onnx",
        "input": {"name": "pixels", "dtype": "uint8", "shape": [-1, 224, 224, 3]},
        "resize": {"mode": "crop", "shorter_side": 256, "interpolation": "bilinear"},
        "output": {"name": "probabilities", "kind": "probabilities"},
        "classes": [label.synset for label in spec.labels],
    }
    assert meta["classes"][0] == "n01440764" and len(meta["classes"]) == 1000


@pytest.mark.parametrize("format", ["onnx", "openvino"])
def test_a_bundle_as_a_triton_repository(
    format: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tritonclient.grpc import model_config_pb2

    bundle = constant_bundle(tmp_path / "dogs", "other")
    code, out, err = run_cli(
        ["export", str(bundle), "--format", format, "--output", str(tmp_path / "repo"), "--triton"], capsys
    )
    assert code == 0, err
    [home] = (tmp_path / "repo").iterdir()
    config = text_format.Parse((home / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == home.name and config.max_batch_size > 0 and config.HasField("dynamic_batching")
    assert config.backend == {"onnx": "onnxruntime", "openvino": "openvino"}[format]
    assert [list(config.input[0].dims), list(config.output[0].dims)] == [[224, 224, 3], [2]]
    assert (home / "labels.txt").read_text().split() == ["dog", "other"]
    meta = json.loads((home / "model.json").read_text())
    pixels = _pixels("lite0", 3)
    if format == "onnx":
        assert meta["file"] == "1/model.onnx"
        (answer,) = ort.InferenceSession(str(home / meta["file"])).run(None, {"pixels": pixels})
    else:
        assert meta["file"] == "1/model.xml"
        answer = ov.Core().compile_model(str(home / meta["file"]), "CPU")(pixels)["probabilities"]
    assert [meta["classes"][i] for i in answer.argmax(axis=1)] == ["other"] * 3
    assert str(home / "model.json") in out


def test_a_neighbour_vote_bundle_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from imagenet_zoo.models._keras import import_keras
    from imagenet_zoo.models.bundle import FEATURES_LAYER, save_bundle
    from imagenet_zoo.models.neighbour_vote import NeighbourVote

    keras = import_keras()
    rng = np.random.default_rng(1)
    inputs = keras.Input((224, 224, 3))
    features = keras.layers.Identity(name=FEATURES_LAYER)(keras.layers.GlobalAveragePooling2D()(inputs))
    vote = NeighbourVote(rng.normal(size=(6, 3)).astype(np.float32), np.array([0, 1, 0, 1, 0, 1]),
                         rng.normal(size=3), classes=2, temperature=0.1)  # fmt: skip
    network = keras.Model(inputs, vote(features), name="bundle")
    spec = resolve_model("lite0").spec
    bundle = save_bundle(
        tmp_path / "votes", network.save, num_params=0, classes=["a", "b"], base=spec, extra={}
    )
    code, _, err = run_cli(
        ["export", str(bundle), "--format", "onnx", "--output", str(tmp_path / "x")], capsys
    )
    assert code == 0, err
    pixels = _pixels("lite0", 4)
    (answer,) = ort.InferenceSession(str(tmp_path / "x" / "model.onnx")).run(None, {"pixels": pixels})
    expected = _probabilities(np.asarray(network(normalize(pixels, spec.data_config.mode))))
    np.testing.assert_allclose(answer, expected, atol=1e-5)


def test_what_it_refuses(with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    refusals = {
        "must be a folder": ["--format", "onnx", "--output", str(a_file)],
        "int8 exports as OpenVINO": [
            "--format",
            "onnx",
            "--precision",
            "int8",
            "--output",
            str(tmp_path / "x"),
        ],
        "invalid choice": ["--format", "tflite", "--output", str(tmp_path / "x")],
        "parent folder does not exist": ["--format", "onnx", "--output", str(tmp_path / "no" / "x")],
    }
    for message, argv in refusals.items():
        code, _, err = run_cli(["export", "lite0", *argv], capsys)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
    assert a_file.read_text() == "mine" and not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]  # no temporary folder left behind


def test_a_bundle_whose_head_cannot_be_exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from imagenet_zoo.models._keras import import_keras
    from imagenet_zoo.models.bundle import FEATURES_LAYER, save_bundle

    keras = import_keras()
    inputs = keras.Input((224, 224, 3))
    features = keras.layers.Identity(name=FEATURES_LAYER)(keras.layers.GlobalAveragePooling2D()(inputs))
    logits = keras.layers.Dense(2)(keras.layers.LayerNormalization(name="odd_norm")(features))
    odd = keras.Model(inputs, logits, name="bundle")
    bundle = save_bundle(tmp_path / "odd", odd.save, num_params=odd.count_params(), classes=["a", "b"],
                         base=resolve_model("lite0").spec, extra={})  # fmt: skip
    code, _, err = run_cli(
        ["export", str(bundle), "--format", "onnx", "--output", str(tmp_path / "x")], capsys
    )
    assert code == 2 and "cannot be exported" in err and "odd_norm" in err, err
    assert not (tmp_path / "x").exists()


def test_it_never_writes_over_a_folder_it_did_not_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = constant_bundle(tmp_path / "b", "dog")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "model.json").write_text("mine too")
    code, _, err = run_cli(["export", str(bundle), "--format", "onnx", "--output", str(out)], capsys)
    assert code == 2 and "--overwrite" in err
    assert (out / "model.json").read_text() == "mine too"
    code, _, err = run_cli(
        ["export", str(bundle), "--format", "onnx", "--output", str(out), "--overwrite"], capsys
    )
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine"  # only the exported files are replaced
    assert json.loads((out / "model.json").read_text())["format"] == "onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "out"]


@pytest.mark.parametrize("mode", ["caffe", "tf", "lite", "torch"])
def test_the_scaling_inside_is_the_pipelines(mode: str) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    scaling = normalization(mode)  # type: ignore[arg-type]
    inside = (pixels[..., list(scaling.channels)].astype(np.float32) - scaling.mean) / scaling.std
    np.testing.assert_allclose(inside, normalize(pixels, mode), atol=2e-5)  # type: ignore[arg-type]


def test_overwrite_never_writes_through_a_link(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = constant_bundle(tmp_path / "b", "dog")
    precious = tmp_path / "precious.onnx"
    precious.write_bytes(b"someone else's")
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.json").write_text("mine")
    (out / "model.onnx").symlink_to(precious)
    argv = ["export", str(bundle), "--format", "onnx", "--output", str(out), "--overwrite"]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "in the way" in err, err
    assert precious.read_bytes() == b"someone else's" and (out / "model.json").read_text() == "mine"
