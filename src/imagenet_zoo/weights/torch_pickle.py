"""Read a PyTorch state dict into numpy arrays without torch and without running pickled code.

A `.pth` file is a pickle: loading it with `pickle` or `torch.load(weights_only=False)` runs whatever
callables the file names. This reader maps exactly the four globals a plain state dict needs and refuses
every other one, so a hostile file fails with `WeightsFormatError` instead of executing code. Setting
attributes is refused too (INST and OBJ before anything runs; BUILD everywhere but on the state dict,
where torch stores `_metadata`), and each load gets objects of its own, so one file cannot change how a
later one is read. Sizes are checked
before memory is spent: a zip entry's declared size before it is inflated (and it is read with that cap),
a tensor's element count against its storage, and views whose elements overlap (a stride of 0 would
expand a few bytes into any size) are refused.

Both layouts torch.save has written are read:
- legacy (before torch 1.6): one stream holding pickles of the magic number, the protocol version, a
  system-info dict, the state dict (tensors refer to storages by persistent id) and the list of storage
  keys; then each storage's raw bytes, prefixed by an 8-byte little-endian element count, in that order;
- zip (torch 1.6 and later): the same kind of state-dict pickle as `<name>/data.pkl`, each storage's raw
  little-endian bytes as the member `<name>/data/<key>`.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from imagenet_zoo.errors import WeightsFormatError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {"FloatStorage": np.dtype("<f4"), "LongStorage": np.dtype("<i8")}
_REFUSED_OPCODES = frozenset({"INST", "OBJ"})  # they instantiate classes: a state dict never needs them
MAX_PICKLE_BYTES = 64 * 2**20  # a state dict's pickle holds names and shapes only: a few MB at most


class _Sealed:
    """Objects a pickle may create or name, but never change: BUILD on them is refused."""

    def __setstate__(self, state: object) -> None:
        raise WeightsFormatError(f"refusing to set attributes of {type(self).__name__.lstrip('_')}")


class _StateDict(collections.OrderedDict[Any, Any]):
    """The state dict: torch attaches `_metadata` (per-module versions) to it with BUILD; it is dropped."""

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, dict) and set(state) <= {"_metadata"}):
            raise WeightsFormatError("refusing to set attributes of the state dict other than _metadata")


@dataclass
class _Storage(_Sealed):
    dtype: np.dtype[Any]
    numel: int
    data: np.ndarray[Any, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _TensorRef(_Sealed):
    """A tensor as the pickle describes it; its bytes arrive after the pickle, so it is resolved later."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray[Any, Any]:
        data = self.storage.data
        if data is None:
            raise WeightsFormatError("a tensor refers to a storage whose bytes are missing")
        if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
            raise WeightsFormatError("negative tensor size, stride or offset")
        if len(self.size) != len(self.stride):
            raise WeightsFormatError("a tensor's size and stride differ in length")
        if math.prod(self.size) > data.size - self.offset:
            raise WeightsFormatError("a tensor has more elements than its storage holds")
        _check_no_overlap(self.size, self.stride)
        # Bounds-check before as_strided, which would otherwise read outside the buffer.
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True) if n > 0)
        if 0 not in self.size and last >= data.size:
            raise WeightsFormatError("a tensor reaches beyond its storage")
        itemsize = data.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=[s * itemsize for s in self.stride], writeable=False
        )
        return np.array(view)


def _check_no_overlap(size: tuple[int, ...], stride: tuple[int, ...]) -> None:
    """Each element of the view must be a different element of the storage (no stride-0 expansion)."""
    extent = 0  # how far the dimensions seen so far reach
    for n, s in sorted(((n, s) for n, s in zip(size, stride, strict=True) if n > 1), key=lambda d: d[1]):
        if s <= extent:
            raise WeightsFormatError("a tensor view repeats storage elements (overlapping or zero strides)")
        extent += (n - 1) * s


class _RebuildTensor(_Sealed):
    """torch._utils._rebuild_tensor_v2, which describes a tensor as a view of a storage."""

    def __call__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_rest: object
    ) -> _TensorRef:
        if not isinstance(storage, _Storage):
            raise WeightsFormatError("_rebuild_tensor_v2 called without a storage")
        return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


class _StorageType(_Sealed):
    def __init__(self, name: str) -> None:
        self.dtype = _STORAGE_DTYPES[name]


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """What a state dict may name; the storage types are new objects for every load."""
    return {
        ("collections", "OrderedDict"): _StateDict,
        ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensor(),
        ("torch", "FloatStorage"): _StorageType("FloatStorage"),
        ("torch", "LongStorage"): _StorageType("LongStorage"),
    }


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], storages: dict[str, _Storage] | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        self._storages = storages
        self._globals = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._globals[(module, name)]
        except KeyError:
            raise WeightsFormatError(
                f"refusing to load {module}.{name}: not part of a plain state dict"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if self._storages is None or not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightsFormatError(f"unexpected persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise WeightsFormatError(f"unsupported storage {pid!r}")
        key = str(key)
        existing = self._storages.get(key)
        if existing is None:
            existing = self._storages[key] = _Storage(storage_type.dtype, numel)
        return existing


def _load(stream: IO[bytes], storages: dict[str, _Storage] | None = None) -> Any:
    """One pickle from `stream`, which is left just after it; its opcodes are checked before it runs."""
    try:
        start = stream.tell()
        for opcode, _arg, _pos in pickletools.genops(stream):
            if opcode.name in _REFUSED_OPCODES:
                raise WeightsFormatError(
                    f"refusing the pickle opcode {opcode.name}: not part of a state dict"
                )
            if stream.tell() - start > MAX_PICKLE_BYTES:
                raise WeightsFormatError(f"a pickle larger than {MAX_PICKLE_BYTES} bytes is not a state dict")
        stream.seek(start)
        return _RestrictedUnpickler(stream, storages).load()
    except WeightsFormatError:
        raise
    except Exception as exc:  # a malformed pickle can fail in many ways; all mean "not a state dict"
        raise WeightsFormatError(f"malformed pickle: {exc}") from exc


def load_state_dict(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """Every tensor of a PyTorch state dict (legacy or zip format), as numpy arrays, keyed like the file."""
    if zipfile.is_zipfile(path):
        return _load_zip(path)
    with path.open("rb") as f:
        if _load(f) != _LEGACY_MAGIC:
            raise WeightsFormatError(f"{path} is not a legacy PyTorch file (bad magic number)")
        if _load(f) != _LEGACY_PROTOCOL:
            raise WeightsFormatError(f"{path}: unsupported PyTorch protocol version")
        sys_info = _load(f)
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
            raise WeightsFormatError(f"{path}: only little-endian files are supported")
        storages: dict[str, _Storage] = {}
        state = _load(f, storages)
        keys = _load(f)
        if not isinstance(state, dict) or not isinstance(keys, list):
            raise WeightsFormatError(f"{path} does not hold a state dict")
        for key in keys:
            _read_storage(f, storages.get(str(key)), str(key))
    return {str(name): _materialize(name, value) for name, value in state.items()}


def _load_zip(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise WeightsFormatError(f"{path}: expected one */data.pkl in the archive, found {len(pickles)}")
        prefix = pickles[0].rsplit("/", 1)[0]
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist() and _read_entry(archive, byteorder, 16).strip() != b"little":
            raise WeightsFormatError(f"{path}: only little-endian files are supported")
        storages: dict[str, _Storage] = {}
        state = _load(io.BytesIO(_read_entry(archive, pickles[0], MAX_PICKLE_BYTES)), storages)
        if not isinstance(state, dict):
            raise WeightsFormatError(f"{path} does not hold a state dict")
        for key, storage in storages.items():
            expected = storage.numel * storage.dtype.itemsize
            raw = _read_entry(archive, f"{prefix}/data/{key}", expected)
            if len(raw) != expected:
                raise WeightsFormatError(f"{path}: storage {key} has {len(raw)} bytes, expected {expected}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return {str(name): _materialize(name, value) for name, value in state.items()}


def _read_entry(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """An archive member's bytes, refused by its declared size before anything is inflated, and read with
    that cap (a compressed member can inflate far beyond its file size)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise WeightsFormatError(f"{name} is missing from the archive") from None
    if info.file_size > limit:
        raise WeightsFormatError(f"{name} declares {info.file_size} bytes, more than the {limit} expected")
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise WeightsFormatError(f"{name} inflates beyond the {limit} bytes expected")
    return data


def _read_storage(f: IO[bytes], storage: _Storage | None, key: str) -> None:
    if storage is None:
        raise WeightsFormatError(f"storage {key} is listed but never used")
    count = int.from_bytes(f.read(8), "little")
    if count != storage.numel:
        raise WeightsFormatError(f"storage {key} holds {count} elements, expected {storage.numel}")
    raw = f.read(count * storage.dtype.itemsize)
    if len(raw) != count * storage.dtype.itemsize:
        raise WeightsFormatError(f"storage {key} is truncated")
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _materialize(name: object, value: object) -> np.ndarray[Any, Any]:
    if not isinstance(value, _TensorRef):
        raise WeightsFormatError(f"state dict entry {name!r} is not a tensor")
    return value.materialize()
