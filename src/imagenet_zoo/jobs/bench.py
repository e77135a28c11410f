"""`imagenet-zoo bench`: throughput and latency of every engine, as ratios to Keras `predict` in one run.

Each (model, engine, precision) is measured in a fresh worker process, so its peak memory is its own
(including the one-time conversion when the IR was not cached yet) and no engine's thread pools disturb
another's. The parent measures the machine's fp32 matrix-multiply rate first, so every row also says
what fraction of that ceiling it reaches, and always measures Keras `predict` (the tutorial's way), so
every row gets a ratio to it. Models whose weights are not on this machine run with random weights
(speed does not depend on weight values) and are labelled so.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import numpy as np

from imagenet_zoo.api import check_config, create_model, resolve_model
from imagenet_zoo.classifier import Classifier
from imagenet_zoo.data.preprocess import decode_for
from imagenet_zoo.engines.registry import DEFAULT_CALIBRATION_SAMPLES, get_engine
from imagenet_zoo.errors import ImageError, ImagenetZooError, QuantizedModelMissingError, UsageError
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.pipeline import LoadConfig
from imagenet_zoo.records import ErrorInfo

BASELINE = "keras.predict"
BASELINE_ENGINE = "keras"  # the engine whose packages the baseline needs
WARMUP_RUNS = 3
MIN_TIMED_RUNS = 5


@dataclass(frozen=True)
class Measurement:
    """One worker's work: a model on one engine and precision, at several batch sizes."""

    model: str
    engine: str  # "keras.predict" (the baseline), or a registered engine
    precision: str
    device: str
    batch_sizes: tuple[int, ...]
    seconds: float
    random_weights: bool
    calibration: str | None = None

    @property
    def load(self) -> LoadConfig:
        return LoadConfig(model=self.model, engine=self.engine, precision=self.precision, device=self.device)


@dataclass
class Row:
    model: str
    engine: str
    precision: str
    batch_size: int
    weights: str  # "pretrained" or "random"
    images_per_second: float
    latency_ms_p50: float
    latency_ms_p95: float
    gflops_per_image: float
    peak_memory_mb: float
    converted_in_run: bool
    fraction_of_fp32_peak: float | None = None
    ratio_to_keras: float | None = None
    cold_start_s: float | None = None
    mode: str = "inference"
    extra: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"


def measure_sgemm_gflops() -> float:
    """fp32 matrix-multiply rate of this machine (numpy sgemm 4096^2, all cores), in GFLOP/s.

    Runs in a child without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE, which some machines set to work around
    old OpenBLAS bugs and which make a current numpy pick slower kernels than the CPU can run.
    """
    code = (
        "import numpy as np, time\n"
        "a = np.random.default_rng(0).random((4096, 4096), dtype=np.float32); b = a.T.copy(); a @ b\n"
        "times = []\n"
        "for _ in range(3):\n"
        "    t = time.perf_counter(); a @ b; times.append(time.perf_counter() - t)\n"
        "print(2 * 4096**3 / min(times) / 1e9)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_runs(run: Callable[[], object], seconds: float) -> list[float]:
    """Latencies in seconds: warm-up first, then at least `seconds` (and MIN_TIMED_RUNS runs) of calls."""
    for _ in range(WARMUP_RUNS):
        run()
    latencies: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(latencies) < MIN_TIMED_RUNS:
        t = time.perf_counter()
        run()
        latencies.append(time.perf_counter() - t)
    return latencies


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _runner(job: Measurement, model: RegisteredModel) -> tuple[Callable[[np.ndarray], object], bool]:
    """The call to time for `job`, and whether a conversion happened while preparing it."""
    if job.engine == BASELINE:
        keras_model = create_model(
            job.model, weights=None if job.random_weights else "imagenet", progress=False
        )
        return (lambda x: keras_model.predict(x, verbose=0)), False
    checked = check_config(job.load, progress=False, random_weights=job.random_weights)
    engine = checked.engine
    converted = engine.converted is not None and not engine.converted(checked.model, checked.request)
    if job.precision in engine.calibrated_precisions:
        converted |= _calibrate(job, model)
    return checked.load_engine().infer, converted


def _calibrate(job: Measurement, model: RegisteredModel) -> bool:
    """Make the calibrated precision from `job.calibration` if it is not there yet; whether it was made."""
    calibration = get_engine(job.engine).calibration
    assert calibration is not None, "an engine with calibrated precisions calibrates"
    if calibration.is_ready(model, job.precision, random_weights=job.random_weights):
        return False
    if job.calibration is None:
        raise QuantizedModelMissingError(
            f"no {job.precision} model for {model.spec.name}: pass --calibration DIR to make one first"
        )
    calibration.run(
        model,
        job.precision,
        Path(job.calibration),
        samples=DEFAULT_CALIBRATION_SAMPLES,
        random_weights=job.random_weights,
    )
    return True


def measure(job: Measurement) -> list[Row]:
    """Measure one job in this process (the worker side)."""
    model = resolve_model(job.model)
    run, converted = _runner(job, model)
    size = model.spec.data_config.input_size
    rows = []
    for batch_size in job.batch_sizes:
        batch = np.random.default_rng(0).integers(0, 256, size=(batch_size, size, size, 3), dtype=np.uint8)
        latencies = time_runs(partial(run, batch), job.seconds)
        rows.append(
            _row(
                job,
                model,
                batch_size,
                images_per_second=batch_size * len(latencies) / sum(latencies),
                latency_ms_p50=1000 * statistics.median(latencies),
                latency_ms_p95=1000 * _percentile(latencies, 95),
                converted_in_run=converted,
            )
        )
    return rows


def _row(job: Measurement, model: RegisteredModel, batch_size: int, **measured: Any) -> Row:
    """A result row: the job's identity, the model's FLOPs and this process's peak memory so far."""
    return Row(
        model=job.model,
        engine=job.engine,
        precision=job.precision,
        device=job.device,
        batch_size=batch_size,
        weights="random" if job.random_weights else "pretrained",
        gflops_per_image=model.spec.gflops,
        peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **measured,
    )


DECODE_SAMPLE = 200  # photos timed for the single-core decode + preprocess cost


def run_end_to_end(job: Measurement, folder: Path) -> list[Row]:
    """Decode + preprocess + infer over real files with the classifier's overlapped pipeline (worker side).

    Also measures the two costs that bound it on this machine: single-core decode + preprocess time per
    photo, and engine-only inference time per photo at the same batch size. With decoding spread over
    all cores and overlapped with inference, no folder job can beat `1 / (decode / cores + inference)`.
    The run and its bound use the fast decode (the default); the full decode's cost is reported beside it,
    and the decode's alone (what resizing and cropping add to it).
    """
    from imagenet_zoo.data.images import find_images

    model = resolve_model(job.model)
    run, converted = _runner(job, model)
    engine = _CallableEngine(job.engine, run)
    paths = find_images([str(folder)], recursive=True)
    if not paths:
        raise UsageError(f"no image files in {folder}")
    classifier = Classifier(model.spec, engine)
    decode_s, megapixels = _decode_seconds_per_photo(classifier, paths[:DECODE_SAMPLE])
    decode_alone_s = _decode_alone_seconds_per_photo(classifier, paths[:DECODE_SAMPLE])
    decode_full_s, _ = _decode_seconds_per_photo(
        Classifier(model.spec, engine, decode="full"), paths[:DECODE_SAMPLE]
    )
    rows = []
    for batch_size in job.batch_sizes:
        classifier = Classifier(model.spec, engine, batch_size=batch_size)
        classifier.classify(list(paths[: 2 * batch_size]))  # warm-up
        size = model.spec.data_config.input_size
        batch = np.zeros((batch_size, size, size, 3), np.uint8)
        infer_s = statistics.median(time_runs(partial(run, batch), 1.0)) / batch_size
        start = time.perf_counter()
        results = classifier.classify(list(paths))
        elapsed = time.perf_counter() - start
        bound = 1.0 / (decode_s / (os.cpu_count() or 1) + infer_s)
        rows.append(
            _row(
                job,
                model,
                batch_size,
                images_per_second=len(paths) / elapsed,
                latency_ms_p50=float("nan"),  # one timed pass over the folder: no per-batch latencies
                latency_ms_p95=float("nan"),
                converted_in_run=converted,
                mode="end_to_end",
                extra={
                    "files": len(paths),
                    "failed": sum(not r.ok for r in results),
                    "median_megapixels": round(megapixels, 2),
                    "decode_ms_per_image": round(1000 * decode_s, 2),
                    "decode_alone_ms_per_image": round(1000 * decode_alone_s, 2),
                    "decode_full_ms_per_image": round(1000 * decode_full_s, 2),
                    "inference_ms_per_image": round(1000 * infer_s, 2),
                    "bound_images_per_second": round(bound, 1),
                    "fraction_of_bound": round(len(paths) / elapsed / bound, 3),
                },
            )
        )
    return rows


def _decode_alone_seconds_per_photo(classifier: Classifier, paths: list[str]) -> float:
    """Single-core time per photo of the fast decode alone (Pillow's, at the scale the model needs), no
    resize: the floor under decode + preprocess."""
    start = time.perf_counter()
    for path in paths:
        try:
            decode_for(path, classifier.data_config, max_pixels=classifier.max_pixels, decode="fast")
        except ImageError:
            continue  # the pipeline reports it
    return (time.perf_counter() - start) / len(paths)


def _decode_seconds_per_photo(classifier: Classifier, paths: list[str]) -> tuple[float, float]:
    """Single-core decode + preprocess time per photo (what each decoding thread pays), and the photos'
    median size in megapixels."""
    sizes = []
    start = time.perf_counter()
    for path in paths:
        prepared = classifier.preprocess(path)
        if not isinstance(prepared, ErrorInfo):
            sizes.append(prepared[0].width * prepared[0].height / 1e6)
    return (time.perf_counter() - start) / len(paths), statistics.median(sizes) if sizes else 0.0


def whole_process_rate(row: Row, folder: Path) -> float:
    """images/s of `imagenet-zoo classify DIR --output` as a whole process: start-up and writing included."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            "classify",
            str(folder),
            "--recursive",
            "--quiet",
            "--output",
            f"{tmp}/results.jsonl",
            "--model",
            row.model,
            "--engine",
            row.engine,
            "--precision",
            row.precision,
            "--device",
            row.device,
            "--batch-size",
            str(row.batch_size),
        ]
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "imagenet_zoo", *argv], capture_output=True, check=False)
        return int(row.extra["files"]) / (time.perf_counter() - start)


@dataclass
class _CallableEngine:
    name: str
    run: Callable[[np.ndarray], object]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.run(batch), dtype=np.float32)


def _worker_command(job: Measurement, end_to_end: Path | None) -> list[str]:
    payload = json.dumps({"job": asdict(job), "end_to_end": str(end_to_end) if end_to_end else None})
    return [sys.executable, "-m", "imagenet_zoo.jobs.bench", payload]


def run_in_worker(job: Measurement, end_to_end: Path | None) -> list[Row]:
    proc = subprocess.run(_worker_command(job, end_to_end), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        message = (
            proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        )
        raise UsageError(f"benchmark of {job.model} on {job.engine} {job.precision} failed: {message}")
    return [Row(**row) for row in json.loads(proc.stdout.strip().splitlines()[-1])]


def cold_start_seconds(job: Measurement) -> float:
    """Wall time of `imagenet-zoo classify PHOTO` in a new process (the model being converted already)."""
    with as_file(files("imagenet_zoo.selftest").joinpath("coffee.png")) as photo:
        argv = [
            "classify",
            str(photo),
            "--model",
            job.model,
            "--engine",
            job.engine,
            "--precision",
            job.precision,
            "--device",
            job.device,
        ]
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "imagenet_zoo", *argv], capture_output=True, check=True)
        return time.perf_counter() - start


@dataclass(frozen=True)
class BenchPlan:
    models: list[str]
    engines: list[str]
    precisions: list[str]
    batch_sizes: list[int]
    seconds: float
    calibration: str | None = None
    end_to_end: Path | None = None
    cold_start: bool = True
    device: str = "auto"

    def jobs(self) -> Iterator[Measurement]:
        """Keras `predict` first where TensorFlow is installed (every row's ratio is to it), then each
        engine in each of the asked precisions it has (an engine with none of them: its first)."""
        for name in self.models:
            model = resolve_model(name)
            random = not model.weights_available
            base = Measurement(
                name, BASELINE, "fp32", "cpu", tuple(self.batch_sizes), self.seconds, random, self.calibration
            )
            if baseline_installed():
                yield base
            for spec in map(get_engine, self.engines):
                precisions = [p for p in self.precisions if p in spec.precisions] or [spec.precisions[0]]
                device = spec.resolve_device(self.device)
                for precision in precisions:
                    yield replace(base, engine=spec.name, precision=precision, device=device)


def run_plan(plan: BenchPlan, sgemm_gflops: float, report: Callable[[Row], None]) -> list[Row]:
    """Run every job of `plan` in its own worker; rows get their ratio and peak fraction as they come."""
    rows: list[Row] = []
    baseline: dict[tuple[str, int], float] = {}
    for job in plan.jobs():
        for row in run_in_worker(job, plan.end_to_end if job.engine != BASELINE else None):
            if job.engine == BASELINE:
                baseline[(row.model, row.batch_size)] = row.images_per_second
            row.fraction_of_fp32_peak = row.images_per_second * row.gflops_per_image / sgemm_gflops
            if row.mode == "inference" and (row.model, row.batch_size) in baseline:
                row.ratio_to_keras = row.images_per_second / baseline[(row.model, row.batch_size)]
            first_batch = row.batch_size == min(plan.batch_sizes)
            real = row.weights == "pretrained" and row.mode == "inference"
            if plan.cold_start and first_batch and real and _converts(job.engine):
                row.cold_start_s = cold_start_seconds(job)
            if row.mode == "end_to_end" and row.weights == "pretrained" and plan.end_to_end is not None:
                process_rate = whole_process_rate(row, plan.end_to_end)
                row.extra["process_images_per_second"] = round(process_rate, 1)
                row.extra["process_fraction_of_bound"] = round(
                    process_rate / row.extra["bound_images_per_second"], 3
                )
            rows.append(row)
            report(row)
    return rows


def baseline_installed() -> bool:
    """Whether the baseline, Keras `predict` on TensorFlow (the tutorial's stack), can run here."""
    return get_engine(BASELINE_ENGINE).installed


def _converts(engine: str) -> bool:
    """Engines that convert a model once: their cold start (from the converted model) is worth timing."""
    return engine != BASELINE and get_engine(engine).converted is not None


def environment(sgemm_gflops: float) -> dict[str, Any]:
    import openvino

    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "fp32_sgemm_gflops": round(sgemm_gflops, 1),
        "openvino": openvino.get_version().split("-")[0],
    }


def _worker_main(payload: str) -> int:
    spec = json.loads(payload)
    job = Measurement(**{**spec["job"], "batch_sizes": tuple(spec["job"]["batch_sizes"])})
    try:
        rows = run_end_to_end(job, Path(spec["end_to_end"])) if spec["end_to_end"] else measure(job)
    except ImagenetZooError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write("\n" + json.dumps([asdict(row) for row in rows]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1]))
