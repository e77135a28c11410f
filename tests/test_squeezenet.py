"""SqueezeNet 1.1: torchvision-format checkpoints (legacy and zip), converted, against a NumPy reference."""

import hashlib
import pickle
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import imagenet_zoo
from imagenet_zoo.data.preprocess import normalize
from imagenet_zoo.errors import WeightsFormatError
from imagenet_zoo.registry import Registry, default_registry
from imagenet_zoo.weights.torch_pickle import load_state_dict
from tests.conftest import FileServer
from tests.torch_files import write_legacy, write_zip

# torchvision squeezenet1_1: features index -> (squeeze, expand) channels of each Fire module
FIRES = {
    3: (16, 64),
    4: (16, 64),
    6: (32, 128),
    7: (32, 128),
    9: (48, 192),
    10: (48, 192),
    11: (64, 256),
    12: (64, 256),
}
POOL_AFTER = {1, 4, 7}  # a 3x3/2 ceil-mode max-pool follows features.1 (ReLU), features.4 and features.7


def torchvision_state(seed: int = 0) -> dict[str, np.ndarray]:
    """Random He-initialised weights under torchvision's key names and OIHW layout."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}

    def conv(name: str, out: int, inp: int, k: int) -> None:
        state[f"{name}.weight"] = rng.normal(0, np.sqrt(2 / (inp * k * k)), (out, inp, k, k)).astype(
            np.float32
        )
        state[f"{name}.bias"] = rng.uniform(0, 0.05, out).astype(np.float32)

    conv("features.0", 64, 3, 3)
    channels = 64
    for index, (squeeze, expand) in FIRES.items():
        conv(f"features.{index}.squeeze", squeeze, channels, 1)
        conv(f"features.{index}.expand1x1", expand, squeeze, 1)
        conv(f"features.{index}.expand3x3", expand, squeeze, 3)
        channels = 2 * expand
    conv("classifier.1", 1000, 512, 1)
    return state


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    windows = sliding_window_view(x, w.shape[2:], axis=(1, 2))[:, ::stride, ::stride]  # N,Ho,Wo,C,kh,kw
    return np.einsum("nhwcij,ocij->nhwo", windows, w, optimize=True) + b


def _pool_ceil(x: np.ndarray) -> np.ndarray:
    size = x.shape[1]
    out = -(-(size - 3) // 2) + 1
    x = np.pad(
        x,
        ((0, 0), (0, 2 * (out - 1) + 3 - size), (0, 2 * (out - 1) + 3 - size), (0, 0)),
        constant_values=-np.inf,
    )
    return sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-1, -2))


def numpy_squeezenet(x: np.ndarray, s: dict[str, np.ndarray]) -> np.ndarray:
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    x = _pool_ceil(relu(_conv(x, s["features.0.weight"], s["features.0.bias"], stride=2)))
    for index in FIRES:
        sq = relu(_conv(x, s[f"features.{index}.squeeze.weight"], s[f"features.{index}.squeeze.bias"]))
        e1 = relu(_conv(sq, s[f"features.{index}.expand1x1.weight"], s[f"features.{index}.expand1x1.bias"]))
        e3 = relu(
            _conv(sq, s[f"features.{index}.expand3x3.weight"], s[f"features.{index}.expand3x3.bias"], pad=1)
        )
        x = np.concatenate([e1, e3], axis=-1)
        if index in POOL_AFTER:
            x = _pool_ceil(x)
    return relu(_conv(x, s["classifier.1.weight"], s["classifier.1.bias"])).mean(axis=(1, 2))


def test_both_torch_formats_read_alike(tmp_path: Path) -> None:
    state = torchvision_state()
    for path in (write_legacy(tmp_path / "legacy.pth", state), write_zip(tmp_path / "zip.pth", state)):
        loaded = load_state_dict(path)
        assert list(loaded) == list(state)
        for key in state:
            np.testing.assert_array_equal(loaded[key], state[key])


def test_a_zip_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    import os

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "archive/data.pkl",
            pickle.dumps({"x": (os.system, ("true",))}, protocol=2),  # names os.system: must be refused
        )
        z.writestr("archive/data/0", b"")
    with pytest.raises(WeightsFormatError, match="refusing"):
        load_state_dict(path)


def test_the_preprocessing_is_torchvisions() -> None:
    config = default_registry().get("squeezenet1_1").spec.data_config
    assert (config.input_size, config.resize_shorter_to, config.mode, config.interpolation) == (
        224,
        256,
        "torch",
        "bilinear",
    )


@pytest.mark.slow
def test_converted_checkpoint_matches_a_numpy_reference(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = torchvision_state()
    registered = default_registry().get("squeezenet1_1")
    served = write_zip(file_server.root / registered.spec.weights.filename, state)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    weights = replace(
        registered.spec.weights, hash=digest[:8], size=served.stat().st_size
    )  # a torchvision-style prefix
    registry = Registry([replace(registered, spec=replace(registered.spec, weights=weights))])
    monkeypatch.setenv("IMAGENET_ZOO_MIRROR", file_server.url)

    model = imagenet_zoo.create_model("squeezenet1_1", registry=registry, progress=False)
    assert file_server.requests == [f"/{registered.spec.weights.filename}"]
    pixels = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    x = normalize(pixels, "torch")  # the Keras model's input: torchvision's scaling
    expected = numpy_squeezenet(x.astype(np.float64), {k: v.astype(np.float64) for k, v in state.items()})
    ours = np.asarray(model.predict_on_batch(x))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())

    # OpenVINO, same weights, given the pixels: it scales them inside its graph.
    fast = imagenet_zoo.load("squeezenet1_1", registry=registry, progress=False)
    np.testing.assert_allclose(
        fast.engine.infer(pixels), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )
