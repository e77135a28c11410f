"""Reading the packaged PyTorch weights without torch, and refusing anything that is not plain data."""

import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from imagenet_zoo.errors import WeightsFormatError
from imagenet_zoo.models.efficientnet_lite import _packaged_pth
from imagenet_zoo.weights.torch_pickle import load_state_dict
from tests.conftest import run_measured
from tests.torch_files import views_pickle, write_zip, write_zip_raw

MAGIC_HEADER = [0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}]


def _legacy_file(path: Path, state: object, keys: object = ()) -> Path:
    with path.open("wb") as f:
        for obj in MAGIC_HEADER:
            pickle.dump(obj, f, protocol=2)
        pickle.dump(state, f, protocol=2)
        pickle.dump(list(keys), f, protocol=2)  # type: ignore[call-overload]
    return path


def test_the_packaged_file_reads_completely() -> None:
    state = load_state_dict(_packaged_pth())
    assert len(state) == 296
    learnable = [
        v for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert sum(v.size for v in learnable) == 4_652_008
    assert (
        state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_conv_stem.weight"].dtype == np.float32
    )
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    # BatchNorm variances are never negative (a few dead channels are exactly 0 in this checkpoint):
    # misplaced bytes would break this. The reference-logits test proves every value end to end.
    variances = [v for k, v in state.items() if k.endswith("running_var")]
    assert all((v >= 0).all() and np.median(v) > 0 for v in variances)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _legacy_file(tmp_path / "evil.pth", {"x": _RunsCode(marker)})
    with pytest.raises(WeightsFormatError, match="refusing"):
        load_state_dict(path)
    assert not marker.exists()


def test_malformed_files_give_a_format_error(tmp_path: Path) -> None:
    not_torch = tmp_path / "x.pth"
    not_torch.write_bytes(b"garbage that is not a pickle")
    with pytest.raises(WeightsFormatError):
        load_state_dict(not_torch)
    wrong_magic = tmp_path / "y.pth"
    with wrong_magic.open("wb") as f:
        pickle.dump(12345, f, protocol=2)
    with pytest.raises(WeightsFormatError, match="magic"):
        load_state_dict(wrong_magic)


def test_a_truncated_packaged_file_is_a_format_error(tmp_path: Path) -> None:
    data = _packaged_pth().read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(WeightsFormatError, match="truncated"):
        load_state_dict(cut)


def test_a_stride_0_view_cannot_expand_a_few_bytes(tmp_path: Path) -> None:
    """A 1-element storage viewed as 1024x1024 with stride 0 passed the bounds check: 4 MiB from 4 bytes."""
    body = views_pickle({"w": (1, (1024, 1024), (0, 0))})
    path = write_zip_raw(tmp_path / "expand.pth", body, {"0": b"\0\0\x80?"})
    assert path.stat().st_size < 1024
    with pytest.raises(WeightsFormatError, match="more elements than its storage"):
        load_state_dict(path)


def test_overlapping_strides_are_refused(tmp_path: Path) -> None:
    body = views_pickle({"w": (7, (4, 4), (1, 1))})  # 16 elements read from 7: rows overlap
    path = write_zip_raw(tmp_path / "overlap.pth", body, {"0": np.arange(7, dtype="<f4").tobytes()})
    with pytest.raises(WeightsFormatError, match=r"more elements|repeats storage elements"):
        load_state_dict(path)
    body = views_pickle({"w": (16, (4, 4), (4, 0))})  # as many elements as the storage, one column repeated
    path = write_zip_raw(tmp_path / "zero.pth", body, {"0": np.arange(16, dtype="<f4").tobytes()})
    with pytest.raises(WeightsFormatError, match="repeats storage elements"):
        load_state_dict(path)


def test_a_transposed_view_is_still_read(tmp_path: Path) -> None:
    body = views_pickle({"w": (6, (3, 2), (1, 3))})  # a column-major 3x2 view: no overlap
    path = write_zip_raw(tmp_path / "t.pth", body, {"0": np.arange(6, dtype="<f4").tobytes()})
    np.testing.assert_array_equal(load_state_dict(path)["w"], np.arange(6, dtype="<f4").reshape(2, 3).T)


def test_build_cannot_change_how_later_files_are_read(tmp_path: Path) -> None:
    """BUILD on the storage type set its dtype for every later load in the process."""
    clean = write_zip(tmp_path / "clean.pth", {"w": np.array([1.0, 2.0], np.float32)})
    attack = b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x03\x00\x00\x00>f4sb0}."
    hostile = write_zip_raw(tmp_path / "build.pth", attack, {})
    with pytest.raises(WeightsFormatError, match="refusing to set attributes"):
        load_state_dict(hostile)
    np.testing.assert_array_equal(load_state_dict(clean)["w"], [1.0, 2.0])
    inst = b"\x80\x02(X\x01\x00\x00\x00aicollections\nOrderedDict\n."  # protocol-0 INST in a pickle
    with pytest.raises(WeightsFormatError, match="INST"):
        load_state_dict(write_zip_raw(tmp_path / "inst.pth", inst, {}))


BOMB_READER = """
import os, sys
from pathlib import Path
from imagenet_zoo.errors import WeightsFormatError
from imagenet_zoo.weights.torch_pickle import load_state_dict
try:
    load_state_dict(Path(sys.argv[1]))
except WeightsFormatError as exc:
    print("refused:", exc)
"""


@pytest.mark.slow
def test_a_compressed_storage_is_refused_before_it_inflates(tmp_path: Path) -> None:
    """A 4-element storage stored as 1.5 GB of bzip2 zeros (a ~10 KB file): refused by its declared size,
    with the reader's peak memory far below the bomb's size."""
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2, compresslevel=1) as z:
        z.writestr("archive/data.pkl", views_pickle({"w": (4, (4,), (1,))}))
        with z.open("archive/data/0", "w", force_zip64=True) as entry:
            zeros = bytes(100 * 2**20)
            for _ in range(15):
                entry.write(zeros)
    assert path.stat().st_size < 100_000
    code, out, peak_mb = run_measured([sys.executable, "-c", BOMB_READER, str(path)])
    assert code == 0 and "refused" in out and "declares" in out
    assert peak_mb < 1024
