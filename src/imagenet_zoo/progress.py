"""A one-line progress display (done/total, rate, ETA) on stderr, shown only to a person at a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO

_REFRESH_S = 0.2


def _count(n: float) -> str:
    return f"{n:,.0f}"


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        unit: str = "",
        scale: float = 1.0,
        stream: IO[str] | None = None,
        enabled: bool | None = None,
        amount: Callable[[float], str] = _count,
    ) -> None:
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._label, self._total, self._unit, self._scale, self._amount = label, total, unit, scale, amount
        self._done = 0
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self._done += n
        now = time.monotonic()
        if self._enabled and (now - self._last >= _REFRESH_S or self._done == self._total):
            self._last = now
            self._stream.write("\r" + self.line(now))
            self._stream.flush()

    def line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self._done / self._scale / elapsed
        text = f"{self._label} {self._amount(self._done / self._scale)}"
        if self._total:
            remaining = (self._total - self._done) / self._scale / rate if rate > 0 else 0.0
            eta = time.strftime("%H:%M:%S", time.gmtime(remaining))
            total = self._amount(self._total / self._scale)
            text += f"/{total} {self._unit} {self._done / self._total:6.1%} ETA {eta}"
        return f"{text} {rate:,.1f} {self._unit}/s "

    def close(self) -> None:
        if self._enabled:
            self._stream.write("\n")
            self._stream.flush()
