"""Converted models on disk (`engines/cache.py`): a record that is not what it should be is a typed error,
every file in a version is checked, and a replaced version lives on while a reader may hold it."""

import json
import os
import time
from pathlib import Path

import pytest

from imagenet_zoo.engines.cache import atomic_dir, check_recorded, resolved_file, write_recorded
from imagenet_zoo.errors import WeightsIntegrityError


def _written(tmp_path: Path) -> Path:
    dest = tmp_path / "model"

    def write(folder: Path) -> None:
        (folder / "model.xml").write_text("<net/>")
        (folder / "model.bin").write_bytes(b"\0" * 8)

    write_recorded(dest, write, {"model": "m"})
    return resolved_file(dest, ".")


def test_a_whole_record_passes(tmp_path: Path) -> None:
    assert check_recorded(_written(tmp_path), ("model.xml", "model.bin"))["model"] == "m"


@pytest.mark.parametrize(
    "files",
    [
        ["model.xml", "model.bin"],  # a list: an AttributeError traceback before
        {"model.xml": "0" * 64, "../../outside": "0" * 64},
        {"model.xml": 1, "model.bin": 2},
        "model.xml",
    ],
)
def test_a_malformed_record_is_refused(tmp_path: Path, files: object) -> None:
    folder = _written(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "files": files}))
    with pytest.raises(WeightsIntegrityError):
        check_recorded(folder, ("model.xml", "model.bin"))


def test_a_file_the_record_does_not_list_is_refused(tmp_path: Path) -> None:
    """A CAM model's head is loaded when present: one put beside an IR whose record lacks it is refused."""
    folder = _written(tmp_path)
    (folder / "cam_head.npy").write_bytes(b"planted")
    with pytest.raises(WeightsIntegrityError, match=r"cam_head\.npy"):
        check_recorded(folder, ("model.xml", "model.bin"))


def test_a_replaced_version_ages_from_its_replacement(tmp_path: Path) -> None:
    """Quantizing again deleted the previous int8 model at once when it had been made over ten minutes
    before, though another process may have resolved it a moment ago."""
    dest = tmp_path / "model-int8"
    with atomic_dir(dest) as version:
        (version / "model.xml").write_text("1")
    first = dest.resolve()
    long_ago = time.time() - 3600
    os.utime(first, (long_ago, long_ago))
    with atomic_dir(dest) as version:
        (version / "model.xml").write_text("2")
    assert first.is_dir()  # replaced just now: kept
    os.utime(first, (long_ago, long_ago))
    with atomic_dir(dest) as version:
        (version / "model.xml").write_text("3")
    assert not first.exists() and resolved_file(dest, "model.xml").read_text() == "3"
