"""Converted models on disk (an engine's cache under `$IMAGENET_ZOO_HOME/<engine>/`): each in a folder of
its own, published whole by one rename, with its files' SHA-256 recorded, so a reader never loads a swapped
or half-written file, and two processes converting the same model wait for each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from imagenet_zoo.errors import WeightsIntegrityError
from imagenet_zoo.weights.download import file_digest

META_FILE = "meta.json"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a file of the folder itself: no path, no ".."


def folder_name(name: str) -> str:
    """A model's name as one safe path component: a bundle's name is its path (`../dogs`, `/srv/x`), and
    the digest beside it already tells bundles of the same name apart."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


_OLD_VERSION_S = 600  # a version replaced this long ago is deleted: long after any reader opened it


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """A new version of the folder `dest`, published only if the block completes.

    `dest` is a symbolic link to a versioned folder beside it, and a new version replaces the link
    in one rename, so a reader that resolves `dest` once (`resolved_file`) reads one version whole, never
    a half-replaced folder. Replaced versions are deleted by a later write, once they are old."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    version = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f"{dest.name}.v-"))
    try:
        yield version
        link = dest.with_name(f".{dest.name}.link-{version.name}")
        link.symlink_to(version.name)
        replaced = dest.resolve() if dest.is_symlink() else None
        os.replace(link, dest)
        if replaced is not None and replaced.is_dir():
            os.utime(replaced)  # a reader may have resolved it a moment ago: it ages from now
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    _remove_old_versions(dest, keep=version)


def _remove_old_versions(dest: Path, keep: Path) -> None:
    now = time.time()
    for old in dest.parent.glob(f"{dest.name}.v-*"):
        if old != keep and now - old.stat().st_mtime > _OLD_VERSION_S:
            shutil.rmtree(old, ignore_errors=True)


def resolved_file(folder: Path, name: str) -> Path:
    """`name` inside the version `folder` points to now (read every file of a model from one version)."""
    return folder.resolve() / name


def write_recorded(dest: Path, write: Callable[[Path], None], meta: dict[str, Any]) -> None:
    """A new version of `dest`: `write(folder)` fills it, then the SHA-256 of every file it wrote is
    recorded beside them (`check_recorded` refuses a file swapped since)."""
    with atomic_dir(dest) as folder:
        write(folder)
        files = {path.name: file_digest(path, "sha256") for path in sorted(folder.iterdir())}
        (folder / META_FILE).write_text(json.dumps({**meta, "files": files}, indent=2))


def check_recorded(folder: Path, required: tuple[str, ...]) -> dict[str, Any]:
    """The folder's record, once its files are the ones it was written with: every file in it recorded
    (`required` among them) and none changed since."""
    meta = _record(folder)
    recorded: dict[str, str] = meta["files"]
    present = {path.name for path in folder.iterdir()} - {META_FILE}
    for name in sorted(present | set(recorded) | set(required)):
        path = folder / name
        if name not in recorded or not path.is_file() or file_digest(path, "sha256") != recorded[name]:
            raise WeightsIntegrityError(
                f"{path} changed since it was written; delete {folder} to convert again"
            )
    return meta


def _record(folder: Path) -> dict[str, Any]:
    """meta.json, checked: a "files" object mapping plain file names of this folder to digests."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
        files = meta["files"]
        if not isinstance(files, dict):
            raise TypeError(f'"files" is a {type(files).__name__}, not an object')
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsIntegrityError(
            f"{folder} has no record of its files ({exc}); delete it to convert again"
        ) from None
    for name, digest in files.items():
        if not _PLAIN_NAME.fullmatch(name) or not isinstance(digest, str):
            raise WeightsIntegrityError(f"{folder}'s record names {name!r}, not a file of its own")
    return meta  # type: ignore[no-any-return]
