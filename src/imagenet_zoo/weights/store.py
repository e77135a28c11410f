"""The weights cache and the two kinds of weights providers (downloaded, and shipped in a package).

Cache layout: `$IMAGENET_ZOO_HOME/weights/<filename>` (default `~/.cache/imagenet-zoo`). Beside each
verified file sits `<filename>.verified`, recording the size, mtime and hash that were checked, so a
load re-hashes a file only when it changed on disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from imagenet_zoo.errors import UsageError, WeightsIntegrityError, WeightsUnavailableError
from imagenet_zoo.specs import ModelSpec, WeightsFile
from imagenet_zoo.weights.download import copy_verified, download, exclusive_lock, file_digest

HOME_ENV = "IMAGENET_ZOO_HOME"
MIRROR_ENV = "IMAGENET_ZOO_MIRROR"


def cache_dir() -> Path:
    if home := os.environ.get(HOME_ENV):
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "imagenet-zoo"


def weights_dir() -> Path:
    return cache_dir() / "weights"


def source_url(weights: WeightsFile) -> str:
    """The URL to fetch: the published one, or `$IMAGENET_ZOO_MIRROR/<filename>` on air-gapped sites."""
    if mirror := os.environ.get(MIRROR_ENV):
        return f"{mirror.rstrip('/')}/{weights.filename}"
    if weights.url is None:
        raise WeightsUnavailableError(f"{weights.filename} has no download URL")
    return weights.url


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp_text(path: Path, weights: WeightsFile) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns} {weights.hash}"


def is_verified(path: Path, weights: WeightsFile) -> bool:
    """True when `path` exists and was hash-checked since it last changed."""
    stamp = _stamp_path(path)
    return path.is_file() and stamp.is_file() and stamp.read_text() == _stamp_text(path, weights)


def verify_file(path: Path, weights: WeightsFile) -> None:
    """Hash-check `path`; a mismatching file is removed so nothing ever loads it."""
    if not path.is_file():
        raise WeightsUnavailableError(f"{path} does not exist")
    digest = file_digest(path, weights.hash_algorithm)
    if not weights.matches(digest):
        path.unlink(missing_ok=True)
        _stamp_path(path).unlink(missing_ok=True)
        raise WeightsIntegrityError(
            f"{path.name} does not match its published {weights.hash_algorithm} "
            f"(expected {weights.hash}, got {digest}); the file was removed"
        )
    _stamp_path(path).write_text(_stamp_text(path, weights))


class WeightsProvider(Protocol):
    """How one model's weights are obtained; the CLI's `weights` commands speak only to this."""

    def path(self, spec: ModelSpec, *, include_top: bool = True) -> Path:
        """Where the loadable weights file is (or will be) on this machine."""
        ...

    def is_present(self, spec: ModelSpec, *, include_top: bool = True) -> bool: ...

    def fetch(self, spec: ModelSpec, *, include_top: bool = True, progress: bool = True) -> Path:
        """Make the weights present and verified; return the loadable file."""
        ...

    def verify(self, spec: ModelSpec, *, include_top: bool = True) -> Path: ...

    def import_file(self, spec: ModelSpec, file: Path, *, include_top: bool = True) -> Path: ...


class DownloadedWeights:
    """Weights published at a URL (the official Keras files), cached after a verified download."""

    def path(self, spec: ModelSpec, *, include_top: bool = True) -> Path:
        return weights_dir() / spec.weights_file(include_top=include_top).filename

    def is_present(self, spec: ModelSpec, *, include_top: bool = True) -> bool:
        return self.path(spec, include_top=include_top).is_file()

    def fetch(self, spec: ModelSpec, *, include_top: bool = True, progress: bool = True) -> Path:
        weights = spec.weights_file(include_top=include_top)
        dest = self.path(spec, include_top=include_top)
        with exclusive_lock(dest):
            # Another process may have finished the same download while we waited for the lock.
            if is_verified(dest, weights):
                return dest
            if dest.is_file():
                try:
                    verify_file(dest, weights)
                    return dest
                except WeightsIntegrityError:
                    pass  # the damaged file was removed: download a good copy, as Keras does
            url = source_url(weights)
            try:
                download(url, dest, weights, progress=progress)
            except WeightsUnavailableError as exc:
                raise WeightsUnavailableError(
                    f"{exc}. Without internet, get {weights.filename} (from {weights.url}) elsewhere and run "
                    f"`imagenet-zoo weights import {spec.name} FILE`, or set {MIRROR_ENV} to a mirror "
                    "that serves it"
                ) from exc
            verify_file(dest, weights)
        return dest

    def verify(self, spec: ModelSpec, *, include_top: bool = True) -> Path:
        dest = self.path(spec, include_top=include_top)
        with exclusive_lock(dest):  # as fetch does: never delete a file another process is writing
            verify_file(dest, spec.weights_file(include_top=include_top))
        return dest

    def import_file(self, spec: ModelSpec, file: Path, *, include_top: bool = True) -> Path:
        """Copy a file obtained elsewhere into the cache, after checking that the copy is the published one
        (written through a private temporary file, as downloads are)."""
        weights = spec.weights_file(include_top=include_top)
        if not file.is_file():
            raise WeightsUnavailableError(f"{file} does not exist")
        dest = self.path(spec, include_top=include_top)
        with exclusive_lock(dest):
            copy_verified(file, dest, weights)
            _stamp_path(dest).write_text(_stamp_text(dest, weights))
        return dest


class PackagedWeights:
    """Weights shipped inside a Python package, read from where it installed them: `locate` finds the
    file, which is hash-checked at each load (never written: it belongs to that package)."""

    def __init__(self, locate: Callable[[], Path], *, package: str) -> None:
        self._locate, self._package = locate, package

    def path(self, spec: ModelSpec, *, include_top: bool = True) -> Path:
        try:
            return self._locate()
        except ImportError as exc:
            raise WeightsUnavailableError(
                f"{spec.name} weights ship in the Python package {self._package}, which is not installed"
            ) from exc

    def is_present(self, spec: ModelSpec, *, include_top: bool = True) -> bool:
        try:
            return self.path(spec).is_file()
        except WeightsUnavailableError:
            return False

    def fetch(self, spec: ModelSpec, *, include_top: bool = True, progress: bool = True) -> Path:
        return self.verify(spec)

    def verify(self, spec: ModelSpec, *, include_top: bool = True) -> Path:
        source = self.path(spec)
        verify_packaged_file(source, spec.weights)
        return source

    def import_file(self, spec: ModelSpec, file: Path, *, include_top: bool = True) -> Path:
        raise UsageError(
            f"{spec.name} weights ship in the Python package {self._package}; "
            "install that package instead of importing a file"
        )


def verify_packaged_file(path: Path, weights: WeightsFile) -> None:
    """Like `verify_file`, but never deletes: the file belongs to another package."""
    digest = file_digest(path, weights.hash_algorithm)
    if not weights.matches(digest):
        raise WeightsIntegrityError(
            f"{path} does not match its published {weights.hash_algorithm} (expected {weights.hash}, got "
            f"{digest}); reinstall the package that ships it"
        )
