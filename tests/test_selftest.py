"""The stored selftest reference is right, and the selftest catches a preprocessing mismatch."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from imagenet_zoo import selftest
from imagenet_zoo.cli import main
from imagenet_zoo.registry import Registry, default_registry


def test_stored_lite0_reference_is_what_the_proven_keras_port_gives(with_lite0: Path) -> None:
    registry = default_registry()
    fresh = selftest.probabilities(registry.get("lite0"), "keras", "fp32")
    np.testing.assert_allclose(fresh, selftest.stored_lite0_probabilities(), atol=1e-5)
    assert fresh.argmax(axis=1).tolist() == [967, 285]  # espresso; Egyptian cat


def test_selftest_passes_here(with_lite0: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["selftest"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet_lite0   keras     fp32      stored reference" in out
    assert "openvino  fp32" in out and "FAIL" not in out
    assert "vgg16" not in out  # no weights here: skipped, not failed


def test_selftest_fails_on_a_preprocessing_mismatch(with_lite0: Path) -> None:
    lite0 = default_registry().get("lite0")
    wrong = replace(lite0.spec.data_config, mode="tf")  # [-1, 1] instead of (x - 127) / 128
    registry = Registry([replace(lite0, spec=replace(lite0.spec, data_config=wrong))])
    first = next(selftest.run(registry))
    assert first.reference == "stored reference" and not first.passed
