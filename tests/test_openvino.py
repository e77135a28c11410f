"""The OpenVINO engine: parity with Keras, the IR cache, cold start without TensorFlow, bf16 and int8."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import imagenet_zoo
from imagenet_zoo.cli import main
from imagenet_zoo.data.images import decode_image
from imagenet_zoo.engines import openvino as ov_engine
from imagenet_zoo.engines import openvino_ir
from imagenet_zoo.engines.openvino_ir import IR_FILE, gflops_per_image, ir_dir
from imagenet_zoo.errors import QuantizedModelMissingError, UnsupportedPrecisionError
from imagenet_zoo.registry import default_registry
from tests.conftest import SAMPLE_DIR, skimage_photo

PHOTOS = [skimage_photo(n) for n in ("coffee.png", "chelsea.png", "rocket.jpg", "astronaut.png")] + sorted(
    SAMPLE_DIR.iterdir()
)[::25]


def _top5(p: np.ndarray) -> list[list[int]]:
    return np.argsort(-p, axis=1, kind="stable")[:, :5].tolist()  # type: ignore[no-any-return]


def test_fp32_matches_keras_on_real_photos(with_lite0: Path) -> None:
    images = [decode_image(p).image for p in PHOTOS]
    keras = imagenet_zoo.load("lite0", engine="keras").predict_proba(images)
    openvino = imagenet_zoo.load("lite0", engine="openvino").predict_proba(images)
    assert np.abs(openvino - keras).max() < 1e-4
    assert _top5(openvino) == _top5(keras)


def test_openvino_is_the_default_engine(with_lite0: Path) -> None:
    assert imagenet_zoo.load("lite0").engine.name == "openvino"


def test_the_ir_is_converted_once_and_reused(with_lite0: Path) -> None:
    model = default_registry().get("lite0")
    xml = openvino_ir.convert_to_ir(model, progress=False)
    assert xml == ir_dir(model) / IR_FILE and (xml.parent / "model.bin").is_file()
    mtime = xml.stat().st_mtime_ns
    imagenet_zoo.load("lite0")
    assert xml.stat().st_mtime_ns == mtime
    assert [
        p.name for p in xml.parent.parent.iterdir() if p.name.startswith(".")
    ] == []  # no temporary folders


def test_the_ir_key_covers_weights_input_contract_and_openvino_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = default_registry().get("lite0")
    base = ir_dir(model)
    other_weights = replace(
        model, spec=replace(model.spec, weights=replace(model.spec.weights, hash="0" * 64))
    )
    other_size = replace(
        model, spec=replace(model.spec, data_config=replace(model.spec.data_config, input_size=240))
    )
    assert len({base, ir_dir(other_weights), ir_dir(other_size), ir_dir(model, "int8")}) == 4
    import openvino

    monkeypatch.setattr(openvino, "get_version", lambda: "9999.0")
    assert ir_dir(model) != base


def test_a_cold_classify_from_the_cached_ir_never_imports_tensorflow_or_ray(with_lite0: Path) -> None:
    imagenet_zoo.load("lite0")  # make sure the IR is cached
    script = (
        "import json, sys\n"
        "from imagenet_zoo.cli import main\n"
        f"code = main(['classify', {str(PHOTOS[0])!r}, '--format', 'json'])\n"
        "heavy = {'tensorflow', 'keras', 'nncf', 'torch', 'ray'}\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(json.dumps(heavy), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["predictions"][0]["label"] == "espresso"
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []


def test_precision_errors(with_lite0: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnsupportedPrecisionError, match="keras engine runs fp32 only"):
        imagenet_zoo.load("lite0", engine="keras", precision="bf16")
    with pytest.raises(
        QuantizedModelMissingError, match="imagenet-zoo quantize efficientnet_lite0 --calibration"
    ):
        imagenet_zoo.load("lite0", precision="int8")
    assert main(["classify", str(PHOTOS[0]), "--precision", "int8"]) == 1
    assert "imagenet-zoo quantize" in capsys.readouterr().err


def test_bf16_is_refused_clearly_where_the_cpu_lacks_it(
    with_lite0: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ov_engine, "cpu_supports_bf16", lambda: False)
    with pytest.raises(UnsupportedPrecisionError, match="bf16 needs a CPU"):
        imagenet_zoo.load("lite0", precision="bf16")


def test_flop_count_of_the_ir_matches_the_spec(with_lite0: Path) -> None:
    model = default_registry().get("lite0")
    xml = openvino_ir.convert_to_ir(model, progress=False)
    assert gflops_per_image(xml) == pytest.approx(model.spec.gflops, rel=0.01)


def test_quantize_needs_a_folder_with_photos(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    for argv in (
        ["quantize", "lite0", "--calibration", str(empty)],
        ["quantize", "lite0", "--calibration", "/nope"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


@pytest.mark.slow
def test_bf16_and_int8_keep_top1_within_a_point_of_fp32(
    with_lite0: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"  # the int8 model must not leak into the session's shared cache
    shutil.copytree(with_lite0, home)
    monkeypatch.setenv("IMAGENET_ZOO_HOME", str(home))
    files = sorted(SAMPLE_DIR.iterdir())
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for file in files[::2]:  # calibrate on half of the photos
        shutil.copy(file, calibration / file.name)
    (calibration / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    assert main(["quantize", "lite0", "--calibration", str(calibration), "--samples", "100"]) == 0
    assert "skipped unreadable calibration file" in capsys.readouterr().err

    truth = [f.name[:9] for f in files]
    precisions = ["fp32", "int8"]
    if ov_engine.cpu_supports_bf16():
        precisions.insert(1, "bf16")
    else:  # a CPU without native bf16 must refuse it clearly; int8 is still measured
        with pytest.raises(UnsupportedPrecisionError):
            imagenet_zoo.load("lite0", precision="bf16")
    top1: dict[str, list[str]] = {}
    for precision in precisions:
        classifier = imagenet_zoo.load("lite0", precision=precision, batch_size=16)
        top1[precision] = [r.top.synset for r in classifier.classify([str(f) for f in files], top=1)]
    accuracy = {p: np.mean([a == t for a, t in zip(top1[p], truth, strict=True)]) for p in top1}
    agreement = {p: np.mean([a == b for a, b in zip(top1[p], top1["fp32"], strict=True)]) for p in top1}
    print(
        f"EfficientNet-Lite0 top-1 on {len(files)} shared photos: {accuracy}; "
        f"agreement with fp32: {agreement}"
    )
    assert accuracy["fp32"] >= 0.88
    for precision in precisions[1:]:
        assert abs(accuracy[precision] - accuracy["fp32"]) <= 0.01
        assert agreement[precision] >= 0.9


def test_readers_never_see_a_half_replaced_model_folder(tmp_path: Path) -> None:
    """The replace deleted the old folder before renaming the new one in: a reader could open the .xml of
    one version and find the .bin gone, or missing. Each reader now resolves one whole version."""
    import threading

    from imagenet_zoo.engines.cache import atomic_dir, resolved_file

    dest = tmp_path / "model-int8"
    with atomic_dir(dest) as version:
        (version / "model.xml").write_text("0")
        (version / "model.bin").write_text("0")
    seen, failures, done = set(), [], threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                xml = resolved_file(dest, "model.xml")
                pair = (xml.read_text(), (xml.parent / "model.bin").read_text())
            except OSError as exc:
                failures.append(repr(exc))
                continue
            if pair[0] != pair[1]:
                failures.append(f"mixed versions {pair}")
            seen.add(pair[0])

    thread = threading.Thread(target=reader)
    thread.start()
    for n in range(1, 200):
        with atomic_dir(dest) as version:
            (version / "model.xml").write_text(str(n))
            (version / "model.bin").write_text(str(n))
    done.set()
    thread.join(10)
    assert failures == [] and len(seen) > 1
