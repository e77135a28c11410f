"""The service against hostile clients, third round: the v2 protocol, slow bodies, model thrash, malformed
headers and parameters. Each test is the attack as it was reproduced."""

import asyncio
import base64
import gc
import json
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from imagenet_zoo.errors import UsageError
from imagenet_zoo.pipeline import LoadConfig
from imagenet_zoo.registry import Registry, default_registry
from imagenet_zoo.server import Settings, create_app
from imagenet_zoo.server.settings import read_api_keys
from tests.fakes import FakeEngine, fake_settings, png_bytes, register_fake, renamed

GIF_1X1 = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
LITE0 = default_registry().get("lite0")


def _infer(count: int, element: str = base64.b64encode(GIF_1X1).decode()) -> dict[str, object]:
    return {"inputs": [{"name": "IMAGE", "shape": [count], "datatype": "BYTES", "data": [element] * count}]}


def test_a_v2_request_holds_at_most_as_many_images_as_v1() -> None:
    """/v1 stopped at 16 files, /v2 at none: 3,000 1x1 GIFs in one 0.13 MiB request took a server from 1.0
    to 2.9 GB and were answered 504 after 30 s, the work going on."""
    engine = FakeEngine()
    with TestClient(create_app(fake_settings(engine))) as client:
        calls = engine.calls
        start = time.monotonic()
        many = client.post("/v2/models/efficientnet_lite0/infer", json=_infer(3000))
        assert many.status_code == 400 and "1 to 16 images" in many.json()["error"]
        assert time.monotonic() - start < 5 and engine.calls == calls  # refused from the shape alone
        lying = _infer(2)
        lying["inputs"][0]["shape"] = [1]  # type: ignore[index]
        assert client.post("/v2/models/efficientnet_lite0/infer", json=lying).status_code == 400
        assert client.post("/v2/models/efficientnet_lite0/infer", json=_infer(16)).status_code == 200


def test_a_body_of_a_million_elements_leaves_the_event_loop_free() -> None:
    """A 4 MiB body of a million empty elements stalled the event loop (health checks too) for a minute."""
    body = json.dumps(_infer(1_000_000, element="")).encode()
    assert len(body) < 6 * 2**20

    async def scenario() -> tuple[int, float, float]:
        app = create_app(fake_settings(max_upload_mb=8))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
        ):
            start = time.monotonic()
            infer = asyncio.create_task(
                client.post(
                    "/v2/models/efficientnet_lite0/infer",
                    content=body,
                    headers={"content-type": "application/json"},
                )
            )
            await asyncio.sleep(0.05)
            health_start = time.monotonic()
            await client.get("/healthz")
            health = time.monotonic() - health_start
            response = await infer
            return response.status_code, health, time.monotonic() - start

    status, health, total = asyncio.run(scenario())
    assert status == 400 and health < 1.0 and total < 10


@pytest.mark.parametrize(
    ("header", "body"),
    [
        ("¹²³", json.dumps(_infer(1)).encode()),  # digits to str.isdigit, not to int()
        ("9" * 4301, json.dumps(_infer(1)).encode()),  # past Python's limit on digits in a str-to-int
    ],
)
def test_a_malformed_binary_header_length_is_a_400(header: str, body: bytes) -> None:
    with TestClient(create_app(fake_settings())) as client:
        response = client.post(
            "/v2/models/efficientnet_lite0/infer",
            content=body,
            headers={"Inference-Header-Content-Length": header.encode("latin-1")},  # as a header carries it
        )
    assert response.status_code == 400 and "Inference-Header-Content-Length" in response.json()["error"]


@pytest.mark.parametrize("count", ['"x"', "[1]", "{}", "Infinity", "true", "0", "1.5"])
def test_a_malformed_classification_parameter_is_a_400(count: str) -> None:
    request = (
        json.dumps(_infer(1))[:-1]
        + ', "outputs": [{"name": "LABELS", "parameters": {"classification": %s}}]}'
    )
    with TestClient(create_app(fake_settings())) as client:
        response = client.post("/v2/models/efficientnet_lite0/infer", content=request % count)
    assert response.status_code == 400 and isinstance(response.json()["error"], str)


@pytest.mark.parametrize("charset", ["punycode", "idna", "base64", "utf-16"])
def test_a_multipart_file_name_in_an_odd_charset_is_echoed_not_a_500(charset: str) -> None:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="xn--!!.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + png_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={boundary}; charset={charset}"
    with TestClient(create_app(fake_settings())) as client:
        response = client.post("/v1/classify", content=body, headers={"content-type": content_type})
    assert response.status_code == 200 and response.json()["path"]


def test_the_deadline_stops_the_work() -> None:
    """Past the deadline the request answered 504 while its images went on to be decoded and inferred."""
    engine = FakeEngine(delay_s=0.3)
    settings = fake_settings(engine, deadline_s=0.5, max_batch_size=1, decode_threads=1)
    files = [("file", (f"{i}.png", png_bytes((i, i, i)), "image/png")) for i in range(16)]
    with TestClient(create_app(settings)) as client:
        calls = engine.calls
        response = client.post("/v1/classify/batch", files=files)
        assert response.status_code == 504
        time.sleep(1.5)  # what was running when the deadline passed ends; nothing new starts
        assert engine.calls - calls <= 4


def test_a_request_refused_by_a_full_queue_leaves_no_coroutine_behind() -> None:
    """The queue's second check (after the body is read) raised before the work coroutine was awaited:
    "coroutine ... was never awaited" (a RuntimeWarning) for every such 503."""
    gate = threading.Event()
    gate.set()  # the warm-up passes
    settings = fake_settings(FakeEngine(gate=gate), max_queue=1, decode_threads=1)
    with warnings.catch_warnings(record=True) as caught, TestClient(create_app(settings)) as client:
        warnings.simplefilter("always")
        gate.clear()
        first = threading.Thread(target=lambda: client.post("/v1/classify", content=png_bytes()))
        first.start()
        time.sleep(0.3)
        service = client.app.state.service  # type: ignore[attr-defined]

        async def second_check() -> int:
            try:
                await service.queue.run(lambda: asyncio.sleep(0))
            except Exception as exc:  # the ApiError of a full queue
                return int(exc.status)  # type: ignore[attr-defined]
            return 200

        assert asyncio.run(second_check()) == 503
        gate.set()
        first.join(10)
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_alternating_models_and_heatmaps_never_thrash(with_lite0: Path) -> None:
    """With two models served, alternating (model, explain) requests loaded a model for every request
    (only two stayed loaded, and a model with heatmaps was a second one)."""
    from imagenet_zoo.engines.openvino import ENGINE as OPENVINO

    loads: list[tuple[str, bool]] = []

    def load(model, request):  # type: ignore[no-untyped-def]
        loads.append((model.spec.name, request.explain))
        return OPENVINO.load(model, request)

    engine = register_fake(
        load=load, explain_methods=OPENVINO.explain_methods, explain_precisions=OPENVINO.explain_precisions,
        prepare=OPENVINO.prepare,
    )  # fmt: skip
    registry = Registry([renamed(LITE0, name) for name in ("m1", "m2")])
    settings = Settings(
        models=("m1", "m2"), registry=registry, max_loaded_models=2, load=LoadConfig(engine=engine)
    )
    with TestClient(create_app(settings)) as client:
        for _ in range(3):
            for name in ("m1", "m2"):
                for explain in ("false", "true"):
                    response = client.post(
                        f"/v1/classify?model={name}&explain={explain}", content=png_bytes()
                    )
                    assert response.status_code == 200
                    assert ("explanation" in response.json()) == (explain == "true")
    assert loads == [("m1", True), ("m2", True)]  # one model each answers plain and explained requests


def test_an_unloaded_model_finishes_its_requests_in_its_own_thread() -> None:
    """When a model was unloaded with requests in flight, their images ran inference on the event loop."""
    registry = Registry([renamed(LITE0, name) for name in ("m1", "m2")])
    gate, threads = threading.Event(), []

    class Recording(FakeEngine):
        def infer(self, batch: np.ndarray) -> np.ndarray:
            threads.append(threading.current_thread().name)
            return super().infer(batch)

    engine = Recording(gate=gate)
    settings = Settings(models=("m1", "m2"), registry=registry, max_loaded_models=1,
                        load=LoadConfig(engine=register_fake(engine)), max_batch_size=1)  # fmt: skip
    gate.set()  # the warm-up passes
    with TestClient(create_app(settings)) as client:
        gate.clear()
        threads.clear()
        files = [("file", (f"{i}.png", png_bytes((i, 0, 0)), "image/png")) for i in range(4)]
        held = threading.Thread(target=lambda: client.post("/v1/classify/batch?model=m1", files=files))
        held.start()
        time.sleep(0.3)  # m1's request waits in its engine
        other = threading.Thread(target=lambda: client.post("/v1/classify?model=m2", content=png_bytes()))
        other.start()  # loading m2 unloads m1, in use
        time.sleep(0.3)
        gate.set()
        held.join(10)
        other.join(10)
    assert threads == ["batcher"] * 5  # 4 images of m1 and one of m2, each in its model's batcher thread


def test_every_model_is_made_before_ready(
    lite0_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first heatmap request converted the explaining model while the client waited (20-22 s on an
    AVX2 EPYC, after /readyz had said ready)."""
    import shutil

    from imagenet_zoo.engines.openvino_ir import IR_FILE, ir_dir

    home = tmp_path / "home"
    shutil.copytree(lite0_home, home, symlinks=True)  # weights, and no converted model yet
    shutil.rmtree(home / "openvino", ignore_errors=True)
    monkeypatch.setenv("IMAGENET_ZOO_HOME", str(home))
    settings = Settings(models=("efficientnet_lite0", "squeezenet1_1"))
    with TestClient(create_app(settings)) as client:  # what cannot be made (no weights) is said, not built
        assert client.get("/readyz").status_code == 200
        assert (ir_dir(LITE0, explain=True) / IR_FILE).is_file()  # the one every request uses, made
        start = time.monotonic()
        response = client.post("/v1/classify?explain=true", content=png_bytes())
        assert response.status_code == 200 and time.monotonic() - start < 5
        refused = client.post("/v1/classify?model=squeezenet1_1", content=png_bytes())
        assert refused.status_code == 503 and "WeightsUnavailableError" in refused.json()["error"]["message"]


def test_an_api_key_file_open_to_others_warns_and_a_key_no_header_can_carry_is_refused(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("a-perfectly-good-key-0123\n")
    keys.chmod(0o644)
    said: list[str] = []
    assert read_api_keys(keys, warn=said.append) == ("a-perfectly-good-key-0123",)
    assert said and "chmod 600" in said[0]
    keys.chmod(0o600)
    said.clear()
    read_api_keys(keys, warn=said.append)
    assert said == []
    keys.write_text("clé-secrète-0123456789\n")  # never equal to what a latin-1 header decodes to
    with pytest.raises(UsageError, match="visible ASCII"):
        read_api_keys(keys)


def test_cors_reaches_every_answer_and_exposes_what_clients_read() -> None:
    """Browsers could not read Inference-Header-Content-Length or Retry-After; a 413 from the body limit and
    a 500 carried no CORS headers, and 413s were missing from /metrics."""

    class Failing(FakeEngine):
        def infer(self, batch: np.ndarray) -> np.ndarray:
            if batch.mean() > 0.9:
                raise RuntimeError("the engine broke")
            return super().infer(batch)

    origin = {"Origin": "https://app.example.org"}
    settings = fake_settings(Failing(), cors_origins=("https://app.example.org",), max_upload_mb=0.5)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        too_large = client.post("/v1/classify", content=b"\0" * 600_000, headers=origin)
        assert (
            too_large.status_code == 413
            and too_large.headers["access-control-allow-origin"] == origin["Origin"]
        )
        broken = client.post("/v1/classify", content=png_bytes((255, 255, 255)), headers=origin)
        assert broken.status_code == 500 and broken.headers["access-control-allow-origin"] == origin["Origin"]
        assert broken.json()["error"]["type"] == "InternalError"
        ok = client.post("/v1/classify", content=png_bytes(), headers=origin)
        exposed = ok.headers["access-control-expose-headers"]
        assert "Inference-Header-Content-Length" in exposed and "Retry-After" in exposed
        metrics = client.get("/metrics").text
    assert 'route="unmatched",status="413"' in metrics or 'status="413"' in metrics
    assert 'imagenet_zoo_errors_total{type="PayloadTooLarge"} 1.0' in metrics


@pytest.mark.slow
def test_the_load_tests_attacks_leave_ordinary_clients_served(lite0_home: Path, tmp_path: Path) -> None:
    """scripts/load_test.py's attacks, briefly: health answers within 1 s, ordinary clients get no 5xx and
    no 503, the server stays below 1.5 GB, and clients that hang up mid-upload are counted as 499."""
    import os
    import subprocess
    import sys

    measurements = tmp_path / "attacks.json"
    script = Path(__file__).parents[1] / "scripts" / "load_test.py"
    command = [sys.executable, str(script), "--phases", "attacks", "--attack-seconds", "4", "--json",
               str(measurements)]  # fmt: skip
    env = {**os.environ, "IMAGENET_ZOO_HOME": str(lite0_home)}
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = json.loads(measurements.read_text())
    assert set(rows) == {"none", "many-image v2", "slow bodies", "model thrash", "hang-ups"}
    hang_ups = rows["hang-ups"]["attack_statuses"]  # what the server counted them as (JSON: text keys)
    assert int(hang_ups.get("499", 0)) > 0 and not any(status.startswith("5") for status in hang_ups)
    for row in rows.values():
        assert row["5xx"] == row["503"] == 0 and row["rate"] > 0
        assert row["health_max_ms"] < 1000 and row["peak_rss_mb"] < 1536


def test_a_client_that_hangs_up_mid_upload_is_counted_as_the_clients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """20 uploads cut short gave 20 ERROR tracebacks in the log and 20 requests counted 500 in /metrics:
    Starlette's ClientDisconnect was not caught. It is the client's (499, as nginx counts it), one line.
    A method no client should send is counted as OTHER: under h11 the label grew with every new token."""

    async def scenario() -> str:
        app = create_app(fake_settings())
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
                 "method": "POST", "path": "/v1/classify", "raw_path": b"/v1/classify", "query_string": b"",
                 "headers": [(b"content-type", b"image/png"), (b"content-length", b"100000")],
                 "client": ("127.0.0.1", 1), "server": ("test", 80)}  # fmt: skip
        messages: Iterator[dict[str, object]] = iter([])
        sent: list[dict[str, object]] = []

        async def receive() -> object:
            return next(messages)

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        async with app.router.lifespan_context(app):
            for _ in range(3):
                messages = iter([{"type": "http.request", "body": png_bytes()[:20], "more_body": True},
                                 {"type": "http.disconnect"}])  # fmt: skip
                await app(dict(scope), receive, send)
            await app({**scope, "method": "BREW", "path": "/", "raw_path": b"/"}, receive, send)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return (await client.get("/metrics")).text

    with caplog.at_level("INFO"):
        metrics = asyncio.run(scenario())
    counted = [line for line in metrics.splitlines() if line.startswith("imagenet_zoo_requests_total{")]
    assert any('status="499"' in line and line.endswith(" 3.0") for line in counted), counted
    assert not any('status="500"' in line for line in counted), counted
    assert any('method="OTHER"' in line for line in counted) and not any("BREW" in line for line in counted)
    assert not [r for r in caplog.records if r.levelname == "ERROR" or r.exc_info]
    assert sum("hung up" in r.getMessage() for r in caplog.records) == 3
