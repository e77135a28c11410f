"""Writing PyTorch checkpoint files without torch, in both layouts torch.save has used (for tests).

Pickles name `torch._utils._rebuild_tensor_v2` and `torch.FloatStorage` exactly as torch does; stand-in
modules are registered under those names only while a file is being written.
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def _stand_in_torch() -> Iterator[tuple[Any, Any]]:
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storage = type("FloatStorage", (), {"__module__": "torch"})

    def _rebuild_tensor_v2(*args: object) -> None:
        raise AssertionError("only written, never run")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = storage, _rebuild_tensor_v2, utils  # type: ignore[attr-defined]
    names = ("torch", "torch._utils")
    real = {name: sys.modules.get(name) for name in names}  # torch itself, where a test imported it
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        yield storage, _rebuild_tensor_v2
    finally:
        for name, module in real.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


class _Storage:
    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


def _state_pickle(state: dict[str, np.ndarray]) -> tuple[bytes, list[str]]:
    """A state-dict pickle of contiguous float32 tensors, and its storage keys (tensor i: key str(i))."""
    arrays = {name: np.ascontiguousarray(value, np.float32) for name, value in state.items()}
    views = {name: (a.size, a.shape, tuple(s // a.itemsize for s in a.strides)) for name, a in arrays.items()}
    return views_pickle(views), [str(i) for i in range(len(state))]


def write_legacy(path: Path, state: dict[str, np.ndarray]) -> Path:
    body, keys = _state_pickle(state)
    with path.open("wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True, "type_sizes": {"int": 4}}):
            pickle.dump(header, f, protocol=2)
        f.write(body)
        pickle.dump(keys, f, protocol=2)
        for value in state.values():
            data = np.ascontiguousarray(value, "<f4")
            f.write(data.size.to_bytes(8, "little") + data.tobytes())
    return path


def write_zip(path: Path, state: dict[str, np.ndarray], archive: str = "archive") -> Path:
    body, keys = _state_pickle(state)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{archive}/data.pkl", body)
        z.writestr(f"{archive}/byteorder", "little")
        z.writestr(f"{archive}/version", "3\n")
        for key, value in zip(keys, state.values(), strict=True):
            z.writestr(f"{archive}/data/{key}", np.ascontiguousarray(value, "<f4").tobytes())
    return path


class _View:
    def __init__(self, key: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.key, self.numel, self.size, self.stride = key, numel, size, stride


def views_pickle(views: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]]) -> bytes:
    """A state-dict pickle whose tensors are the given views: name -> (storage numel, size, stride); the
    storage of tensor i is key str(i). For hostile files: sizes and strides are written as given."""
    with _stand_in_torch() as (storage_type, rebuild):

        class Writer(pickle.Pickler):
            def persistent_id(self, obj: object) -> object:
                if isinstance(obj, _Storage):
                    return ("storage", storage_type, obj.key, "cpu", obj.numel)
                return None

            def reducer_override(self, obj: object) -> object:
                if isinstance(obj, _View):
                    args = (
                        _Storage(obj.key, obj.numel),
                        0,
                        obj.size,
                        obj.stride,
                        False,
                        collections.OrderedDict(),
                    )
                    return rebuild, args
                return NotImplemented

        state = collections.OrderedDict(
            (name, _View(str(i), numel, size, stride))
            for i, (name, (numel, size, stride)) in enumerate(views.items())
        )
        buffer = io.BytesIO()
        Writer(buffer, protocol=2).dump(state)
    return buffer.getvalue()


def write_zip_raw(
    path: Path, body: bytes, storages: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED
) -> Path:
    """A zip-format file from a pickle and raw storage bytes, stored as given."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("archive/data.pkl", body)
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)
    return path
