"""The HTTP service through the real app: API, errors for hostile input, queue, deadline, metrics."""

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import imagenet_zoo
from imagenet_zoo.pipeline import LoadConfig
from imagenet_zoo.registry import Registry, default_registry
from imagenet_zoo.server import Settings, create_app
from tests.conftest import SAMPLE_DIR, skimage_photo
from tests.fakes import FakeEngine, fake_settings, png_bytes, register_fake, renamed
from tests.test_images import png_header_only

LITE0 = default_registry().get("efficientnet_lite0")
TENCH = (SAMPLE_DIR / "n01440764_tench.JPEG").read_bytes()


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(fake_settings(max_upload_mb=0.5))) as c:
        yield c


def _error(response) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"} and body["error"]["message"]
    return response.status_code, body["error"]["type"]


def test_health_readiness_models_docs_and_page(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    [model] = client.get("/v1/models").json()
    assert model["name"] == "efficientnet_lite0" and model["default"] and model["loaded"] and model["ready"]
    assert not model["explain"]  # the fake engine draws no heatmaps
    assert client.get("/docs").status_code == 200
    document = client.get("/openapi.json").json()
    assert "/v1/classify" in document["paths"]
    # One version: the package's, in the OpenAPI document as in v2's server metadata (it was 0.1.0 there).
    assert document["info"]["version"] == client.get("/v2").json()["version"] == imagenet_zoo.__version__
    page = client.get("/")
    assert page.status_code == 200 and '<select id="model"' in page.text and "cdn" not in page.text.lower()


def test_readiness_waits_for_the_default_model() -> None:
    app = create_app(fake_settings())
    with TestClient(app) as c:
        assert c.get("/readyz").status_code == 200
        app.state.service.draining = True
        assert _error(c.get("/readyz")) == (503, "NotReady")


def test_classify_multipart_and_raw_body(client: TestClient) -> None:
    response = client.post("/v1/classify?top_k=3", files={"file": ("cat.png", png_bytes(), "image/png")})
    assert response.status_code == 200
    body = response.json()
    assert (
        body["path"] == "cat.png" and body["model"] == "efficientnet_lite0" and len(body["predictions"]) == 3
    )
    assert body["input"] == {
        "format": "PNG",
        "width": 64,
        "height": 48,
        "mode": "RGB",
        "exif_transposed": False,
    }
    raw = client.post("/v1/classify", content=png_bytes(), headers={"content-type": "image/png"})
    assert raw.status_code == 200 and raw.json()["predictions"][0]["index"] == body["predictions"][0]["index"]


def test_media_type_is_decided_by_content(client: TestClient) -> None:
    labelled_text = client.post("/v1/classify", content=png_bytes(), headers={"content-type": "text/plain"})
    assert labelled_text.status_code == 200  # a PNG is a PNG, whatever it is called
    fake_jpeg = client.post("/v1/classify", files={"file": ("photo.jpg", b"just some words", "image/jpeg")})
    assert _error(fake_jpeg) == (415, "UnsupportedImageError")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", (422, "EmptyImageError")),
        (png_bytes()[:60], (422, "CorruptImageError")),
        (png_header_only(50_000, 50_000), (422, "ImageTooLargeError")),
        (b"%PDF-1.4 not an image", (415, "UnsupportedImageError")),
    ],
)
def test_bad_images(client: TestClient, content: bytes, expected: tuple[int, str]) -> None:
    assert _error(client.post("/v1/classify", content=content)) == expected
    assert _error(client.post("/v1/classify", files={"file": ("x.png", content, "image/png")})) == expected


def test_oversized_bodies_are_refused_declared_or_chunked(client: TestClient) -> None:
    big = b"\x00" * (600 * 1024)  # over the 0.5 MB limit of this app
    assert _error(client.post("/v1/classify", content=big)) == (413, "PayloadTooLarge")

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"\x00" * 10_000  # 1 MB in total, no Content-Length

    assert _error(client.post("/v1/classify", content=chunks())) == (413, "PayloadTooLarge")
    lying = client.post("/v1/classify", content=b"x", headers={"content-length": "99999999999"})
    assert lying.status_code == 413


def test_hostile_multipart(client: TestClient) -> None:
    many = [("file", (f"{i}.png", b"x", "image/png")) for i in range(40)]
    assert _error(client.post("/v1/classify/batch", files=many))[0] == 400
    two = [("file", ("a.png", png_bytes(), "image/png")), ("file", ("b.png", png_bytes(), "image/png"))]
    assert _error(client.post("/v1/classify", files=two))[0] == 400  # one image per /v1/classify
    huge_field = client.post(
        "/v1/classify", data={"note": "x" * 200_000}, files={"file": ("a.png", png_bytes())}
    )
    assert _error(huge_field)[0] == 400
    no_file = client.post("/v1/classify", files={"notes": ("notes.txt", b"hello", "text/plain")})
    assert _error(no_file) == (400, "MalformedRequest")
    form_encoded = client.post("/v1/classify", data={"model": "efficientnet_lite0"})
    assert _error(form_encoded) == (415, "UnsupportedImageError")  # not multipart, and not an image


def test_path_like_filenames_are_only_echoed(client: TestClient, tmp_path: Path) -> None:
    for name in ("../../etc/passwd", "..\\..\\boot.ini", "/abs/path/x.png", "a\x00b\nc.png"):
        response = client.post("/v1/classify", files={"file": (name, png_bytes(), "image/png")})
        assert response.status_code == 200
        echoed = response.json()["path"]
        assert "/" not in echoed and "\\" not in echoed and "\x00" not in echoed and "\n" not in echoed


def test_parameters_and_unknown_models(client: TestClient) -> None:
    upload = {"file": ("a.png", png_bytes(), "image/png")}
    assert _error(client.post("/v1/classify?model=alexnet", files=upload)) == (404, "UnknownModelError")
    assert _error(client.post("/v1/classify?model=vgg16", files=upload)) == (
        404,
        "UnknownModelError",
    )  # not served
    assert _error(client.post("/v1/classify?top_k=0", files=upload)) == (422, "InvalidParameter")
    assert _error(client.post("/v1/classify?top_k=abc", files=upload)) == (422, "InvalidParameter")
    assert client.post("/v1/classify?model=lite0", files=upload).status_code == 200  # aliases work
    assert _error(client.get("/v1/nothing-here"))[0] == 404


def test_batch_reports_each_file(client: TestClient) -> None:
    files = [
        ("file", ("red.png", png_bytes((250, 0, 0)), "image/png")),
        ("file", ("broken.jpg", TENCH[: len(TENCH) // 3], "image/jpeg")),
        ("file", ("dark.png", png_bytes((5, 5, 5)), "image/png")),
    ]
    response = client.post("/v1/classify/batch?top_k=2", files=files)
    assert response.status_code == 200
    red, broken, dark = response.json()
    assert red["path"] == "red.png" and len(red["predictions"]) == 2
    assert broken == {
        "path": "broken.jpg",
        "error": {"type": "CorruptImageError", "message": broken["error"]["message"]},
    }
    assert dark["predictions"][0]["index"] != red["predictions"][0]["index"]


def test_a_full_queue_answers_503_at_once() -> None:
    gate = threading.Event()
    settings = fake_settings(FakeEngine(gate=gate), max_queue=1, decode_threads=1)
    with TestClient(create_app(settings)) as c:
        gate.set()  # let the warm-up through, then hold the next inference
        time.sleep(0.1)
        gate.clear()
        upload = {"file": ("a.png", png_bytes(), "image/png")}
        first: dict[str, int] = {}
        worker = threading.Thread(
            target=lambda: first.update(code=c.post("/v1/classify", files=upload).status_code)
        )
        worker.start()
        time.sleep(0.3)  # the first request now holds the only queue slot
        start = time.perf_counter()
        busy = c.post("/v1/classify", files=upload)
        assert _error(busy) == (503, "Overloaded") and busy.headers["retry-after"] == "1"
        assert time.perf_counter() - start < 1.0
        metrics = c.get("/metrics").text
        assert "imagenet_zoo_queue_depth 1.0" in metrics
        gate.set()
        worker.join(10)
        assert first["code"] == 200


def test_past_the_deadline_is_504() -> None:
    with TestClient(create_app(fake_settings(FakeEngine(delay_s=0.5), deadline_s=0.2))) as c:
        response = c.post("/v1/classify", files={"file": ("a.png", png_bytes(), "image/png")})
        assert _error(response) == (504, "DeadlineExceeded")


def test_metrics(client: TestClient) -> None:
    client.post("/v1/classify", files={"file": ("a.png", png_bytes(), "image/png")})
    client.post("/v1/classify", content=b"")
    text = client.get("/metrics").text
    assert 'imagenet_zoo_requests_total{method="POST",route="/v1/classify",status="200"} 1.0' in text
    assert 'imagenet_zoo_requests_total{method="POST",route="/v1/classify",status="422"} 1.0' in text
    assert 'imagenet_zoo_errors_total{type="EmptyImageError"} 1.0' in text
    assert 'imagenet_zoo_request_seconds_bucket{le="0.005",route="/v1/classify"}' in text


def test_models_load_lazily_and_the_least_recently_used_is_unloaded() -> None:
    registry = Registry([renamed(LITE0, n) for n in ("m1", "m2", "m3")])
    loads: list[str] = []

    def load(model, request):  # type: ignore[no-untyped-def]
        loads.append(model.spec.name)
        return FakeEngine()

    engine = register_fake(load=load)
    settings = Settings(
        models=("m1", "m2", "m3"), registry=registry, load=LoadConfig(engine=engine), max_loaded_models=2
    )
    with TestClient(create_app(settings)) as c:
        assert loads == ["m1"]  # only the default, at start-up
        upload = {"file": ("a.png", png_bytes(), "image/png")}
        for name in ("m2", "m3", "m1"):
            assert c.post(f"/v1/classify?model={name}", files=upload).status_code == 200
        assert loads == ["m1", "m2", "m3", "m1"]  # m1 was unloaded when m3 arrived
        assert {m["name"]: m["loaded"] for m in c.get("/v1/models").json()} == {
            "m1": True,
            "m2": False,
            "m3": True,
        }


def test_with_the_real_model(with_lite0: Path) -> None:
    with TestClient(create_app(Settings())) as c:
        photo = skimage_photo("coffee.png").read_bytes()
        body = c.post("/v1/classify", files={"file": ("coffee.png", photo, "image/png")}).json()
        assert body["predictions"][0]["label"] == "espresso" and body["predictions"][0]["score"] > 0.9
        tench = (SAMPLE_DIR / "n01440764_tench.JPEG").read_bytes()
        assert c.post("/v1/classify", content=tench).json()["predictions"][0]["synset"] == "n01440764"


def test_the_model_cache_is_bounded_by_weight_memory() -> None:
    vgg = default_registry().get("vgg19")  # 143.7 M parameters: 548 MB in fp32
    registry = Registry([renamed(vgg, n) for n in ("big1", "big2", "big3")])
    settings = fake_settings(
        models=("big1", "big2", "big3"), registry=registry, max_loaded_models=10, max_model_memory_mb=1200
    )
    with TestClient(create_app(settings)) as c:
        upload = {"file": ("a.png", png_bytes(), "image/png")}
        for name in ("big2", "big3"):
            assert c.post(f"/v1/classify?model={name}", files=upload).status_code == 200
        loaded = {m["name"] for m in c.get("/v1/models").json() if m["loaded"]}
        assert loaded == {"big2", "big3"}  # two fit in 1,200 MB, three do not: big1 went first


def test_a_request_cannot_make_the_server_load_a_path(client: TestClient, tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "bundle.json").write_text("{not json")  # would raise BundleError if it were ever read
    upload = {"file": ("a.png", png_bytes(), "image/png")}
    response = client.post("/v1/classify", params={"model": str(planted)}, files=upload)
    assert _error(response) == (404, "UnknownModelError")
    assert all(m["name"] != "planted" for m in client.get("/v1/models").json())


def test_explain_returns_the_heatmap_and_an_overlay(with_lite0: Path) -> None:
    import base64

    settings = Settings(models=("efficientnet_lite0", "vgg16"))
    with TestClient(create_app(settings)) as c:
        photo = {"file": ("bulldog.jpg", (SAMPLE_DIR / "n02108915_French_bulldog.JPEG").read_bytes())}
        body = c.post("/v1/classify?explain=true&groups=dog", files=photo).json()
        explanation = body["explanation"]
        assert (
            explanation["method"] == "cam" and explanation["class_index"] == body["predictions"][0]["index"]
        )
        assert np.array(explanation["grid"]).shape == (7, 7) and len(explanation["region"]) == 4
        assert body["groups"][0]["name"] == "dog" and body["groups"][0]["score"] > 0.9
        prefix = "data:image/png;base64,"
        assert explanation["overlay"].startswith(prefix)
        overlay = Image.open(io.BytesIO(base64.b64decode(explanation["overlay"][len(prefix) :])))
        assert overlay.format == "PNG" and max(overlay.size) <= 512 and overlay.size[0] > overlay.size[1]
        plain = c.post("/v1/classify", files=photo).json()
        assert "explanation" not in plain and plain["predictions"] == body["predictions"]
        batch = c.post("/v1/classify/batch?explain=true", files=[("file", photo["file"])] * 2).json()
        assert [r["explanation"]["class_index"] for r in batch] == [explanation["class_index"]] * 2
        refused = c.post("/v1/classify?model=vgg16&explain=true", files=photo)
        assert refused.status_code == 422 and refused.json()["error"]["type"] == "ExplanationUnsupportedError"
        assert "--engine keras" in refused.json()["error"]["message"]
        rows = {m["name"]: m for m in c.get("/v1/models").json()}
        assert rows["efficientnet_lite0"]["explain"]
        assert "vgg16" not in rows  # its weights are not on this machine: left out, and said why in the log


def test_explain_on_an_engine_that_cannot_is_a_clear_422(client: TestClient) -> None:
    response = client.post("/v1/classify?explain=true", files={"file": ("t.jpg", TENCH)})
    assert response.status_code == 422 and response.json()["error"]["type"] == "ExplanationUnsupportedError"


def test_concurrent_requests_share_engine_calls_and_keep_their_answers() -> None:
    from concurrent.futures import ThreadPoolExecutor

    class Recording(FakeEngine):
        def __init__(self) -> None:
            super().__init__(delay_s=0.05)
            self.sizes: list[int] = []

        def infer(self, batch: np.ndarray) -> np.ndarray:
            self.sizes.append(len(batch))
            return super().infer(batch)

    engine = Recording()
    shades = [png_bytes((30 * i, 20 * i, 10 * i)) for i in range(8)]
    uploads = [*shades, b"not an image", TENCH[:300], *shades]
    with TestClient(create_app(fake_settings(engine, max_batch_delay_ms=20, max_batch_size=8))) as c:
        alone = [c.post("/v1/classify", content=photo).json()["predictions"][0]["index"] for photo in shades]
        engine.sizes.clear()
        with ThreadPoolExecutor(len(uploads)) as pool:
            answers = list(pool.map(lambda body: c.post("/v1/classify", content=body), uploads))
        metrics = c.get("/metrics").text
    good = [a.json()["predictions"][0]["index"] for a in answers if a.status_code == 200]
    assert good == alone + alone  # batch-mates never change an answer
    assert [a.status_code for a in answers[8:10]] == [415, 422]  # the broken ones fail alone
    assert sum(engine.sizes) == 16 and max(engine.sizes) > 1 and len(engine.sizes) < 16
    assert 'imagenet_zoo_batch_size_count{model="efficientnet_lite0"}' in metrics
    assert "imagenet_zoo_batch_queue_seconds_bucket" in metrics


KEY = "k" * 8 + "-secret-0123456789"


def test_bearer_keys_guard_the_api_and_leave_health_open(tmp_path: Path) -> None:
    from imagenet_zoo.errors import UsageError
    from imagenet_zoo.server.settings import read_api_keys

    keys = tmp_path / "keys"
    keys.write_text(f"# rotated monthly\n{KEY}\n\nanother-key-000000000\n")
    settings = replace(fake_settings(), api_keys=read_api_keys(keys))
    assert KEY not in repr(settings)
    with TestClient(create_app(settings)) as c:
        for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/", "/openapi.json"):
            assert c.get(path).status_code == 200, path
        guarded = [("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/v1/classify"),
                   ("GET", "/v2/models/efficientnet_lite0"), ("POST", "/v2/models/lite0/infer")]  # fmt: skip
        for method, path in guarded:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
                response = c.request(
                    method, path, headers=headers, content=TENCH if method == "POST" else None
                )
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"].startswith("Bearer") and KEY not in response.text
        good = {"Authorization": f"Bearer {KEY}"}
        assert c.post("/v1/classify", content=TENCH, headers=good).status_code == 200
        other = {"Authorization": "Bearer another-key-000000000"}
        assert c.get("/v1/models", headers=other).status_code == 200
    for text, message in [("", "no API key"), ("short\n", "at least 16")]:
        keys.write_text(text)
        with pytest.raises(UsageError, match=message):
            read_api_keys(keys)


def test_cors_allows_only_the_listed_origins() -> None:
    settings = replace(fake_settings(), cors_origins=("https://app.example.org",))
    with TestClient(create_app(settings)) as c:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        allowed = c.options("/v1/classify", headers={"Origin": "https://app.example.org", **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.org"
        refused = c.options("/v1/classify", headers={"Origin": "https://evil.example.com", **preflight})
        assert "access-control-allow-origin" not in refused.headers
        simple = c.get("/v1/models", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in simple.headers
    with TestClient(create_app(fake_settings())) as c:  # no origins given: no CORS headers at all
        response = c.get("/v1/models", headers={"Origin": "https://app.example.org"})
        assert "access-control-allow-origin" not in response.headers


def test_a_gpu_service_batches_more_and_queues_more_by_default() -> None:
    """At concurrency 64 a CPU service's queue of 32 would answer half the clients 503, and a GPU's engine
    call of 8 leaves it idle; what the user sets wins on either device."""
    cpu, gpu = Settings(load=LoadConfig(device="cpu")), Settings(load=LoadConfig(device="cuda"))
    assert (cpu.batching.max_batch_size, cpu.queue_limit) == (8, 32)
    assert (gpu.batching.max_batch_size, gpu.queue_limit) == (64, 256)
    chosen = Settings(load=LoadConfig(device="cuda"), max_batch_size=16, max_queue=40)
    assert (chosen.batching.max_batch_size, chosen.queue_limit) == (16, 40)


def test_a_model_that_cannot_be_made_is_left_out_of_the_list_and_said_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its weights are not on this machine, or an extra it needs is not installed: the service starts
    with the others, lists only what it can serve, and says why in its log."""
    from imagenet_zoo.errors import WeightsUnavailableError

    registry = Registry([renamed(LITE0, n) for n in ("m1", "m2")])

    def prepare(model, request):  # type: ignore[no-untyped-def]
        if model.spec.name == "m2":
            raise WeightsUnavailableError("m2's weights are not on this machine")

    engine = register_fake(FakeEngine(), prepare=prepare)
    settings = Settings(models=("m1", "m2"), registry=registry, load=LoadConfig(engine=engine))
    with caplog.at_level("WARNING"), TestClient(create_app(settings)) as c:
        assert [m["name"] for m in c.get("/v1/models").json()] == ["m1"]
        upload = {"file": ("a.png", png_bytes(), "image/png")}
        answer = c.post("/v1/classify?model=m2", files=upload)
        assert answer.status_code == 503 and "not on this machine" in answer.json()["error"]["message"]
    assert "m2 cannot be served: WeightsUnavailableError" in caplog.text
