"""The dynamic batcher on its own: shared engine calls, bounded batches, failures kept to their batch."""

import threading
import time

import numpy as np
import pytest

from imagenet_zoo.engines.batching import BatchingOptions, DynamicBatcher


class Recorder:
    def __init__(self, fail_on: float | None = None, delay_s: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.fail_on, self.delay_s = fail_on, delay_s

    def __call__(self, batch: np.ndarray, wanted: list[object]) -> list[float]:
        self.sizes.append(len(batch))
        time.sleep(self.delay_s)
        if self.fail_on is not None and self.fail_on in batch[:, 0, 0, 0]:
            raise RuntimeError("engine failure")
        return [float(x[0, 0, 0]) * 10 for x in batch]


def _inputs(n: int) -> list[np.ndarray]:
    return [np.full((2, 2, 3), i, np.float32) for i in range(n)]


def test_waiting_inputs_share_engine_calls_up_to_the_bound() -> None:
    record = Recorder(delay_s=0.05)
    batcher = DynamicBatcher(record, BatchingOptions(max_batch_size=4, max_delay_s=0.02))
    futures = [batcher.submit(x) for x in _inputs(10)]
    assert [f.result(5) for f in futures] == [10.0 * i for i in range(10)]  # each its own answer, in order
    assert max(record.sizes) == 4 and sum(record.sizes) == 10 and len(record.sizes) <= 4
    batcher.close(wait=True)


def test_batch_size_one_is_one_call_per_input() -> None:
    record = Recorder()
    batcher = DynamicBatcher(record, BatchingOptions(max_batch_size=1, max_delay_s=0.01))
    assert [f.result(5) for f in [batcher.submit(x) for x in _inputs(5)]] == [0, 10, 20, 30, 40]
    assert record.sizes == [1] * 5


def test_an_engine_failure_fails_only_its_batch() -> None:
    gate = threading.Event()
    record = Recorder(fail_on=1.0)

    def run(batch: np.ndarray, wanted: list[object]) -> list[float]:
        gate.wait(5)
        return record(batch, wanted)

    batcher = DynamicBatcher(run, BatchingOptions(max_batch_size=2, max_delay_s=0.05))
    futures = [batcher.submit(x) for x in _inputs(4)]  # batches [0, 1] (fails) and [2, 3]
    gate.set()
    with pytest.raises(RuntimeError, match="engine failure"):
        futures[0].result(5)
    with pytest.raises(RuntimeError):
        futures[1].result(5)
    assert [futures[2].result(5), futures[3].result(5)] == [20.0, 30.0]
    assert batcher.submit(_inputs(6)[5]).result(5) == 50.0  # the thread lives on


def test_observer_and_close() -> None:
    seen: list[tuple[int, list[float]]] = []
    batcher = DynamicBatcher(
        Recorder(),
        BatchingOptions(max_batch_size=8, max_delay_s=0.0),
        observe=lambda n, w: seen.append((n, w)),
    )
    assert batcher.submit(_inputs(1)[0]).result(5) == 0.0
    assert seen[0][0] == 1 and len(seen[0][1]) == 1 and 0 <= seen[0][1][0] < 1
    batcher.close(wait=True)
    with pytest.raises(RuntimeError, match="closed"):  # never run in the caller's thread (an event loop)
        batcher.submit(_inputs(3)[2])
    with pytest.raises(ValueError):
        DynamicBatcher(Recorder(), BatchingOptions(max_batch_size=0))


def test_each_input_carries_what_its_caller_wants_and_a_cancelled_one_is_left_out() -> None:
    calls: list[list[object]] = []
    gate = threading.Event()

    def run(batch: np.ndarray, wanted: list[object]) -> list[object]:
        gate.wait(5)
        calls.append(wanted)
        return wanted

    batcher = DynamicBatcher(run, BatchingOptions(max_batch_size=8, max_delay_s=0.0))
    first = batcher.submit(_inputs(1)[0], "top")  # a batch of its own, held at the gate
    time.sleep(0.05)
    futures = [batcher.submit(x, wanted) for x, wanted in zip(_inputs(3), (None, 7, "top"), strict=True)]
    futures[1].cancel()  # its caller stopped waiting before the batch ran
    gate.set()
    assert first.result(5) == "top" and futures[0].result(5) is None and futures[2].result(5) == "top"
    assert calls[-1] == [None, "top"]
