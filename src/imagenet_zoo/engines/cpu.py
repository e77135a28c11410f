"""What this machine's CPU computes natively, as every engine asks it."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def isa_limited_below_bf16() -> bool:
    """Whether `ONEDNN_MAX_CPU_ISA` (read by TensorFlow's, OpenVINO's and torch's oneDNN) caps the CPU
    below its bf16 instructions (e.g. AVX2): one variable limits every engine's CPU features."""
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return limit not in ("ALL", "DEFAULT", "") and "BF16" not in limit and "AMX" not in limit


@cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo; none known elsewhere)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return frozenset()
    flags = next((line.split(":", 1)[1] for line in lines if line.startswith("flags")), "")
    return frozenset(flags.split())


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512_BF16 or AMX) and may use it."""
    return not isa_limited_below_bf16() and any(flag in _cpu_flags() for flag in _BF16_FLAGS)
