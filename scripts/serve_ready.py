"""How soon a service is ready on a fresh home: `imagenet-zoo serve` started with an empty
`IMAGENET_ZOO_HOME` (every variant it serves is built before `/readyz` answers), then a plain request and
two heatmap requests of one photo. Prints one JSON line of seconds.

    python scripts/serve_ready.py VENV PHOTO.jpg
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def main() -> None:
    venv, photo = sys.argv[1], sys.argv[2]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tempfile.mkdtemp()
    start = time.perf_counter()
    server = subprocess.Popen(
        [f"{venv}/bin/imagenet-zoo", "serve", "--port", str(port)],
        env={**os.environ, "IMAGENET_ZOO_HOME": home},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        seconds = {"ready": _wait_ready(base) - start}
        body = Path(photo).read_bytes()
        for label, query in (("plain", ""), ("heatmap", "?explain=true"), ("heatmap again", "?explain=true")):
            sent = time.perf_counter()
            request = urllib.request.Request(
                f"{base}/v1/classify{query}", data=body, headers={"Content-Type": "image/jpeg"}
            )
            answer = json.loads(urllib.request.urlopen(request, timeout=120).read())
            seconds[label] = time.perf_counter() - sent
        shown = {label: round(value, 2) for label, value in seconds.items()}
        print(json.dumps({**shown, "top": answer["predictions"][0]["label"]}))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(home)


def _wait_ready(base: str) -> float:
    while True:
        try:
            if urllib.request.urlopen(f"{base}/readyz", timeout=1).status == 200:
                return time.perf_counter()
        except OSError:
            time.sleep(0.05)


if __name__ == "__main__":
    main()
