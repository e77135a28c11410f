"""The CPU probe every engine asks: bf16 is native only with AVX512_BF16 or AMX, within ONEDNN_MAX_CPU_ISA."""

import platform
from pathlib import Path

import pytest

from imagenet_zoo.engines import cpu


@pytest.mark.parametrize(
    ("flags", "limit", "native"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, None, True),
        ({"avx2", "amx_bf16", "amx_tile"}, "AVX512_CORE_AMX", True),
        ({"avx2", "avx512f", "avx512_bf16"}, "AVX2", False),  # limited as TensorFlow and OpenVINO are
        ({"avx2", "avx512f", "avx512_vnni"}, None, False),  # a Zen 3 or an older Xeon
        (set(), None, False),  # nothing known (no /proc/cpuinfo)
    ],
)
def test_native_bf16(
    flags: set[str], limit: str | None, native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpu, "_cpu_flags", lambda: frozenset(flags))
    if limit is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
    assert cpu.native_bf16() is native


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not Path("/proc/cpuinfo").is_file(), reason="Linux x86-64"
)
def test_this_machines_flags_are_read() -> None:
    assert "sse2" in cpu._cpu_flags()  # every x86-64 CPU has it
