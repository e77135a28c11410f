"""The `imagenet-zoo` command: output formats, exit codes, broken inputs, annotation, weights."""

import argparse
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli, skimage_photo
from tests.fakes import constant_bundle
from tests.test_images import png_header_only

COFFEE = str(skimage_photo("coffee.png"))
CHELSEA = str(skimage_photo("chelsea.png"))


@pytest.fixture
def broken_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "EmptyImageError": tmp_path / "empty.jpg",
        "UnsupportedImageError": tmp_path / "notes.txt",
        "CorruptImageError": tmp_path / "truncated.jpg",
        "ImageTooLargeError": tmp_path / "bomb.png",
        "ImageNotFoundError": tmp_path / "missing.jpg",
    }
    files["EmptyImageError"].write_bytes(b"")
    files["UnsupportedImageError"].write_text("not a photo")
    jpeg = Path(COFFEE).with_suffix(".png")
    Image.open(jpeg).convert("RGB").save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    files["CorruptImageError"].write_bytes(data[: len(data) // 3])
    files["ImageTooLargeError"].write_bytes(png_header_only(50_000, 50_000))
    return files


def test_json_output_keeps_input_order_and_reports_each_broken_file(
    with_lite0: Path, broken_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = list(broken_files.items())
    argv = [
        "classify",
        COFFEE,
        *(str(p) for _, p in bad[:3]),
        CHELSEA,
        *(str(p) for _, p in bad[3:]),
        "--format",
        "json",
    ]
    code, out, err = run_cli(argv, capsys)
    assert code == 1
    results = json.loads(out)
    assert [r["path"] for r in results] == argv[1:-2]
    coffee, chelsea = results[0], results[4]
    assert coffee["model"] == "efficientnet_lite0" and len(coffee["predictions"]) == 5
    assert coffee["predictions"][0] == {
        "rank": 1,
        "index": 967,
        "synset": "n07920052",
        "label": "espresso",
        "score": pytest.approx(0.957, abs=0.01),
    }
    assert coffee["input"] == {
        "format": "PNG",
        "width": 600,
        "height": 400,
        "mode": "RGB",
        "exif_transposed": False,
    }
    assert chelsea["predictions"][0]["index"] in {281, 282, 285}
    errors = {r["path"]: r["error"] for r in results if "error" in r}
    for error_type, path in broken_files.items():
        assert errors[str(path)]["type"] == error_type and errors[str(path)]["message"]
    assert "classified 2 of 7 photos" in err and "5 failed:" in err and "Traceback" not in err


def test_table_output_and_top_k(with_lite0: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["classify", COFFEE, "--top", "3"], capsys)
    assert code == 0
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0].startswith(COFFEE) and "PNG 600x400 RGB" in lines[0]
    assert len(lines) == 4 and "espresso" in lines[1] and "n07920052" in lines[1]


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "x.jpg", "--model", "alexnet"],
        ["classify", "x.jpg", "--top", "0"],
        ["classify", "x.jpg", "--top", "1001"],
        ["classify", "x.jpg", "--format", "xml"],
        ["classify"],
        ["weights", "fetch", "nosuchmodel"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == "" and "Traceback" not in err


def test_annotate_one_file(with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "labelled.png"
    assert run_cli(["classify", COFFEE, "--annotate", str(out_file)], capsys)[0] == 0
    with Image.open(out_file) as labelled, Image.open(COFFEE) as original:
        assert labelled.size == original.size
        pixels = np.asarray(labelled.convert("RGB"))
    assert (pixels[:5, -100:] == 0).all()  # the banner is drawn (text sits at its left end)
    assert (pixels[:25, :300, 0] > 200).any()  # and the (yellow) label is written on it


def test_annotate_a_batch_into_a_folder(
    with_lite0: Path, tmp_path: Path, broken_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "labelled"
    code, _, _ = run_cli(
        ["classify", COFFEE, CHELSEA, str(broken_files["EmptyImageError"]), "--annotate", str(out_dir)],
        capsys,
    )
    assert code == 1
    assert sorted(p.name for p in out_dir.iterdir()) == ["chelsea.jpg", "coffee.jpg"]


def test_folders_are_expanded(with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.open(COFFEE).save(folder / "b.png")
    Image.open(CHELSEA).save(folder / "sub" / "a.jpg")
    (folder / "readme.txt").write_text("skip me")
    code, out, _ = run_cli(["classify", str(folder), "--format", "json", "--top", "1"], capsys)
    assert code == 0 and [Path(r["path"]).name for r in json.loads(out)] == ["b.png"]
    code, out, _ = run_cli(["classify", str(folder), "--recursive", "--format", "json", "--top", "1"], capsys)
    assert code == 0 and [Path(r["path"]).name for r in json.loads(out)] == ["b.png", "a.jpg"]


def test_models_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0
    for name in ("vgg16", "vgg19", "resnet50", "inception_v3", "xception", "efficientnet_lite0"):
        assert name in out
    assert "299x299" in out and "138.4M" in out and "528 MiB" in out


def test_models_json_reports_cached_weights(with_lite0: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = {row["name"]: row for row in json.loads(run_cli(["models", "--format", "json"], capsys)[1])}
    assert rows["efficientnet_lite0"]["weights_present"] is True
    assert rows["vgg16"]["weights_present"] is False and rows["vgg16"]["top5"] == 90.1


def test_weights_commands(with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["weights", "path", "lite0"], capsys)
    assert code == 0 and Path(out.strip()).is_file()
    assert run_cli(["weights", "verify", "efficientnet_lite0"], capsys)[0] == 0
    code, out, _ = run_cli(["weights", "path", "vgg16"], capsys)
    assert code == 1 and out.strip().endswith("vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    assert run_cli(["weights", "path", "vgg16", "--notop"], capsys)[1].strip().endswith("_notop.h5")
    bogus = tmp_path / "bogus.h5"
    bogus.write_bytes(b"not the weights")
    code, _, err = run_cli(["weights", "import", "vgg16", str(bogus)], capsys)
    assert code == 1 and "WeightsIntegrityError" in err
    assert run_cli(["weights", "import", "vgg16"], capsys)[0] == 2
    assert run_cli(["weights", "import", "lite0", str(bogus)], capsys)[0] == 2


def test_offline_fetch_explains_weights_import(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IMAGENET_ZOO_MIRROR", "http://127.0.0.1:9")
    code, _, err = run_cli(["weights", "fetch", "resnet50"], capsys)
    assert code == 1 and "weights import resnet50 FILE" in err and "Traceback" not in err


def test_the_installed_command_prints_only_json_on_stdout(with_lite0: Path) -> None:
    command = Path(sys.executable).parent / "imagenet-zoo"
    proc = subprocess.run(
        [str(command), "classify", COFFEE, "--format", "json"],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["predictions"][0]["label"] == "espresso"


def test_a_bad_annotation_path_is_a_usage_error_after_the_results(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["classify", COFFEE, "--annotate", str(tmp_path / "out.unknownext")], capsys)
    assert code == 2 and "espresso" in out and "cannot write the annotated image" in err


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    """Every argument of every sub-command, with the command's name."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [
                    (f"{name} {a.dest}", a) for a in sub._actions if not isinstance(a, argparse._HelpAction)
                ]
    return found


def test_every_option_has_a_help_line() -> None:
    from imagenet_zoo.cli import build_parser

    options = _options(build_parser())
    assert len(options) > 80
    assert [name for name, action in options if not action.help] == []


def test_repeated_list_flags_add_up_and_single_ones_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from imagenet_zoo.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["bench", "--precision", "fp32", "--precision", "int8", "--batch-size", "1", "8"]
    )
    assert args.precision == ["fp32", "int8"] and args.batch_size == [1, 8] and args.model == ["resnet50"]
    args = parser.parse_args(["compare", "x.jpg", "--models", "lite0,vgg16", "--models", "resnet"])
    assert args.models == ["efficientnet_lite0", "vgg16", "resnet50"]
    assert parser.parse_args(["eval", "d", "--model", "lite0", "--model", "vgg16"]).model == [
        "efficientnet_lite0",
        "vgg16",
    ]
    code, _, err = run_cli(["classify", "x.jpg", "--precision", "fp32", "--precision", "int8"], capsys)
    assert code == 2 and "--precision was given twice" in err


def test_tensorflow_start_up_lines_never_reach_the_terminal(tmp_path: Path) -> None:
    """Loading a Keras model imports TensorFlow, whose C++ notices ignore TF_CPP_MIN_LOG_LEVEL."""
    from tests.fakes import constant_bundle

    bundle = constant_bundle(tmp_path / "bundle", "dog")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    command = [
        sys.executable,
        "-m",
        "imagenet_zoo",
        "classify",
        COFFEE,
        "--model",
        str(bundle),
        "--engine",
        "keras",
    ]
    run = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0 and "dog" in run.stdout
    assert run.stderr == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cluster", "local", "--output", "out", "--workers", "2"], "--workers is not used with --cluster"),
        (["--cluster", "local", "--output", "out", "--verbose"], "--verbose is not used with --cluster"),
        (["--output", "out.csv", "--format", "json"], "--format is not used with --output"),
        (["--format", "json", "--verbose"], "--verbose is not used with --format json"),
        (["--partition-format", "parquet"], "--partition-format is not used without --cluster"),
        (["--stall-timeout", "5"], "--stall-timeout is not used without --cluster"),
        (["--group-depth", "3"], "give --top-groups K too"),
        (
            ["--cluster", "local", "--output", "out", "--stall-timeout", "nan"],
            "--stall-timeout: expected a finite",
        ),
    ],
)
def test_an_option_a_path_does_not_use_is_refused_saying_why(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every option works on every path that takes it, or is refused before any work: none is dropped."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["classify", COFFEE, *argv], capsys)
    assert code == 2 and message in err and out == "" and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def many_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of 1,500 classes: more than ImageNet's 1,000 (a bundle may have up to 100,000)."""
    classes = [f"class {i:04d}" for i in range(1500)]
    return constant_bundle(tmp_path_factory.mktemp("many") / "bundle", "class 1234", classes)


def test_top_k_goes_up_to_the_models_classes(many_classes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--top was capped at 1,000 (and the service's top_k too), whatever the model's classes."""
    argv = [
        "classify",
        COFFEE,
        "--model",
        str(many_classes),
        "--engine",
        "keras",
        "--top",
        "1200",
        "--format",
        "json",
    ]
    code, out, _ = run_cli(argv, capsys)
    [result] = json.loads(out)
    assert (
        code == 0 and len(result["predictions"]) == 1200 and result["predictions"][0]["label"] == "class 1234"
    )
    code, _, err = run_cli([*argv[:-4], "--top", "1501"], capsys)
    assert code == 2 and "has 1,500 classes" in err

    from fastapi.testclient import TestClient

    from imagenet_zoo.pipeline import LoadConfig
    from imagenet_zoo.server import Settings, create_app

    settings = Settings(models=(str(many_classes),), load=LoadConfig(engine="keras"))
    photo = Path(COFFEE).read_bytes()
    with TestClient(create_app(settings)) as client:
        v1 = client.post("/v1/classify", params={"top_k": 1200}, content=photo).json()
    assert len(v1["predictions"]) == 1200
    from imagenet_zoo.server.v2 import parse_request

    image = {"name": "IMAGE", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(photo).decode()]}
    request = {"inputs": [image], "parameters": {"top_k": 1200}}
    assert parse_request(json.dumps(request).encode(), None, max_images=16).top_k == 1200


def _float_options() -> list[tuple[str, str]]:
    """Every (command, --option) whose value is a number with a fraction, from the parser itself."""
    from imagenet_zoo.cli import build_parser
    from imagenet_zoo.cli.options import finite

    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [
        (name, action.option_strings[0])
        for name, sub in commands.choices.items()
        for action in sub._actions
        if action.type is finite
    ]


def test_every_numeric_option_refuses_what_is_not_a_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`serve --deadline nan` died with a traceback at start-up, `--body-timeout inf` started a server
    with no body timeout, `train --learning-rate nan` was accepted: each is one line and exit 2 now."""
    options = _float_options()
    expected = {("serve", "--deadline"), ("serve", "--body-timeout"), ("train", "--learning-rate")}
    assert expected <= set(options)
    positional = {"classify": [str(tmp_path)], "extract": [str(tmp_path)], "train": [str(tmp_path)]}
    for command, option in options:
        for bad in ("nan", "inf", "-inf", "1e999"):
            code, _, err = run_cli([command, *positional.get(command, []), f"{option}={bad}"], capsys)
            assert code == 2 and "finite number" in err and "Traceback" not in err, (command, option, bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "x.jpg", "--batch-size", str(2**63)],
        ["classify", "x.jpg", "--top-groups", "200000"],
        ["classify", "x.jpg", "--workers", "100000"],
        ["eval", "x", "--batch-size", "5000"],
        ["serve", "--max-batch-size", "99999999999999999999"],
        ["quantize", "lite0", "--calibration", "x", "--samples", "9" * 5000],
    ],
)
def test_counts_past_what_can_be_meant_are_refused_before_any_work(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and ("at most" in err or "from 1 to" in err), err
    assert "Traceback" not in err


def test_a_count_with_leading_zeros_is_the_number() -> None:
    from imagenet_zoo.cli.options import positive

    assert positive("007") == 7
    with pytest.raises(argparse.ArgumentTypeError):
        positive("0" * 30 + "1" + "0" * 7)


def test_a_full_disk_under_any_command_is_one_line(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Feature files (and other writes no command wraps) ended with an OSError traceback on a full disk."""
    features = tmp_path / "features.npz"
    journal = tmp_path / "features.npz.partial.jsonl"  # where the features stream first
    journal.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    code, _, err = run_cli(["extract", COFFEE, "--output", str(features)], capsys)
    lines = [line for line in err.splitlines() if line.startswith("imagenet-zoo:")]
    assert code == 1 and "Traceback" not in err and len(lines) == 1 and "No space left" in lines[0], err
