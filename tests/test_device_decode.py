"""Decoding and preprocessing on the device, with a CPU stand-in for nvJPEG
(`engines.torch_device.pillow_decoder`): routing, EXIF orientation, broken files in a batch, bombs, and
the batched resize against the CPU pipeline's pixels. On a GPU the same code runs with torchvision's
nvJPEG decoder (`scripts/gpu_check.py`)."""

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imagenet_zoo.data.images import DEFAULT_MAX_PIXELS
from imagenet_zoo.data.preprocess import model_input
from imagenet_zoo.records import ErrorInfo
from imagenet_zoo.registry import default_registry
from imagenet_zoo.specs import DataConfig
from tests.conftest import SAMPLE_DIR

torch = pytest.importorskip("torch")

from imagenet_zoo.engines import torch_device as device  # noqa: E402
from imagenet_zoo.engines.torch_device import DevicePreprocessor, pillow_decoder  # noqa: E402

LITE0 = default_registry().get("lite0").spec.data_config
PHOTOS = sorted(SAMPLE_DIR.glob("*.JPEG"))


class Recording:
    """The stand-in decoder, remembering how many photos each call was given."""

    def __init__(self) -> None:
        self.decode, self.calls = pillow_decoder("cpu"), list[int]()

    def __call__(self, data: Any) -> list[Any]:
        self.calls.append(len(data))
        return self.decode(data)


def _preprocessor(config: DataConfig = LITE0, decode: str = "full", **kwargs: Any) -> DevicePreprocessor:
    def cpu(source: Any) -> Any:
        return model_input(source, config, max_pixels=DEFAULT_MAX_PIXELS, decode=decode)  # type: ignore[arg-type]

    return DevicePreprocessor(
        config, "cpu", decode=decode, max_pixels=kwargs.pop("max_pixels", DEFAULT_MAX_PIXELS),  # type: ignore[arg-type]
        cpu_path=cpu, **kwargs,
    )  # fmt: skip


def _cpu_pixels(source: Any, config: DataConfig = LITE0, decode: str = "full") -> np.ndarray:
    """The Pillow path's pixels, as numbers that subtract without wrapping around."""
    pixels = model_input(source, config, max_pixels=DEFAULT_MAX_PIXELS, decode=decode)[1]  # type: ignore[arg-type]
    return pixels.astype(np.float32)


def _rows(items: list[Any]) -> list[np.ndarray]:
    """The device rows (uint8 pixels, as the Pillow path gives them), as numbers."""
    assert all(item[1].dtype == torch.uint8 for item in items)
    return [item[1].permute(1, 2, 0).numpy().astype(np.float32) for item in items]


def _encoded(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _asymmetric() -> Image.Image:
    """A photo whose every flip and turn looks different: a real photo with a red corner."""
    image = Image.open(PHOTOS[0]).convert("RGB").resize((320, 240))
    image.paste((255, 0, 0), (0, 0, 60, 40))
    return image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_applies_it(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encoded(_asymmetric(), exif=exif.tobytes(), quality=95)
    decoder = Recording()
    (item,) = _preprocessor(decoder=decoder)([data])
    assert not isinstance(item, ErrorInfo) and decoder.calls == [1]
    info, expected = model_input(data, LITE0, max_pixels=DEFAULT_MAX_PIXELS, decode="full")
    assert item[0] == info
    difference = np.abs(_rows([item])[0] - expected.astype(np.float32))
    assert difference.max() <= 2 and difference.mean() < 0.05


def test_routes_what_the_device_decoder_cannot_read_to_pillow() -> None:
    photo = _asymmetric()
    sources = {
        "gray": _encoded(photo.convert("L")),
        "progressive": _encoded(photo, progressive=True),
        "cmyk": _encoded(photo.convert("CMYK")),
        "png": _encoded(photo, "PNG"),
        "16-bit png": _encoded(photo.convert("I;16"), "PNG"),
        "rgb": _encoded(photo),
    }
    decoder = Recording()
    items = _preprocessor(decoder=decoder)(list(sources.values()))
    assert decoder.calls == [3]  # gray, progressive, rgb JPEGs: one batch; the rest by Pillow
    for (name, data), row in zip(sources.items(), _rows(items), strict=True):
        difference = np.abs(row - _cpu_pixels(data))
        assert difference.max() <= 2, name


@pytest.mark.parametrize("threads", [1, 3])
def test_a_broken_file_fails_alone_in_its_batch(
    tmp_path: Any, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever reading thread meets it, and in the order given."""
    monkeypatch.setattr(device, "READ_THREADS", threads)
    whole = _encoded(_asymmetric())
    truncated = whole[: len(whole) // 2]
    missing = tmp_path / "gone.jpg"
    items = _preprocessor()([PHOTOS[1], truncated, str(missing), b"", PHOTOS[2]])
    kinds = [item.type if isinstance(item, ErrorInfo) else "ok" for item in items]
    assert kinds == ["ok", "CorruptImageError", "ImageNotFoundError", "EmptyImageError", "ok"]
    for item, path in ((items[0], PHOTOS[1]), (items[4], PHOTOS[2])):
        assert np.abs(_rows([item])[0] - _cpu_pixels(path)).max() <= 2


def test_a_bomb_is_refused_from_its_header_before_any_decoder() -> None:
    bomb = _encoded(Image.new("L", (20_000, 20_000)), optimize=True)  # 400 MP, a few hundred kB
    decoder = Recording()
    (item,) = _preprocessor(decoder=decoder, max_pixels=64_000_000)([bomb])
    assert isinstance(item, ErrorInfo) and item.type == "ImageTooLargeError" and decoder.calls == []


@pytest.mark.parametrize(
    "config",
    [
        LITE0,
        replace(LITE0, interpolation="bicubic"),
        replace(LITE0, resize_mode="squash"),
        default_registry().get("inception_v3").spec.data_config,
        default_registry().get("resnet50").spec.data_config,
    ],
    ids=["lite0 bilinear crop", "bicubic", "squash", "inception 299", "resnet caffe"],
)
def test_the_batched_resize_gives_the_cpu_pipelines_pixels(config: DataConfig) -> None:
    """Every pixel within 2 levels of Pillow's (its fixed-point weights), almost all equal."""
    photos = PHOTOS[::8]
    items = _preprocessor(config)(photos)
    difference = np.abs(np.stack(_rows(items)) - np.stack([_cpu_pixels(p, config) for p in photos]))
    assert difference.max() <= 2 and difference.mean() < 0.02


def test_fast_decoding_averages_blocks_as_a_scaled_jpeg_decode_does() -> None:
    """libjpeg's DCT scaling is not a block average, but close: within a level on average."""
    large = [_encoded(Image.open(p).convert("RGB").resize((1600, 1200)), quality=92) for p in PHOTOS[:6]]
    items = _preprocessor(decode="fast")(large)
    expected = np.stack([_cpu_pixels(data, decode="fast") for data in large])
    difference = np.abs(np.stack(_rows(items)) - expected)
    assert difference.mean() < 1.0


def test_a_classifier_on_device_rows_gives_the_cpu_answers(lite0_classifier: Any, with_lite0: Any) -> None:
    """The pipeline with the torch engine fed by the device preprocessor (on the CPU here), two batches
    prepared ahead as on a GPU machine: top-1 of the shared photos as the CPU pipeline gives it, in order."""
    import imagenet_zoo
    from imagenet_zoo import pipeline
    from imagenet_zoo.engines import torch as torch_engine

    def on_cpu_too(self: Any, config: DataConfig, **options: Any) -> DevicePreprocessor:
        return DevicePreprocessor(config, "cpu", **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_engine.TorchEngine, "batch_preprocessor", on_cpu_too)
        patch.setattr(pipeline, "BATCHES_AHEAD_ON_DEVICE", 2)
        on_device = imagenet_zoo.load("lite0", engine="torch", device="cpu", batch_size=16, progress=False)
        assert on_device.batch_preprocessor is not None
        photos = [str(p) for p in PHOTOS[::4]]
        results = on_device.classify(photos, top=1)
    assert [r.source for r in results] == photos
    ours = [r.predictions[0].index for r in results]
    theirs = [r.predictions[0].index for r in lite0_classifier.classify(photos, top=1)]
    assert np.mean(np.equal(ours, theirs)) >= 0.96


def test_numpy_rows_join_device_rows_in_one_batch(with_lite0: Any) -> None:
    """The service's batcher may hold rows of both kinds (a heatmap request's, decoded by Pillow): the
    torch engine stacks them as one batch on its device."""
    import imagenet_zoo

    engine = imagenet_zoo.load_engine("lite0", engine="torch", device="cpu", progress=False)
    numpy_row = _cpu_pixels(PHOTOS[0]).astype(np.uint8)
    device_row = torch.from_numpy(_cpu_pixels(PHOTOS[1]).astype(np.uint8)).permute(2, 0, 1)
    assert isinstance(engine.stacked([numpy_row, numpy_row]), np.ndarray)  # the CPU's rows alone
    batch = engine.stacked([numpy_row, device_row])
    assert batch.shape == (2, 3, *numpy_row.shape[:2])
    assert np.array_equal(batch[0].permute(1, 2, 0).numpy(), numpy_row)
    assert np.array_equal(batch[1].numpy(), device_row.numpy())


def test_the_service_prepares_a_requests_photos_on_the_device(with_lite0: Any) -> None:
    """On a GPU each request's photos are decoded and preprocessed there as one batch (the CPU stand-in
    here): the answers of the classifier on the same rows, a broken file its own error; a heatmap request
    takes Pillow's path, for the overlay."""
    from fastapi.testclient import TestClient

    import imagenet_zoo
    from imagenet_zoo.engines import torch as torch_engine
    from imagenet_zoo.pipeline import LoadConfig
    from imagenet_zoo.server import Settings, create_app

    batches: list[int] = []

    def on_cpu_too(self: Any, config: DataConfig, **options: Any) -> Any:
        preprocessor = DevicePreprocessor(config, "cpu", **options)
        return lambda sources: batches.append(len(sources)) or preprocessor(sources)

    photos = PHOTOS[:5]
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    broken = b"\xff\xd8\xff\xe0" + bytes(64)
    files.insert(2, ("file", ("broken.jpg", broken, "image/jpeg")))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_engine.TorchEngine, "batch_preprocessor", on_cpu_too)
        device = imagenet_zoo.load("lite0", engine="torch", device="cpu", progress=False)
        expected = [r.predictions[0].label for r in device.classify([str(p) for p in photos], top=1)]
        refusal = device.preprocess(broken)
        with TestClient(create_app(Settings(load=LoadConfig(engine="torch", device="cpu")))) as client:
            batches.clear()
            answer = client.post("/v1/classify/batch", files=files)
            explained = client.post("/v1/classify?explain=true", files=files[:1])
    assert answer.status_code == 200 and explained.status_code == 200, answer.text
    records = answer.json()
    assert isinstance(refusal, ErrorInfo) and records[2]["error"]["type"] == refusal.type
    assert [r["predictions"][0]["label"] for r in records[:2] + records[3:]] == expected
    assert batches == [6] and explained.json()["explanation"]["label"] == expected[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU it runs every check (5 minutes)")
def test_gpu_check_runs_without_a_gpu_and_marks_its_rows_skipped() -> None:
    """scripts/gpu_check.py on a machine with no GPU (the GPU machine runs it with the same imports)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "gpu_check.py"
    run = subprocess.run(
        [sys.executable, str(script), "--quick", "--photos", str(SAMPLE_DIR)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    rows = ("parity", "bf16", "decode", "model_only", "end_to_end", "service")
    assert report["device"] == "cpu" and all(report[row]["skipped"] == "no GPU" for row in rows)


def test_the_host_side_ceiling_of_the_gpu_path(tmp_path: Any) -> None:
    """scripts/bench_host_path.py: a folder job whose decoder and network take no time writes every record."""
    from scripts.bench_host_path import copied, host_side_rate

    photos = copied(SAMPLE_DIR, tmp_path / "photos", 1)
    output = tmp_path / "results.jsonl"
    assert host_side_rate(tmp_path / "photos", output, batch=64) > 0
    assert len(output.read_text().splitlines()) == len(photos) == 200


def _thin_jpeg() -> bytes:
    """A 65,500 x 1 JPEG: 17 kB that pass the pixel cap, whose resize weights are 224 x 65,500."""
    return _encoded(Image.new("RGB", (65_500, 1), (200, 120, 40)), quality=90)


_PEAK_OF_THIN_PHOTOS = """
import resource, sys
from tests.test_device_decode import LITE0, _preprocessor, _thin_jpeg
from imagenet_zoo.engines import torch_device as device
from imagenet_zoo.records import ErrorInfo
photos = [_thin_jpeg()] * int(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
items = _preprocessor()(photos)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
assert not any(isinstance(item, ErrorInfo) for item in items)
print(grown * 1024, device.resize_bytes(2, 1, 65_500, LITE0.input_size))
"""


def test_thin_jpegs_are_resized_in_groups_that_fit_the_budget() -> None:
    """Measured in a process of its own: 8 thin JPEGs in one group held 2.8 GB of weight temporaries;
    grouped by what their resize holds (`resize_bytes`), two at a time, the peak stays under a gigabyte."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", _PEAK_OF_THIN_PHOTOS, "8"], capture_output=True, text=True,
                         check=True, cwd=root)  # fmt: skip
    grown, two = map(int, run.stdout.split())
    assert device.resize_bytes(3, 1, 65_500, LITE0.input_size) > device.RESIZE_BYTES >= two
    assert grown < device.RESIZE_BYTES


def test_a_photo_the_device_has_no_memory_for_is_its_own_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory, a group is resized in halves; a photo that still does not fit fails alone."""
    thin = _thin_jpeg()
    real = DevicePreprocessor._resize_group

    def short_of_memory(self: DevicePreprocessor, images: list[Any]) -> Any:
        if any(int(image.shape[2]) == 65_500 for image in images):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.72 GiB")
        return real(self, images)

    monkeypatch.setattr(DevicePreprocessor, "_resize_group", short_of_memory)
    items = _preprocessor()([PHOTOS[0], thin, PHOTOS[1], PHOTOS[2]])
    kinds = [item.type if isinstance(item, ErrorInfo) else "ok" for item in items]
    assert kinds == ["ok", "ImageTooLargeError", "ok", "ok"]
    assert "65500x1" in items[1].message  # type: ignore[union-attr]
    for item, path in zip([items[0], *items[2:]], PHOTOS[:3], strict=True):
        assert np.abs(_rows([item])[0] - _cpu_pixels(path)).max() <= 2


def test_a_jpeg_decoded_to_another_size_than_its_header_says_is_corrupt() -> None:
    """The header passed the pixel cap; what the decoder made must be that size."""
    stand_in = pillow_decoder("cpu")

    def larger(data: list[bytes]) -> list[Any]:
        return [torch.zeros((3, 4000, 4000), dtype=torch.uint8) if len(d) < 2000 else image
                for d, image in zip(data, stand_in(data), strict=True)]  # fmt: skip

    small = _encoded(Image.new("RGB", (40, 30), (9, 9, 9)))
    items = _preprocessor(decoder=larger)([PHOTOS[0], small])
    assert not isinstance(items[0], ErrorInfo)
    assert isinstance(items[1], ErrorInfo) and items[1].type == "CorruptImageError"
    assert "4000x4000" in items[1].message and "40x30" in items[1].message


def test_jpegs_are_decoded_in_groups_within_the_decode_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "DECODED_BYTES", 1_300_000)  # about two of these photos' pixels
    decoder = Recording()
    items = _preprocessor(decoder=decoder)(PHOTOS[:5])
    assert decoder.calls == [2, 2, 1] and not any(isinstance(item, ErrorInfo) for item in items)


def test_large_files_are_read_when_their_group_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch held every file whole from its read to its decode (256 MB each at most, two batches at
    once): now a file over `LARGE_FILE_BYTES`, or past `HELD_BYTES` of its batch, is read with its decode
    group, whose budget counts it."""
    events: list[str] = []
    real_read = device.read_source

    def read(source: Any) -> bytes:
        events.append("read")
        return real_read(source)

    class Decoder(Recording):
        def __call__(self, data: Any) -> list[Any]:
            events.append(f"decode {len(data)}")
            return super().__call__(data)

    monkeypatch.setattr(device, "read_source", read)
    monkeypatch.setattr(device, "LARGE_FILE_BYTES", 0)  # every file is large
    monkeypatch.setattr(device, "DECODED_BYTES", 1_500_000)  # about two of these photos, pixels and file
    items = _preprocessor(decoder=Decoder())(PHOTOS[:5])
    assert not any(isinstance(item, ErrorInfo) for item in items)
    for item, path in zip(items, PHOTOS[:5], strict=True):
        assert np.abs(_rows([item])[0] - _cpu_pixels(path)).max() <= 2
    assert _groups_read_just_before_decoding(events) == [2, 2, 1]

    events.clear()
    monkeypatch.setattr(device, "LARGE_FILE_BYTES", 2**30)
    monkeypatch.setattr(device, "HELD_BYTES", PHOTOS[0].stat().st_size + PHOTOS[1].stat().st_size)
    monkeypatch.setattr(device, "DECODED_BYTES", 1)  # each photo alone
    _preprocessor(decoder=Decoder())(PHOTOS[:3])
    # Two read with the batch, the third with its group.
    assert events == ["read", "read", "decode 1", "decode 1", "read", "decode 1"]


def _groups_read_just_before_decoding(events: list[str]) -> list[int]:
    """The decode calls' sizes, each checked to follow exactly the reads of its own files."""
    sizes, reads = [], 0
    for event in events:
        if event == "read":
            reads += 1
            continue
        size = int(event.split()[1])
        assert reads == size, events
        sizes.append(size)
        reads = 0
    return sizes
