"""`imagenet-zoo serve` as a real process: readiness, then a graceful drain on SIGTERM and exit 0."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import SAMPLE_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else "server exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError("the server did not become ready")


def test_sigterm_turns_not_ready_finishes_requests_and_exits_zero(with_lite0: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "imagenet_zoo", "serve", "--port", str(port), "--drain-seconds", "2"]
    process = subprocess.Popen(
        command, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_ready(url, process)
        photos = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in sorted(SAMPLE_DIR.iterdir())[:16]]
        late: dict[str, int] = {}

        def in_flight_at_stop() -> None:
            time.sleep(1.8)  # starts just before the drain ends, so it is in flight when the server stops
            late["status"] = httpx.post(f"{url}/v1/classify/batch", files=photos, timeout=60).status_code

        process.send_signal(signal.SIGTERM)
        worker = threading.Thread(target=in_flight_at_stop)
        worker.start()
        time.sleep(0.3)
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 503  # not ready first...
        during = httpx.post(f"{url}/v1/classify", files=[photos[0]], timeout=30)
        assert during.status_code == 200  # ...but still serving while draining
        worker.join(60)
        assert late["status"] == 200
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
