"""The real download path against a loopback server: hash checks, atomic writes, locking, offline."""

import hashlib
import multiprocessing
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from imagenet_zoo.errors import WeightsIntegrityError, WeightsUnavailableError
from imagenet_zoo.registry import default_registry
from imagenet_zoo.specs import ModelSpec, WeightsFile
from imagenet_zoo.weights.store import DownloadedWeights, is_verified, weights_dir
from tests.conftest import FileServer

PAYLOAD = os.urandom(3 * 2**20 + 17)


def _spec_for(payload: bytes, filename: str = "resnet50_weights_tf_dim_ordering_tf_kernels.h5") -> ModelSpec:
    """resnet50's spec, pointing at a file the test made (MD5, as Keras publishes)."""
    spec = default_registry().get("resnet50").spec
    weights = WeightsFile(
        filename, hashlib.md5(payload).hexdigest(), len(payload), url=f"https://example.invalid/{filename}"
    )
    return replace(spec, weights=weights)


def _serve(server: FileServer, name: str, payload: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    (server.root / name).write_bytes(payload)
    monkeypatch.setenv("IMAGENET_ZOO_MIRROR", server.url + "/")


def test_fetch_downloads_verifies_and_caches(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec_for(PAYLOAD)
    _serve(file_server, spec.weights.filename, PAYLOAD, monkeypatch)
    path = DownloadedWeights().fetch(spec, progress=False)
    assert path == weights_dir() / spec.weights.filename and path.read_bytes() == PAYLOAD
    assert is_verified(path, spec.weights)
    assert DownloadedWeights().fetch(spec, progress=False) == path
    assert file_server.requests == [f"/{spec.weights.filename}"]  # the second fetch used the cache
    assert [p.name for p in weights_dir().iterdir() if p.name.endswith(".part")] == []


def test_a_tampered_download_is_rejected_and_nothing_is_left(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec_for(PAYLOAD)
    tampered = bytearray(PAYLOAD)
    tampered[1000] ^= 0xFF
    _serve(file_server, spec.weights.filename, bytes(tampered), monkeypatch)
    with pytest.raises(WeightsIntegrityError, match="md5"):
        DownloadedWeights().fetch(spec, progress=False)
    assert sorted(p.name for p in weights_dir().iterdir()) == [f"{spec.weights.filename}.lock"]


def test_a_tampered_cached_file_is_removed_on_verify(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec_for(PAYLOAD)
    _serve(file_server, spec.weights.filename, PAYLOAD, monkeypatch)
    path = DownloadedWeights().fetch(spec, progress=False)
    with path.open("r+b") as f:
        f.seek(10)
        f.write(b"\x00\x01\x02")
    assert not is_verified(path, spec.weights)
    with pytest.raises(WeightsIntegrityError):
        DownloadedWeights().verify(spec)
    assert not path.exists()


def test_offline_says_how_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec_for(PAYLOAD)
    monkeypatch.setenv("IMAGENET_ZOO_MIRROR", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(WeightsUnavailableError, match=r"imagenet-zoo weights import resnet50 FILE"):
        DownloadedWeights().fetch(spec, progress=False)


def test_http_404_is_unavailable(file_server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGENET_ZOO_MIRROR", file_server.url)
    with pytest.raises(WeightsUnavailableError, match="404"):
        DownloadedWeights().fetch(_spec_for(PAYLOAD), progress=False)


def test_import_checks_the_hash(tmp_path: Path) -> None:
    spec = _spec_for(PAYLOAD)
    good, bad = tmp_path / "good.h5", tmp_path / "bad.h5"
    good.write_bytes(PAYLOAD)
    bad.write_bytes(PAYLOAD[:-1])
    with pytest.raises(WeightsIntegrityError):
        DownloadedWeights().import_file(spec, bad)
    path = DownloadedWeights().import_file(spec, good)
    assert path.read_bytes() == PAYLOAD and is_verified(path, spec.weights)


def _fetch_in_child(spec: ModelSpec, home: str, mirror: str) -> None:
    os.environ["IMAGENET_ZOO_HOME"], os.environ["IMAGENET_ZOO_MIRROR"] = home, mirror
    DownloadedWeights().fetch(spec, progress=False)


def test_two_processes_fetching_at_once_download_once(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch, isolated_home: Path
) -> None:
    payload = os.urandom(40 * 2**20)  # large enough that the two fetches overlap
    spec = _spec_for(payload)
    _serve(file_server, spec.weights.filename, payload, monkeypatch)
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_fetch_in_child, args=(spec, str(isolated_home), file_server.url))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    assert file_server.requests == [f"/{spec.weights.filename}"]
    assert (weights_dir() / spec.weights.filename).read_bytes() == payload


def test_a_damaged_cached_file_is_downloaded_again(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec_for(PAYLOAD)
    _serve(file_server, spec.weights.filename, PAYLOAD, monkeypatch)
    path = DownloadedWeights().fetch(spec, progress=False)
    path.write_bytes(b"damaged")
    assert DownloadedWeights().fetch(spec, progress=False).read_bytes() == PAYLOAD
    assert len(file_server.requests) == 2


class _HostileMirror:
    """A loopback server answering every GET with `headers` and up to `body_bytes` of data, counting what
    it managed to send before the client hung up."""

    def __init__(
        self, headers: dict[str, str], body_bytes: int, chunk_bytes: int = 2**16, pause_s: float = 0.0
    ) -> None:
        import http.server
        import threading

        mirror = self
        self.sent = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                chunk = bytes(chunk_bytes)
                try:
                    while mirror.sent < body_bytes:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        mirror.sent += len(chunk)
                        time.sleep(pause_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def test_a_mirror_cannot_fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endless body without Content-Length: the download stops at the published size, not at the end."""
    spec = _spec_for(PAYLOAD)
    mirror = _HostileMirror({"Connection": "close"}, body_bytes=256 * 2**20)
    monkeypatch.setenv("IMAGENET_ZOO_MIRROR", mirror.url)
    try:
        with pytest.raises(WeightsIntegrityError, match="more than the published"):
            DownloadedWeights().fetch(spec, progress=False)
    finally:
        mirror.close()
    assert mirror.sent < len(PAYLOAD) + 16 * 2**20  # what was in flight when the client hung up
    assert list(weights_dir().iterdir()) == [] or all(p.suffix == ".lock" for p in weights_dir().iterdir())


@pytest.mark.parametrize(
    ("length", "error", "message"),
    [
        ("12abc", WeightsUnavailableError, "malformed Content-Length"),
        ("-5", WeightsUnavailableError, "malformed Content-Length"),
        (str(10 * 2**30), WeightsIntegrityError, "declares"),
    ],
)
def test_a_bad_content_length_is_a_typed_error(
    monkeypatch: pytest.MonkeyPatch, length: str, error: type[Exception], message: str
) -> None:
    spec = _spec_for(PAYLOAD)
    mirror = _HostileMirror({"Content-Length": length, "Connection": "close"}, body_bytes=2**16)
    monkeypatch.setenv("IMAGENET_ZOO_MIRROR", mirror.url)
    try:
        with pytest.raises(error, match=message):
            DownloadedWeights().fetch(spec, progress=False)
    finally:
        mirror.close()


def test_import_writes_through_a_private_temporary_file(tmp_path: Path) -> None:
    """The temporary name was guessable (`.NAME.import`): a symlink planted there redirected the copy."""
    spec = _spec_for(PAYLOAD)
    source = tmp_path / "downloaded.h5"
    source.write_bytes(PAYLOAD)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    dest = weights_dir() / spec.weights.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    (dest.parent / f".{dest.name}.import").symlink_to(victim)
    assert DownloadedWeights().import_file(spec, source) == dest
    assert victim.read_text() == "keep me" and dest.read_bytes() == PAYLOAD and not dest.is_symlink()
    assert is_verified(dest, spec.weights)


def test_verify_waits_for_a_fetch_in_progress(tmp_path: Path) -> None:
    """verify deleted a bad file without the lock that fetch holds while it writes."""
    import threading
    import time

    from imagenet_zoo.weights.download import exclusive_lock

    spec = _spec_for(PAYLOAD)
    dest = weights_dir() / spec.weights.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(b"half written")
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with exclusive_lock(dest):
            holding.set()
            release.wait(10)
            dest.write_bytes(PAYLOAD)  # the fetch completes the file

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(10)
    threading.Timer(0.5, release.set).start()
    start = time.monotonic()
    assert DownloadedWeights().verify(spec) == dest  # waited, then found the finished file
    assert time.monotonic() - start >= 0.4
    thread.join(10)


def test_a_stalled_download_is_stopped_and_lets_go_of_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that trickles a byte within every socket timeout held the weights lock, and every other
    process waiting on it, for ever."""
    from imagenet_zoo.weights import download

    monkeypatch.setattr(download, "_STALL_S", 0.5)
    spec = _spec_for(PAYLOAD)
    mirror = _HostileMirror({"Content-Length": str(len(PAYLOAD))}, len(PAYLOAD), chunk_bytes=10, pause_s=0.05)
    monkeypatch.setenv("IMAGENET_ZOO_MIRROR", mirror.url)
    start = time.monotonic()
    try:
        with pytest.raises(WeightsUnavailableError, match="stalled"):
            DownloadedWeights().fetch(spec, progress=False)
    finally:
        mirror.close()
    assert time.monotonic() - start < 10
    assert [p.name for p in weights_dir().iterdir() if p.name.endswith(".part")] == []


def test_what_a_killed_download_left_is_removed_by_the_next(
    file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec_for(PAYLOAD)
    weights_dir().mkdir(parents=True, exist_ok=True)
    left = weights_dir() / f".{spec.weights.filename}.k1ll3d.part"
    left.write_bytes(PAYLOAD[:1000])  # kill -9 during a download leaves its temporary file
    _serve(file_server, spec.weights.filename, PAYLOAD, monkeypatch)
    DownloadedWeights().fetch(spec, progress=False)
    assert not left.exists()
    assert [p.name for p in weights_dir().iterdir() if p.name.endswith(".part")] == []
