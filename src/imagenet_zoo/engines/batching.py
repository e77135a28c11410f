"""Dynamic batching across callers, as Triton's dynamic batcher and infinity's `BatchHandler` do it.

Callers (the service's requests) submit one preprocessed input each, with what they want besides its
row (a heatmap), and get a future. One thread per model takes the first waiting input, waits up to
`max_delay_s` for more (never past `max_batch_size`), and runs them as one engine call: a batch of 8 costs
far less than 8 calls of 1 on a CPU, and much less still on an accelerator. Decoding stays with the
callers, in parallel, outside the batcher; inference never runs in a caller's thread.

An engine call that fails fails only the futures of its own batch, with the engine's error; an input
whose caller stopped waiting (a deadline, a cancelled future) before its batch ran is left out of it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

# Runs one batch (N, H, W, C), with what each row's caller wants, and returns one result per row.
BatchRunner = Callable[[Any, list[Any]], Sequence[Any]]
# Told of every engine call: how many inputs it ran, and how long each had waited in the queue.
BatchObserver = Callable[[int, list[float]], None]


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 8  # 1: every input is its own engine call
    max_delay_s: float = 0.002  # how long the first input of a batch waits for company


class DynamicBatcher:
    def __init__(
        self,
        run: BatchRunner,
        options: BatchingOptions = BatchingOptions(),
        *,
        observe: BatchObserver | None = None,
        name: str = "batcher",
        stack: Callable[[list[Any]], Any] = np.stack,
    ) -> None:
        """`stack` makes one batch of submitted inputs (numpy rows; a GPU's rows are tensors on it)."""
        if options.max_batch_size < 1 or options.max_delay_s < 0:
            raise ValueError("max_batch_size must be at least 1 and max_delay_s not negative")
        self._run, self._options, self._observe, self._stack = run, options, observe, stack
        self._inputs: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._closed = False
        self._closing = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, x: Any, wanted: Any = None) -> Future[Any]:
        """The future result of one input (H, W, C), computed in a batch with others."""
        future: Future[Any] = Future()
        with self._closing:
            if self._closed:
                raise RuntimeError("the batcher is closed: its model was unloaded")
            self._inputs.put(_Item(x, wanted, future, time.perf_counter()))
        return future

    def close(self, *, wait: bool = False) -> None:
        """Finish what was submitted, then stop the thread (`wait`: until it has)."""
        with self._closing:
            if not self._closed:
                self._closed = True
                self._inputs.put(None)
        if wait:
            self._thread.join()

    def _loop(self) -> None:
        while (first := self._inputs.get()) is not None:
            batch = [first]
            stop = self._gather(batch)
            self._run_batch(batch)
            if stop:
                return

    def _gather(self, batch: list[_Item]) -> bool:
        """Add waiting inputs to `batch` until it is full or the delay is over; True if told to stop."""
        deadline = time.perf_counter() + self._options.max_delay_s
        while len(batch) < self._options.max_batch_size:
            try:
                item = self._inputs.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _run_batch(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if self._observe is not None:
            self._observe(len(live), [started - item.submitted for item in batch])
        if not live:
            return
        try:
            results = self._run(self._stack([item.x for item in live]), [item.wanted for item in live])
        except Exception as exc:  # the engine's failure is this batch's answer, not the thread's end
            for item in live:
                item.future.set_exception(exc)
            return
        for item, result in zip(live, results, strict=True):
            item.future.set_result(result)


@dataclass(frozen=True)
class _Item:
    x: Any
    wanted: Any
    future: Future[Any]
    submitted: float
