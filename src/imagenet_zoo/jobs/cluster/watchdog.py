"""The watchdog of a job on a cluster: a job whose workers stop writing partitions is stopped, saying what
is left, instead of waiting for ever."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from imagenet_zoo.errors import ClusterError
from imagenet_zoo.jobs.cluster.job import ClusterJob
from imagenet_zoo.jobs.cluster.partitions import PartitionFolder

T = TypeVar("T")

_WATCH_INTERVAL_S = 2.0
_INTERRUPT_ARRIVES_S = 1.0  # a signal sent to this thread is handled well within this
_STARTUP_S = 120.0  # before the first partition: the actors start and load the model too


def watched(work: Callable[[], T], output: PartitionFolder, job: ClusterJob, todo: list[str]) -> T:
    """Run `work` (the whole job) while watching the output folder: if no partition appears for
    `job.stall_timeout_s` (plus `_STARTUP_S` before the first one), interrupt the job as Ctrl-C would (Ray
    Data then stops its tasks and actors) and raise a `ClusterError` that says what is left to do.

    Only a job run from the main thread is watched: the interruption is delivered to that thread."""
    if threading.current_thread() is not threading.main_thread():
        return work()
    stalled, finished, deciding = threading.Event(), threading.Event(), threading.Lock()

    def watch() -> None:
        written, last_progress = output.partition_count(), time.monotonic()
        allowance = job.stall_timeout_s + _STARTUP_S
        while not finished.wait(min(_WATCH_INTERVAL_S, job.stall_timeout_s)):
            count = output.partition_count()
            if count != written:
                written, last_progress, allowance = count, time.monotonic(), job.stall_timeout_s
                continue
            with deciding:  # never once the job has ended
                if time.monotonic() - last_progress > allowance and not finished.is_set():
                    stalled.set()
                    # A real SIGINT to the main thread: it interrupts a blocking wait there too (waiting
                    # for the next block), which `_thread.interrupt_main` leaves blocked.
                    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
                    return

    watcher = threading.Thread(target=watch, name="cluster-watchdog", daemon=True)
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:  # started in the background (`&`, nohup): Ctrl-C stays ignored, the watchdog's is not
        signal.signal(signal.SIGINT, partial(_interrupt_if, stalled))
    watcher.start()
    result: list[T] = []
    try:
        result.append(work())
        with deciding:
            finished.set()
        if stalled.is_set():  # the job ended as the watchdog stopped it: its interrupt arrives now
            time.sleep(_INTERRUPT_ARRIVES_S)
    except KeyboardInterrupt:
        if not stalled.is_set():
            raise  # the user's Ctrl-C
        if not result:
            raise _stalled(output, job, todo) from None
    finally:
        finished.set()
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return result[0]


def _interrupt_if(stalled: threading.Event, signum: int, frame: object) -> None:
    if stalled.is_set():
        raise KeyboardInterrupt


def _stalled(output: PartitionFolder, job: ClusterJob, todo: list[str]) -> ClusterError:
    done = output.paths()
    waiting = [path for path in todo if path not in done]
    examples = ", ".join(waiting[:3]) + (", ..." if len(waiting) > 3 else "")
    return ClusterError(
        f"the job stopped making progress: no partition was written for {job.stall_timeout_s:g} s "
        f"(--stall-timeout), with {len(waiting)} photos still to do ({examples}); it was stopped. "
        f"The {output.partition_count()} partitions written are kept: run the same command again to "
        "resume from them"
    )
