"""Shared fixtures. Tests never touch the network or the user's cache: every test gets its own
`IMAGENET_ZOO_HOME` and a mirror where nothing listens, and the EfficientNet-Lite0 conversion is done once
per session into its own home."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SAMPLE_DIR = SHARED / "data" / "imagenet-sample"
REFERENCE_IO = SHARED / "data" / "efficientnet_lite0_reference_io.npz"


def sample_folder(folder: Path, count: int, *, broken: str | None = None) -> Path:
    """A new folder holding the first `count` shared photos (their names keep their labels), and a
    truncated JPEG named `broken` if given."""
    folder.mkdir()
    for photo in sorted(SAMPLE_DIR.iterdir())[:count]:
        shutil.copy(photo, folder / photo.name)
    if broken:
        (folder / broken).write_bytes(b"\xff\xd8\xff broken")
    return folder


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The CLI run in-process: exit code (argparse's usage errors included), stdout, stderr."""
    from imagenet_zoo.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# Runs `python -m MODULE ...` or `python -c CODE ...`, then writes its own peak RSS (VmHWM, kB) to the
# file named by the environment: a child's getrusage peak would include the pytest process it was
# forked from, which is far larger late in a full run.
_PEAK_WRAPPER = """
import atexit, os, runpy, sys
def _peak():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["IMAGENET_ZOO_TEST_PEAK"], "w") as out:
        out.write(peak)
atexit.register(_peak)
flag, target, *sys.argv[1:] = sys.argv[1:]
if flag == "-m":
    sys.argv[0] = target
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv[0] = "-c"
    exec(compile(target, "<string>", "exec"), {"__name__": "__main__"})
"""


def run_measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """`python -m ...` or `python -c ...` (argv[0] the interpreter): exit code, output, and its own peak
    resident memory in MB."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        child_env = {**(env or os.environ), "IMAGENET_ZOO_TEST_PEAK": str(peak_file)}
        run = subprocess.run(
            [argv[0], "-c", _PEAK_WRAPPER, *argv[1:]],
            capture_output=True,
            text=True,
            env=child_env,
            check=False,
        )
        peak_mb = int(peak_file.read_text()) / 1024 if peak_file.exists() else float("inf")
        return run.returncode, run.stdout + run.stderr, peak_mb


def skimage_photo(name: str) -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / name


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SAMPLE_DIR.is_dir(), f"test data missing: {SAMPLE_DIR} (../shared must sit beside the checkout)"
    return SHARED / "data"


@pytest.fixture(autouse=True)
def isolated_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engines a test registers (`tests.fakes.register_fake`) are gone when it ends."""
    from imagenet_zoo.engines.registry import engine_registry

    registry = engine_registry()
    monkeypatch.setattr(registry, "_engines", dict(registry._engines))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "zoo-home"
    monkeypatch.setenv("IMAGENET_ZOO_HOME", str(home))
    # Any download a test does not serve itself fails at once (the discard port: nothing listens).
    monkeypatch.setenv("IMAGENET_ZOO_MIRROR", "http://127.0.0.1:9")
    return home


@pytest.fixture(scope="session")
def lite0_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache for EfficientNet-Lite0, its packaged weights verified once for the whole session."""
    from imagenet_zoo.registry import default_registry

    home = tmp_path_factory.mktemp("lite0-home")
    previous = os.environ.get("IMAGENET_ZOO_HOME")
    os.environ["IMAGENET_ZOO_HOME"] = str(home)
    try:
        model = default_registry().get("efficientnet_lite0")
        model.weights.fetch(model.spec, progress=False)
    finally:
        if previous is None:
            del os.environ["IMAGENET_ZOO_HOME"]
        else:
            os.environ["IMAGENET_ZOO_HOME"] = previous
    return home


@pytest.fixture
def with_lite0(lite0_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMAGENET_ZOO_HOME", str(lite0_home))
    return lite0_home


@pytest.fixture(scope="session")
def lite0_classifier(lite0_home: Path):  # type: ignore[no-untyped-def]
    import imagenet_zoo

    os.environ["IMAGENET_ZOO_HOME"] = str(lite0_home)
    try:
        return imagenet_zoo.load("efficientnet_lite0", progress=False, batch_size=16)
    finally:
        del os.environ["IMAGENET_ZOO_HOME"]


class FileServer:
    """A loopback HTTP server for files a test made; counts GET requests per path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "served"
    root.mkdir()
    server = FileServer(root)
    yield server
    server.close()


@contextmanager
def running_app(settings: Any, port: int) -> Iterator[str]:
    """`create_app(settings)` under uvicorn in a thread, on loopback; yields its host:port."""
    import uvicorn

    from imagenet_zoo.server import create_app

    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
