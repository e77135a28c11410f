"""The torch engine's GPU checks, as one JSON object on stdout (figures for docs/benchmarks.md).

Needs only this repository's source, torch, Pillow, numpy and h5py (no Keras, no TensorFlow, no
OpenVINO, no package index: the networks are built from their shipped descriptions; the service check
also needs the server's packages). On a machine without a GPU it marks every GPU row {"skipped": "no
GPU"}; `--device cpu` runs every row on the CPU instead (with `--quick`, a test of this script: nvJPEG is
replaced by its CPU stand-in, `engines.torch_device.pillow_decoder`).

    python scripts/gpu_check.py --photos DIR [--quick] [--compile] [--device cpu]

DIR holds labelled ImageNet photos named `<synset>_<label>.JPEG` (the shared sample). Rows:
- parity: GPU fp32 against CPU fp32 logits of EfficientNet-Lite0 (real weights) on the photos;
- bf16: top-1 agreement with fp32 (and of bf16 alone, without the close calls computed again in fp32)
  and accuracy, fp32 and bf16, on the GPU;
- decode: top-1 agreement of nvJPEG + the device resize with Pillow, on the photos and 12-MP copies;
- model_only: images/s, bf16, batch 256, inputs already on the GPU (eager; with --compile also compiled);
- end_to_end: photos/s from a folder of 3,000 JPEGs (15 copies of each photo) to a results file, and
  from 12-MP photos; and the same folder with decoding and the network taking no time, the ceiling the
  CPU's share sets (`bench_host_path.py`);
- service: single-photo requests at concurrency 64, and v2 requests of 32 photos; and single photos
  against the service with decoding and the network taking no time (`bench_host_path.py --service`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))

import torch  # noqa: E402

import imagenet_zoo  # noqa: E402
from imagenet_zoo.jobs.folder import FolderJob, run_folder_job  # noqa: E402
from imagenet_zoo.pipeline import LoadConfig  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from bench_host_path import host_side_rate, service_rate  # noqa: E402

SKIPPED = {"skipped": "no GPU"}
DEVICE: str | None = "cuda" if torch.cuda.is_available() else None  # where the rows run (None: skipped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "imagenet-sample")
    parser.add_argument("--quick", action="store_true", help="fewer photos and seconds (a CPU's run)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--device", choices=("cuda", "cpu"), help="cpu: every row on the CPU (a test)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device or DEVICE
    photos = sorted(args.photos.glob("*.JPEG"))[: 48 if args.quick else None]
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    report: dict[str, Any] = {"device": name, "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        work = Path(scratch)
        os.environ["IMAGENET_ZOO_HOME"] = str(work / "home")  # what it converts is gone after
        phones = phone_photos(photos[: 40 if args.quick else 200], work / "phones") if DEVICE else []
        for name, check in (
            ("parity", lambda: parity(photos)),
            ("bf16", lambda: bf16(photos)),
            ("decode", lambda: decode_agreement(photos, phones)),
            ("model_only", lambda: model_only(args.quick, args.compile)),
            ("end_to_end", lambda: end_to_end(photos, phones, work, args.quick)),
            ("service", lambda: service(photos, args.quick)),
        ):
            report[name] = timed(check)
    json.dump(report, sys.stdout, indent=1)
    sys.stdout.write("\n")


def timed(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        row = check()
    except Exception as exc:  # one failed check is reported, the others still run
        row = {"error": f"{type(exc).__name__}: {exc}"}
    row.setdefault("seconds", round(time.perf_counter() - start, 1))
    return row


def truth(photos: list[Path], labels: list[Any]) -> np.ndarray:
    synsets = [label.synset for label in labels]
    return np.array([synsets.index(p.name.split("_")[0]) for p in photos])


def logits(classifier: Any, photos: list[Path]) -> np.ndarray:
    inputs = classifier.preprocess_images([imagenet_zoo.decode_image(p).image for p in photos])
    return np.concatenate([classifier.engine.infer(chunk) for chunk in np.array_split(inputs, 4)])


def device_fed(classifier: Any) -> Any:
    """The classifier with its batches decoded and preprocessed on its device (on a CPU, through the
    stand-in for nvJPEG)."""
    from imagenet_zoo.engines.torch_device import DevicePreprocessor

    if classifier.batch_preprocessor is None:
        classifier.batch_preprocessor = DevicePreprocessor(
            classifier.data_config,
            "cpu",
            decode=classifier.decode,
            max_pixels=classifier.max_pixels,
            cpu_path=classifier._model_input,
        )
    return classifier


def seed_random_graph(model: str) -> None:
    """A random-weights graph where the pretrained one is looked for: these weights are not on this
    machine, and their values do not change how fast the network runs."""
    from imagenet_zoo.engines.registry import EngineRequest
    from imagenet_zoo.engines.torch import graph_dir, translated
    from imagenet_zoo.registry import default_registry

    entry = default_registry().get(model)
    made = translated(entry, EngineRequest(random_weights=True, progress=False))
    pretrained = graph_dir(entry, EngineRequest())
    if not pretrained.exists():
        shutil.copytree(made.resolve(), pretrained)


def parity(photos: list[Path]) -> dict[str, Any]:
    if DEVICE is None:
        return SKIPPED
    cpu = imagenet_zoo.load("lite0", engine="torch", device="cpu", progress=False)
    gpu = imagenet_zoo.load("lite0", engine="torch", device=DEVICE, progress=False)
    on_cpu, on_gpu = logits(cpu, photos), logits(gpu, photos)
    top5 = np.argsort(-on_cpu, axis=1)[:, :5] == np.argsort(-on_gpu, axis=1)[:, :5]
    return {
        "photos": len(photos),
        "max_logit_difference": float(np.abs(on_cpu - on_gpu).max()),
        "top5_identical": float(top5.all(axis=1).mean()),
    }


def bf16(photos: list[Path]) -> dict[str, Any]:
    if DEVICE is None:
        return SKIPPED
    rows = {}
    for precision in ("fp32", "bf16"):
        classifier = imagenet_zoo.load("lite0", engine="torch", device=DEVICE, precision=precision)
        rows[precision] = logits(classifier, photos)
    expected = truth(photos, classifier.labels)
    engine: Any = classifier.engine
    close_calls = engine.close_calls / len(photos)
    engine.close_call_margin = 0.0  # bf16 alone: no close call computed again in fp32
    rows["bf16_alone"] = logits(classifier, photos)
    return {
        "top1_agreement": float((rows["fp32"].argmax(1) == rows["bf16"].argmax(1)).mean()),
        "close_calls_recomputed_in_fp32": close_calls,
        "top1_agreement_bf16_alone": float((rows["fp32"].argmax(1) == rows["bf16_alone"].argmax(1)).mean()),
        "accuracy_fp32": float((rows["fp32"].argmax(1) == expected).mean()),
        "accuracy_bf16": float((rows["bf16"].argmax(1) == expected).mean()),
    }


def phone_photos(photos: list[Path], folder: Path) -> list[Path]:
    """12-megapixel JPEGs (4000x3000 or 3000x4000) made from the photos, as a phone would save them."""
    folder.mkdir(parents=True)
    made = []
    for photo in photos:
        image = Image.open(photo).convert("RGB")
        size = (4000, 3000) if image.width >= image.height else (3000, 4000)
        made.append(folder / photo.name)
        image.resize(size, Image.Resampling.BICUBIC).save(made[-1], quality=90)
    return made


def decode_agreement(photos: list[Path], phones: list[Path]) -> dict[str, Any]:
    if DEVICE is None:
        return SKIPPED
    options = {"engine": "torch", "device": DEVICE, "batch_size": 64, "progress": False}
    on_gpu = device_fed(imagenet_zoo.load("lite0", **options))
    on_cpu = imagenet_zoo.load("lite0", **options)
    on_cpu.batch_preprocessor = None  # the same engine fed by Pillow
    row = {}
    for name, files in (("photos", photos), ("12mp", phones)):
        ours = [r.predictions[0].index for r in on_gpu.classify([str(p) for p in files], top=1)]
        theirs = [r.predictions[0].index for r in on_cpu.classify([str(p) for p in files], top=1)]
        row[f"top1_agreement_{name}"] = float(np.mean(np.equal(ours, theirs)))
    return row


def model_only(quick: bool, compile_too: bool) -> dict[str, Any]:
    if DEVICE is None:
        return SKIPPED
    from imagenet_zoo.api import check_config

    row: dict[str, Any] = {}
    for model in ("resnet50", "lite0"):
        config = LoadConfig(model=model, engine="torch", device=DEVICE, precision="bf16")
        engine = check_config(config, random_weights=model == "resnet50", progress=False).load_engine()
        size = imagenet_zoo.resolve_data_config(model).input_size
        x = torch.randn(32 if quick else 256, 3, size, size, device=DEVICE)
        x = x.to(memory_format=torch.channels_last)
        x = x.to(torch.bfloat16)
        row[f"{model}_eager"] = images_per_second(engine.module, x, 5 if quick else 20)
        if compile_too:
            row[f"{model}_compiled"] = images_per_second(torch.compile(engine.module), x, 5 if quick else 20)
    return row


def images_per_second(module: Any, x: Any, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(3):
            module(x)
        synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            module(x)
        synchronize()
    return round(len(x) * repeats / (time.perf_counter() - start))


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def end_to_end(photos: list[Path], phones: list[Path], work: Path, quick: bool) -> dict[str, Any]:
    if DEVICE is None:
        return SKIPPED
    folder = work / "folder"
    folder.mkdir()
    for copy in range(2 if quick else 15):  # 3,000 photos from 200
        for photo in photos:
            shutil.copy(photo, folder / f"{copy}-{photo.name}")
    row: dict[str, Any] = {"photos": len(list(folder.iterdir())), "phones": len(phones)}
    seed_random_graph("resnet50")
    for model in ("resnet50", "lite0"):
        row[model] = folder_rate(model, folder, work / f"{model}.jsonl")
    row["host_side_ceiling"] = round(host_side_rate(folder, work / "host.jsonl"))
    row["lite0_12mp"] = folder_rate("lite0", phones[0].parent, work / "phones.jsonl")
    return row


def folder_rate(model: str, folder: Path, output: Path) -> float:
    load = LoadConfig(model=model, engine="torch", device=DEVICE, precision="bf16", batch_size=256)
    job = FolderJob(sources=[str(folder)], load=load, output=output, progress=False)
    report = run_folder_job(job)
    return round(report.done / report.seconds)


def service(photos: list[Path], quick: bool) -> dict[str, Any]:
    if DEVICE is None:
        return SKIPPED
    import load_test

    load_test.SHARED = photos[0].parent
    options = [
        "--engine",
        "torch",
        "--device",
        DEVICE,
        "--precision",
        "bf16",
        "--max-batch-size",
        "64",
        "--max-batch-files",
        "32",
        "--max-queue",
        "256",
    ]
    with load_test.server(*options) as (url, _pid):
        single, errors = load_test.throughput(url, 500 if quick else 5000, 64, "multipart")
        batched = asyncio.run(v2_batches(url, photos, 10 if quick else 60))
    ceiling = service_rate(2000 if quick else 5000)
    return {
        "single_c64": {**single, "5xx": errors},
        "v2_batches_of_32": batched,
        "single_c64_host_side_ceiling": {k: round(v, 1) for k, v in ceiling.items()},
    }


async def v2_batches(url: str, photos: list[Path], requests: int) -> dict[str, Any]:
    import base64

    import httpx

    data = [base64.b64encode(p.read_bytes()).decode() for p in photos[:32]]
    body = {"inputs": [{"name": "IMAGE", "shape": [len(data)], "datatype": "BYTES", "data": data}]}
    async with httpx.AsyncClient(timeout=120) as client:
        target = f"{url}/v2/models/efficientnet_lite0/infer"
        await client.post(target, json=body)
        start = time.perf_counter()
        answers = await asyncio.gather(*(client.post(target, json=body) for _ in range(requests)))
        seconds = time.perf_counter() - start
    statuses = sorted({a.status_code for a in answers})
    return {"photos_per_second": round(requests * len(data) / seconds), "statuses": statuses}


if __name__ == "__main__":
    main()
