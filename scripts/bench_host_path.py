"""The CPU's share of the GPU pipeline: photos/s of a folder job whose decoder and network cost nothing.

    .venv/bin/python scripts/bench_host_path.py [--copies 15] [--repeats 3] [--batch 256]

On a GPU, nvJPEG decodes, the device resizes and the network runs; what stays on the CPU is reading each
file, reading its header (the pixel cap, EXIF orientation, routing), handing the bytes to the decoder,
ranking, and building and writing the records. This script times exactly that: the torch engine's
`DevicePreprocessor` with a decoder and a resize that return at once, and an engine that ranks at once,
over `--copies` copies of each shared photo (3,000 by default, in a temporary folder). The rate it
prints is a ceiling for any GPU: the end-to-end targets (8,000-9,000 photos/s on an H200) need it well
above them.

Prints a Markdown table: the batch preprocessor alone (called batch after batch), and whole folder
jobs writing JSON Lines and CSV (best and median of `--repeats`). With `--service`, also the service
on the same engine (calls of up to 64, a queue of 256, as on a GPU) under single-photo requests at
concurrency 64 from `load_test.py`'s client, which shares the machine with it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imagenet_zoo.engines.base import Engine
from imagenet_zoo.engines.registry import EngineSpec, engine_registry
from imagenet_zoo.engines.torch_device import DevicePreprocessor
from imagenet_zoo.jobs.folder import FolderJob, run_folder_job
from imagenet_zoo.pipeline import LoadConfig
from imagenet_zoo.registry import default_registry

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
_ROW = torch.zeros(3, 1, 1)  # what the model would get: its size does not matter here
_DECODED = torch.zeros(3, 8, 8, dtype=torch.uint8)


class _InstantResize(DevicePreprocessor):
    def resize(self, images: list[Any]) -> list[Any]:
        return [_ROW] * len(images)


def _instant_decoder(data: Sequence[bytes]) -> list[Any]:
    return [_DECODED] * len(data)


class _HostOnlyEngine(Engine):
    """Ranks at once; prepares batches with the GPU path's CPU work and nothing else."""

    name = "host-only"
    ranks_where_it_infers = True

    def infer(self, batch: Any) -> np.ndarray:
        return np.zeros((len(batch), 1000), np.float32)

    def infer_top(self, batch: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        return np.tile(np.arange(k), (len(batch), 1)), np.full((len(batch), k), 1 / k, np.float32)

    def batch_preprocessor(self, config: Any, *, decode: Any, max_pixels: int, cpu_path: Any) -> Any:
        return _InstantResize(
            config, "cpu", decode=decode, max_pixels=max_pixels, cpu_path=cpu_path, decoder=_instant_decoder
        )

    def stacked(self, rows: list[Any]) -> Any:
        return torch.stack(rows)


def copied(sample: Path, folder: Path, copies: int) -> list[Path]:
    """`copies` copies of each JPEG of `sample` in `folder` (made here)."""
    folder.mkdir()
    for copy in range(copies):
        for photo in sorted(sample.glob("*.JPEG")):
            shutil.copyfile(photo, folder / f"{copy:02d}_{photo.name}")
    return sorted(folder.iterdir())


def register_host_only() -> None:
    if "host-only" not in engine_registry().names():
        engine_registry().register(
            EngineSpec(name="host-only", summary="host-only", load=lambda m, r: _HostOnlyEngine())
        )


def host_side_rate(folder: Path, output: Path, batch: int = 256) -> float:
    """Photos/s of a folder job over `folder` to `output` with the host-only engine."""
    register_host_only()
    output.unlink(missing_ok=True)
    load = LoadConfig(model="lite0", engine="host-only", batch_size=batch)
    report = run_folder_job(FolderJob(sources=[str(folder)], load=load, output=output))
    return report.done / report.seconds


SERVER = """
import sys
sys.path.insert(0, sys.argv[1])
from bench_host_path import register_host_only
from imagenet_zoo.pipeline import LoadConfig
from imagenet_zoo.server import Settings
from imagenet_zoo.server.run import serve
register_host_only()
settings = Settings(load=LoadConfig(model="lite0", engine="host-only"), max_batch_size=64, max_queue=256)
serve(settings, host="127.0.0.1", port=int(sys.argv[2]), drain_s=0, log_level="warning")
"""


def service_rate(requests: int) -> dict[str, float]:
    """Single-photo requests at concurrency 64 against a service on the host-only engine."""
    import load_test

    load_test.SHARED = SAMPLE
    port = load_test.free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", SERVER, str(Path(__file__).parent), str(port)]
    with tempfile.TemporaryFile() as log, subprocess.Popen(command, stdout=log, stderr=log) as process:
        try:
            load_test._wait_ready(url, process, log)
            row, errors = load_test.throughput(url, requests, 64, "multipart")
        finally:
            process.terminate()
    return {**row, "5xx": errors}


def _rates(run: Callable[[], float], repeats: int) -> str:
    rates = [run() for _ in range(repeats)]
    return f"{max(rates):,.0f} | {statistics.median(rates):,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=15, help="copies of each shared photo (default 15)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--service", action="store_true", help="also the service at concurrency 64")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-host-"))
    photos = copied(SAMPLE, work / "photos", args.copies)
    prepare = _HostOnlyEngine().batch_preprocessor(
        default_registry().get("lite0").spec.data_config, decode="fast", max_pixels=64_000_000, cpu_path=None
    )

    def preprocessor_alone() -> float:
        start = time.perf_counter()
        for first in range(0, len(photos), args.batch):
            prepare([str(p) for p in photos[first : first + args.batch]])
        return len(photos) / (time.perf_counter() - start)

    def folder_job(suffix: str) -> Callable[[], float]:
        return lambda: host_side_rate(work / "photos", work / f"results{suffix}", args.batch)

    print(f"| {len(photos):,} ImageNet photos, batch {args.batch} | photos/s, best | median |")
    print("|---|---|---|")
    print(f"| batch preprocessor alone | {_rates(preprocessor_alone, args.repeats)} |")
    print(f"| folder job to JSON Lines | {_rates(folder_job('.jsonl'), args.repeats)} |")
    print(f"| folder job to CSV | {_rates(folder_job('.csv'), args.repeats)} |")
    if args.service:
        rows = [service_rate(2000) for _ in range(args.repeats)]
        rates = [row["rate"] for row in rows]
        p99 = ", ".join(f"{row['p99']:.0f}" for row in rows)
        errors = sum(row["5xx"] for row in rows)
        print(
            f"| service, 1 photo a request, c64 (requests/s; p99 {p99} ms; {errors} 5xx) "
            f"| {max(rates):,.0f} | {statistics.median(rates):,.0f} |"
        )
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
