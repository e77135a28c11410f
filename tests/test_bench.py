"""The benchmark's plumbing and report (what it measures, not how fast: speed is never asserted)."""

import json
import os
import shutil
from pathlib import Path

import pytest

from imagenet_zoo.cli import main
from imagenet_zoo.jobs import bench
from tests.conftest import skimage_photo

REQUIRED = {
    "model",
    "engine",
    "precision",
    "batch_size",
    "images_per_second",
    "latency_ms_p50",
    "ratio_to_keras",
}

LITE0_ON_OPENVINO = ["bench", "--model", "lite0", "--engine", "openvino"]


def test_time_runs_warms_up_then_times_at_least_the_minimum() -> None:
    calls: list[int] = []
    latencies = bench.time_runs(lambda: calls.append(1), seconds=0.0)
    assert len(latencies) == bench.MIN_TIMED_RUNS
    assert len(calls) == bench.WARMUP_RUNS + bench.MIN_TIMED_RUNS


def test_models_without_weights_are_benchmarked_with_random_weights_labelled_so() -> None:
    plan = bench.BenchPlan(["lite0", "resnet50"], ["openvino"], ["fp32", "bf16"], [1], 1.0)
    jobs = list(plan.jobs())
    assert [(j.model, j.engine, j.precision) for j in jobs] == [
        ("lite0", bench.BASELINE, "fp32"),
        ("lite0", "openvino", "fp32"),
        ("lite0", "openvino", "bf16"),
        ("resnet50", bench.BASELINE, "fp32"),
        ("resnet50", "openvino", "fp32"),
        ("resnet50", "openvino", "bf16"),
    ]
    assert [j.random_weights for j in jobs] == [False] * 3 + [True] * 3


def test_json_report(with_lite0: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--model", "lite0", "--batch-size", "1", "2", "--seconds", "0.2", "--format", "json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["engine"], r["batch_size"]) for r in rows] == [
        (bench.BASELINE, 1),
        (bench.BASELINE, 2),
        ("openvino", 1),
        ("openvino", 2),
        ("keras", 1),
        ("keras", 2),
        ("torch", 1),
        ("torch", 2),
    ]
    baseline = {r["batch_size"]: r["images_per_second"] for r in rows if r["engine"] == bench.BASELINE}
    sgemm = None
    for row in rows:
        assert set(row) >= REQUIRED and row["weights"] == "pretrained" and row["images_per_second"] > 0
        assert row["ratio_to_keras"] == pytest.approx(row["images_per_second"] / baseline[row["batch_size"]])
        assert row["latency_ms_p95"] >= row["latency_ms_p50"] > 0 and row["peak_memory_mb"] > 0
        implied = row["images_per_second"] * row["gflops_per_image"] / row["fraction_of_fp32_peak"]
        sgemm = sgemm or implied
        assert implied == pytest.approx(sgemm)  # one sgemm rate for the whole run
    converting = ("openvino", "torch")  # the engines that convert once and start from their cache
    cold = [r["cold_start_s"] for r in rows if r["engine"] in converting and r["batch_size"] == 1]
    assert len(cold) == 2 and all(seconds is not None and seconds > 0 for seconds in cold)
    assert all(
        r["cold_start_s"] is None for r in rows if r["engine"] not in converting or r["batch_size"] != 1
    )


def test_int8_without_a_quantized_model_or_calibration_says_so(
    with_lite0: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--model", "lite0", "--engine", "openvino", "--precision", "int8", "--seconds", "0.1"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "QuantizedModelMissingError" in err and "--calibration DIR" in err and "Traceback" not in err


def test_end_to_end_over_real_files(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("coffee.png", "chelsea.png", "rocket.jpg"):
        shutil.copy(skimage_photo(name), folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff nope")
    argv = [
        *LITE0_ON_OPENVINO,
        "--end-to-end",
        str(folder),
        "--batch-size",
        "2",
        "--seconds",
        "0.1",
        "--no-cold-start",
        "--format",
        "json",
    ]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    end_to_end = [r for r in rows if r["mode"] == "end_to_end"]
    assert len(end_to_end) == 1 and end_to_end[0]["engine"] == "openvino"
    extra = end_to_end[0]["extra"]
    assert (extra["files"], extra["failed"]) == (4, 1) and end_to_end[0]["images_per_second"] > 0
    assert extra["decode_ms_per_image"] > 0 and extra["inference_ms_per_image"] > 0
    assert extra["decode_full_ms_per_image"] > 0 and extra["median_megapixels"] > 0.05  # both decode modes
    assert 0 < extra["decode_alone_ms_per_image"] < extra["decode_ms_per_image"]  # no resize: less
    cores = os.cpu_count() or 1
    bound = 1000 / (extra["decode_ms_per_image"] / cores + extra["inference_ms_per_image"])
    assert extra["bound_images_per_second"] == pytest.approx(bound, rel=0.02)
    assert extra["fraction_of_bound"] == pytest.approx(end_to_end[0]["images_per_second"] / bound, rel=0.02)
    assert extra["process_images_per_second"] > 0  # the whole `classify` process, timed as well
    assert end_to_end[0]["ratio_to_keras"] is None


def test_markdown_report_has_the_date_and_cpu(with_lite0: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        *LITE0_ON_OPENVINO,
        "--seconds",
        "0.1",
        "--no-cold-start",
        "--format",
        "markdown",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert bench.cpu_name() in out and "GFLOP/s" in out
    assert out.count("| efficientnet_lite0 |") == 2
