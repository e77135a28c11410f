"""Where a job on a cluster reads: local files, folders and globs, and URLs pyarrow's filesystems
understand (s3://, gs://, file://)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagenet_zoo.data.images import IMAGE_SUFFIXES, MAX_FILE_BYTES, find_images
from imagenet_zoo.errors import ImageNotFoundError, ImageTooLargeError


def list_sources(sources: list[str], *, recursive: bool) -> list[str]:
    """Local files, folders and globs (as the single-machine path expands them), then URLs."""
    local = [s for s in sources if "://" not in s]
    found = find_images(local, recursive=recursive) if local else []
    for url in (s for s in sources if "://" in s):
        found.extend(_list_url(url, recursive=recursive))
    return found


def _list_url(url: str, *, recursive: bool) -> list[str]:
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(url)
    prefix = url[: url.index("://") + 3]
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.File or info.type == fs.FileType.NotFound:
        return [url]  # a missing file is reported per photo, like a local one
    selector = fs.FileSelector(path, recursive=recursive)
    infos = filesystem.get_file_info(selector)
    return sorted(
        prefix + i.path.lstrip("/") if prefix != "file://" else prefix + i.path
        for i in infos
        if i.type == fs.FileType.File and Path(i.path).suffix.lower() in IMAGE_SUFFIXES
    )


def filesystem_of(location: str) -> tuple[Any, str]:
    from pyarrow import fs

    if "://" in location:
        return fs.FileSystem.from_uri(location)  # type: ignore[no-any-return]
    return fs.LocalFileSystem(), str(Path(location).resolve())


def read_source(location: str) -> str | bytes:
    """A local path is decoded from the file (as the single-machine path does); a URL's bytes are read."""
    if "://" not in location:
        return location
    filesystem, path = filesystem_of(location)
    try:
        with filesystem.open_input_file(path) as file:
            if file.size() > MAX_FILE_BYTES:
                raise ImageTooLargeError(f"{location}: {file.size()} bytes, more than {MAX_FILE_BYTES}")
            data: bytes = file.read()
            return data
    except (OSError, FileNotFoundError) as exc:
        raise ImageNotFoundError(f"{location}: cannot read: {exc}") from exc
