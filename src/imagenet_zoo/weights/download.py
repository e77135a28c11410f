"""Hash-checked, atomic, lock-protected downloads.

The file is streamed into a temporary file beside its destination while being hashed, then renamed
into place only if the hash matches, so a crash or a tampered mirror never leaves a file that looks
valid. An exclusive lock next to the destination makes two processes that want the same file wait
for each other instead of downloading it twice into the same place.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from imagenet_zoo.errors import WeightsIntegrityError, WeightsUnavailableError
from imagenet_zoo.progress import Progress
from imagenet_zoo.specs import WeightsFile

_CHUNK = 1 << 20
_TIMEOUT_S = 60
# A download that brings fewer than _STALL_BYTES in _STALL_S is stopped: a server that trickles a byte
# within every socket timeout would hold the weights' lock, and every process waiting on it, for ever.
_STALL_S = 60.0
_STALL_BYTES = 64 << 10


def file_digest(path: Path, algorithm: str) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


@contextlib.contextmanager
def exclusive_lock(target: Path) -> Iterator[None]:
    """Hold an advisory lock on `target`'s sibling `.lock` file (released when the process dies)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def download(url: str, dest: Path, expected: WeightsFile, *, progress: bool = True) -> None:
    """Download `url` to `dest`, verifying `expected.hash`; `dest` appears only when it is valid."""
    write_verified(dest, expected, url, lambda out: _stream_to(url, out, expected, progress=progress))


def copy_verified(source: Path, dest: Path, expected: WeightsFile) -> None:
    """Copy `source` to `dest`, verifying the copy's hash; `dest` appears only when it is valid."""

    def copy(out: IO[bytes]) -> str:
        hasher = hashlib.new(expected.hash_algorithm)
        with source.open("rb") as f:
            while chunk := f.read(_CHUNK):
                hasher.update(chunk)
                out.write(chunk)
        return hasher.hexdigest()

    write_verified(dest, expected, str(source), copy)


def write_verified(dest: Path, expected: WeightsFile, origin: str, fill: Callable[[IO[bytes]], str]) -> None:
    """`fill` writes the file into a private temporary file beside `dest` (created exclusively, so a
    symlink planted at a guessable name cannot redirect it) and returns its hex digest; the file is
    renamed to `dest` only if that is the published hash, and removed otherwise."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # What a killed earlier attempt left (every caller holds `dest`'s lock, so none is being written).
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.part"):
        stale.unlink(missing_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = fill(out)
            out.flush()
            os.fsync(out.fileno())
        if not expected.matches(digest):
            raise WeightsIntegrityError(
                f"{origin} does not match the published {expected.hash_algorithm} of {expected.filename} "
                f"(expected {expected.hash}, got {digest}); it was not kept"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _declared_length(url: str, header: str | None, expected: WeightsFile) -> int:
    """The length a server declares, checked: a malformed one, or one past the published size, is refused."""
    if header is None:
        return expected.size
    if not header.strip().isdigit():
        raise WeightsUnavailableError(f"could not download {url}: malformed Content-Length {header[:40]!r}")
    if int(header) > expected.size:
        raise WeightsIntegrityError(
            f"{url} declares {int(header):,} bytes, more than the published {expected.size:,}; not downloaded"
        )
    return int(header)


class _StallCheck:
    """Stops a download whose last `_STALL_S` brought fewer than `_STALL_BYTES`."""

    def __init__(self, url: str) -> None:
        self.url, self.since, self.bytes = url, time.monotonic(), 0

    def add(self, count: int) -> None:
        self.bytes += count
        now = time.monotonic()
        if now - self.since < _STALL_S:
            return
        if self.bytes < _STALL_BYTES:
            seconds = now - self.since
            raise WeightsUnavailableError(
                f"could not download {self.url}: it stalled ({self.bytes:,} bytes in {seconds:.0f} s)"
            )
        self.since, self.bytes = now, 0


def _stream_to(url: str, out: IO[bytes], expected: WeightsFile, *, progress: bool) -> str:
    hasher = hashlib.new(expected.hash_algorithm)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            total = _declared_length(url, response.headers.get("Content-Length"), expected)
            bar = Progress(
                f"Downloading {expected.filename}",
                total,
                unit="MiB",
                scale=2**20,
                enabled=None if progress else False,
            )
            received, stall = 0, _StallCheck(url)
            # Never more than the published size (plus one byte to notice): a mirror cannot fill the disk.
            # read1: what one receive brings, so a trickle is seen between chunks, not inside one.
            while chunk := response.read1(min(_CHUNK, expected.size + 1 - received)):
                received += len(chunk)
                if received > expected.size:
                    raise WeightsIntegrityError(
                        f"{url} sends more than the published {expected.size:,} bytes; download stopped"
                    )
                stall.add(len(chunk))
                hasher.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
            bar.close()
    except urllib.error.HTTPError as exc:
        raise WeightsUnavailableError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsUnavailableError(f"could not download {url}: {reason}") from exc
    return hasher.hexdigest()
