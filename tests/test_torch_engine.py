"""The torch engine on the CPU: real EfficientNet-Lite0 weights on the shared photos, bf16, the cache, and
what it refuses. Each tricky Keras operation is checked against Keras in `test_graph.py`.

Every zoo family is checked against Keras in `test_keras_networks.py` (same weights, logits within 1e-4),
and bundles with both heads in `test_explain.py`."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import imagenet_zoo
from imagenet_zoo.engines.cpu import native_bf16
from imagenet_zoo.engines.graph import same_pads, translate
from imagenet_zoo.errors import (
    UnsupportedPrecisionError,
    UsageError,
    WeightsIntegrityError,
)
from tests.conftest import SAMPLE_DIR

torch = pytest.importorskip("torch")

from imagenet_zoo.engines.torch_graph import GraphModule  # noqa: E402
from tests.keras_graphs import keras, layers, randomized  # noqa: E402

PHOTOS = sorted(SAMPLE_DIR.glob("*.JPEG"))


def test_same_padding_is_tensorflows() -> None:
    assert same_pads(224, 3, 2) == (0, 1) and same_pads(225, 3, 2) == (1, 1) and same_pads(7, 1, 1) == (0, 0)


@pytest.fixture(scope="module")
def lite0_inputs(lite0_classifier: Any) -> np.ndarray:
    return lite0_classifier.preprocess_images([imagenet_zoo.decode_image(p).image for p in PHOTOS])


@pytest.mark.slow
def test_lite0_real_weights_give_keras_answers_on_the_shared_photos(
    with_lite0: Path, lite0_inputs: np.ndarray
) -> None:
    """The reference is Keras itself, with the packaged weights; all 200 photos, same top-5."""
    reference = imagenet_zoo.load_engine("lite0", engine="keras", progress=False)
    translated = imagenet_zoo.load_engine("lite0", engine="torch", device="cpu", progress=False)
    expected = np.concatenate([reference.infer(chunk) for chunk in np.array_split(lite0_inputs, 8)])
    ours = translated.infer(lite0_inputs)
    assert np.abs(ours - expected).max() <= 1e-4
    assert np.argsort(-ours, axis=1)[:, :5].tolist() == np.argsort(-expected, axis=1)[:, :5].tolist()


@pytest.mark.slow
@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16: the torch engine refuses it")
def test_bf16_on_the_cpu_agrees_with_fp32(
    with_lite0: Path, lite0_inputs: np.ndarray, lite0_classifier: Any
) -> None:
    """bf16 keeps 8 bits of each activation: alone, it changes the top-1 of 6 of Lite0's 200 photos
    (OpenVINO's bf16: 4), every one a close call, which the engine computes again in fp32."""
    fp32 = imagenet_zoo.load_engine("lite0", engine="torch", device="cpu", progress=False).infer(lite0_inputs)
    bf16: Any = imagenet_zoo.load_engine(
        "lite0", engine="torch", device="cpu", precision="bf16", progress=False
    )
    half = bf16.infer(lite0_inputs)
    assert len(lite0_inputs) == 200 and (fp32.argmax(1) == half.argmax(1)).mean() >= 0.99
    assert bf16.close_calls <= 0.2 * len(lite0_inputs)  # what it costs: a fifth of an fp32 pass at most
    synsets = [label.synset for label in lite0_classifier.labels]
    truth = [synsets.index(p.name.split("_")[0]) for p in PHOTOS]
    accuracy = [(rows.argmax(1) == truth).mean() for rows in (fp32, half)]
    assert abs(accuracy[0] - accuracy[1]) <= 0.005


def _gaps(logits: np.ndarray) -> np.ndarray:
    best = np.sort(logits, axis=1)
    return best[:, -1] - best[:, -2]  # type: ignore[no-any-return]


def test_close_calls_in_bf16_are_the_fp32_graphs_answers(with_lite0: Path, lite0_inputs: np.ndarray) -> None:
    """On any CPU (bf16 emulated where it is not native): the rows whose two best bf16 logits are closer
    than the margin are exactly the fp32 graph's rows, and only those are computed again."""
    from imagenet_zoo.data.preprocess import normalization
    from imagenet_zoo.engines.registry import EngineRequest
    from imagenet_zoo.engines.torch import CLOSE_CALL_MARGIN, TorchEngine, translated, translated_graph
    from imagenet_zoo.registry import default_registry

    folder = translated(default_registry().get("lite0"), EngineRequest(device="cpu", progress=False))
    x, lite = lite0_inputs[:16], normalization("lite")
    fp32 = TorchEngine(translated_graph(folder, "cpu")[0], "fp32", "cpu", lite).infer(x)
    engine = TorchEngine(translated_graph(folder, "cpu")[0], "bf16", "cpu", lite)
    assert engine.close_call_margin == CLOSE_CALL_MARGIN["bf16"] > 0
    engine.close_call_margin = 0.0
    plain = engine.infer(x)
    assert engine.close_calls == 0 and np.abs(plain - fp32).max() > 1e-3  # bf16 differs
    engine.close_call_margin = float(np.median(_gaps(plain)))
    close = _gaps(plain) < engine.close_call_margin
    checked = engine.infer(x)
    assert engine.close_calls == close.sum() > 0
    np.testing.assert_allclose(checked[close], fp32[close], atol=1e-5)
    np.testing.assert_array_equal(checked[~close], plain[~close])
    unchecked = TorchEngine(translated_graph(folder, "cpu")[0], "bf16", "cpu", lite, check_close_calls=False)
    assert unchecked.reference is None


def test_only_logits_of_real_weights_check_close_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Features rank nothing, and random weights (benchmarks) make every row a close call."""
    from imagenet_zoo.engines import torch as torch_engine
    from imagenet_zoo.engines.registry import EngineRequest
    from imagenet_zoo.registry import default_registry

    checked: list[bool] = []
    monkeypatch.setattr(torch_engine, "translated", lambda model, request: Path("unused"))
    monkeypatch.setattr(torch_engine, "translated_graph", lambda folder, device, threads: (None, None))
    monkeypatch.setattr(torch_engine, "TorchEngine", lambda *a, **k: checked.append(k["check_close_calls"]))
    lite0 = default_registry().get("lite0")
    for request in (
        EngineRequest(precision="bf16"),
        EngineRequest(precision="bf16", task="features"),
        EngineRequest(precision="bf16", random_weights=True),
    ):
        torch_engine.load(lite0, request)
    assert checked == [True, False, False]


def test_grad_cam_close_calls_are_the_fp32_graphs_maps() -> None:
    """Grad-CAM in bf16: a close call's logits, map and explained class come from the fp32 graph."""
    import copy

    from imagenet_zoo.data.preprocess import normalization
    from imagenet_zoo.engines.torch import TorchGradCamEngine

    inputs = keras.Input((12, 12, 3))
    features = layers.Conv2D(8, 3, activation="relu")(inputs)
    logits = layers.Dense(6)(layers.GlobalAveragePooling2D()(features))
    graph = translate(randomized(keras.Model(inputs, [logits, features])))
    module = GraphModule(graph.spec, {k: torch.from_numpy(v) for k, v in graph.weights.items()}).eval()
    pixels = np.random.default_rng(1).integers(0, 256, size=(8, 12, 12, 3), dtype=np.uint8)
    choice = [None, 2, None, 4, None, None, 1, None]
    scaling = normalization("tf")

    half = TorchGradCamEngine(copy.deepcopy(module), "bf16", "cpu", scaling)
    half.close_call_margin = 0.0  # bf16 alone
    bf16 = half.explain(pixels, choice)
    half.close_call_margin = float(np.median(_gaps(bf16[0])))
    checked = half.explain(pixels, choice)
    exact = TorchGradCamEngine(copy.deepcopy(module), "fp32", "cpu", scaling).explain(pixels, choice)
    close = _gaps(bf16[0]) < half.close_call_margin
    assert half.close_calls == close.sum() > 0 and np.abs(bf16[0] - exact[0]).max() > 1e-3
    for ours, theirs, rounded in zip(checked, exact, bf16, strict=True):
        np.testing.assert_allclose(ours[close], theirs[close], atol=1e-5)
        np.testing.assert_array_equal(ours[~close], rounded[~close])


def test_a_warm_load_imports_neither_tensorflow_keras_nor_openvino(with_lite0: Path) -> None:
    imagenet_zoo.load("lite0", engine="torch", device="cpu", progress=False)  # translated and cached
    code = (
        "import sys, imagenet_zoo\n"
        "c = imagenet_zoo.load('lite0', engine='torch', device='cpu', progress=False)\n"
        f"print(c.classify({str(PHOTOS[0])!r}).predictions[0].label)\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'openvino') if m in sys.modules))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True
    )
    assert run.stdout.splitlines() == ["tench", "[]"], run.stderr


def test_a_changed_cached_file_is_refused(
    lite0_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from imagenet_zoo.engines.registry import EngineRequest

    home = tmp_path / "home"  # a copy: the session's cache stays whole
    shutil.copytree(lite0_home, home, symlinks=True)
    monkeypatch.setenv("IMAGENET_ZOO_HOME", str(home))
    from imagenet_zoo.engines.torch import WEIGHTS_FILE, translated
    from imagenet_zoo.registry import default_registry

    folder = translated(default_registry().get("lite0"), EngineRequest(device="cpu", progress=False))
    weights = folder.resolve() / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-10] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="changed since it was written"):
        imagenet_zoo.load("lite0", engine="torch", device="cpu", progress=False)


def test_what_it_refuses_says_what_works(with_lite0: Path) -> None:
    with pytest.raises(UnsupportedPrecisionError, match="int8 needs --engine openvino"):
        imagenet_zoo.load("lite0", engine="torch", precision="int8")
    with pytest.raises(UnsupportedPrecisionError, match="fp16 runs on the GPU only"):
        imagenet_zoo.load("lite0", engine="torch", device="cpu", precision="fp16")
    with pytest.MonkeyPatch.context() as patch:  # an AVX2 CPU: emulated bf16 ran 8x slower than fp32
        patch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
        with pytest.raises(UnsupportedPrecisionError, match="needs native bf16"):
            imagenet_zoo.load("lite0", engine="torch", device="cpu", precision="bf16")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no cuda device is available"):
            imagenet_zoo.load("lite0", engine="torch", device="cuda")


def test_features_equal_the_reference_engines(with_lite0: Path, lite0_inputs: np.ndarray) -> None:
    """What extract and train read: the pooled features, as the Keras model gives them."""
    reference = imagenet_zoo.load_engine("lite0", engine="openvino", features=True, progress=False)
    translated = imagenet_zoo.load_engine(
        "lite0", engine="torch", device="cpu", features=True, progress=False
    )
    batch = lite0_inputs[:16]
    np.testing.assert_allclose(translated.infer(batch), reference.infer(batch), atol=1e-4)


def test_the_service_runs_on_the_torch_engine(with_lite0: Path) -> None:
    from fastapi.testclient import TestClient

    from imagenet_zoo.pipeline import LoadConfig
    from imagenet_zoo.server import Settings, create_app

    settings = Settings(load=LoadConfig(engine="torch", device="cpu"), max_batch_size=4)
    with TestClient(create_app(settings)) as client:
        files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in PHOTOS[:3]]
        answer = client.post("/v1/classify/batch", files=files)
        assert answer.status_code == 200, answer.text
        labels = [r["predictions"][0]["label"] for r in answer.json()]
        assert labels[0] == "tench" and len(labels) == 3
        assert [row["engine"] for row in client.get("/v1/models").json()] == ["torch"]


def test_the_engine_ranks_where_it_computes_as_the_cpu_post_does(
    with_lite0: Path, lite0_inputs: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU only each photo's top-k leaves the device: the same classes and probabilities as the
    CPU's softmax and ranking of the logits, and what `classify` uses when nothing else is asked."""
    from imagenet_zoo.classifier import probabilities_of, ranking_of

    classifier = imagenet_zoo.load("lite0", engine="torch", device="cpu", progress=False)
    engine: Any = classifier.engine
    indices, probabilities = engine.infer_top(lite0_inputs[:64], 5)
    expected = ranking_of(probabilities_of(engine.infer(lite0_inputs[:64])), 5)
    assert indices.tolist() == expected.indices.tolist()
    np.testing.assert_allclose(probabilities, expected.probabilities, rtol=1e-5)
    ranked: list[int] = []
    infer_top = engine.infer_top
    monkeypatch.setattr(engine, "infer_top", lambda batch, k: ranked.append(k) or infer_top(batch, k))
    results = classifier.classify(PHOTOS[:10], top=3)
    with_groups = classifier.classify(PHOTOS[:10], top=3, groups=["dog"])  # needs every probability
    assert ranked == [3, 3]
    assert [[p.index for p in r.predictions] for r in results] == [
        [p.index for p in r.predictions] for r in with_groups
    ]
    scores = [[p.score for r in rows for p in r.predictions] for rows in (results, with_groups)]
    np.testing.assert_allclose(*scores, rtol=1e-5)


def test_rows_that_overflowed_are_close_calls_too() -> None:
    """bf16 or fp16 logits that overflowed came out as NaN scores (a 500 from the service's JSON encoder):
    inf - inf is NaN, which is never closer than the margin, so the row was not computed again."""
    from imagenet_zoo.engines.torch import close_call_rows

    inf, nan = float("inf"), float("nan")
    rows = [[5.0, 1.0, 0.0], [inf, inf, 0.0], [nan, 1.0, 0.0], [2.0, 1.9, 0.0], [1.0, -inf, 0.0]]
    logits = torch.tensor(rows)
    assert close_call_rows(logits, 0.75).tolist() == [1, 2, 3, 4]
    assert close_call_rows(logits[:, :1], 0.75).tolist() == [1, 2]
