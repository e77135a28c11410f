"""What both protocols share: the served models, the bounds on work in flight, and classification of
uploaded bytes through the pipeline: pre (decoding, in parallel threads), forward (the model's dynamic
batcher, which runs images from many requests in one engine call) and post. The routes (`v1.py`, `v2.py`)
only route.

Bodies are limited in size before they are read whole, for declared and chunked lengths alike, and in
time (the whole body, and the wait for each chunk); the upload buffer counts the bytes uploads have
sent, not those they promise. Requests in flight are bounded (past `max_queue` a request answers 503 at
once); past its deadline a request answers 504 and its work stops.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from PIL.Image import Image

from imagenet_zoo.classifier import PostPlan, plan_post
from imagenet_zoo.data.preprocess import Prepared
from imagenet_zoo.errors import ExplanationUnsupportedError, ImagenetZooError, UsageError
from imagenet_zoo.explain import heatmap_png
from imagenet_zoo.pipeline import Batch, Forward, Heat, PostOptions
from imagenet_zoo.records import Classification, ErrorInfo
from imagenet_zoo.registry import normalize_name
from imagenet_zoo.server.errors import CLOSE_CONNECTION, RETRY, ApiError
from imagenet_zoo.server.metrics import Metrics
from imagenet_zoo.server.models import ModelPool, ServedModel
from imagenet_zoo.server.settings import Settings

T = TypeVar("T")
_log = logging.getLogger(__name__)
OVERLAY_SIDE = 512  # the overlay's longer side in pixels: enough for a page, small in a JSON answer
Upload = tuple[str, bytes]  # a name to echo, and the bytes
ServedResult = tuple[Classification, str | None]  # a result, and its heatmap overlay as a data URL
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def too_large_message(max_bytes: int) -> str:
    """What a body over the limit is told."""
    return f"the request body exceeds the limit of {max_bytes:,} bytes"


class UploadBuffer:
    """The bytes of uploads being read, bounded: each upload counts what it has sent so far."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise ApiError(503, "Overloaded", "too many uploads in progress; retry shortly", RETRY)
        self.held += size

    def give_back(self, size: int) -> None:
        self.held -= size


class InferenceQueue:
    """The bound on requests in flight (decoding, waiting for an engine call, in one), and the threads
    that decode their uploads."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        threads = settings.decode_threads or os.cpu_count() or 1
        self.decoder = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")
        self._settings, self._metrics = settings, metrics
        self.pending = 0

    def check_capacity(self) -> None:
        if self.pending >= self._settings.queue_limit:
            raise ApiError(503, "Overloaded", "the inference queue is full; retry shortly", RETRY)

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """`work()` within the bounds: refused (503) when the queue is full; past the deadline, stopped
        (its images not yet decoded or batched are dropped) and answered 504."""
        self.check_capacity()  # again: the queue may have filled while the upload was being read
        task = asyncio.ensure_future(work())
        self._track(+1)
        task.add_done_callback(self._finished)  # the slot frees when the work really ends
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._settings.deadline_s)
        except TimeoutError:
            task.cancel()
            raise ApiError(
                504, "DeadlineExceeded", f"no result within {self._settings.deadline_s:g} s"
            ) from None
        except asyncio.CancelledError:  # the client went away: so does its work
            task.cancel()
            raise

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._track(-1)
        if not task.cancelled():
            task.exception()  # seen: work that fails after its request gave up is not an unhandled error

    def _track(self, delta: int) -> None:
        self.pending += delta
        self._metrics.queue_depth.set(self.pending)

    def shutdown(self) -> None:
        self.decoder.shutdown(wait=True)


class Service:
    """The served models and the work on them, for the routes of both protocols."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.pool = ModelPool(settings, observe=lambda name: partial(metrics.observe_batch, name))
        self.names = list(self.pool.served)  # canonical names, the default first; a bundle's is its path
        # What a request may name: the served models and their aliases, never a path on this server's disk.
        self._requestable = {
            normalize_name(alias): name
            for name, model in self.pool.served.items()
            for alias in (name, *model.spec.aliases)
        }
        self.queue = InferenceQueue(settings, metrics)
        self.uploads = UploadBuffer(settings.max_upload_buffer_bytes)
        self.ready = False
        self.draining = False
        self.unavailable: dict[str, str] = {}  # served models that could not be made, and why

    @property
    def accepting(self) -> bool:
        """Ready for requests (every model made, `/readyz` and v2's ready say so) and not draining."""
        return self.ready and not self.draining

    def model_name(self, requested: str | None) -> str:
        """The canonical name of a served model (404 if it is not served here)."""
        name = self._requestable.get(normalize_name(requested or self.names[0]))
        if name is None:
            served = ", ".join(self.names)
            raise ApiError(404, "UnknownModelError", f"{requested!r} is not served here; served: {served}")
        return name

    async def read_request(self, request: Request) -> bytes:
        """The body: refused at once when the queue is full; 413 past `max_upload_mb`, 503 when the
        uploads being read hold the whole buffer, 408 past the body's time or a chunk's wait."""
        self.queue.check_capacity()  # refuse before reading the upload: a full queue answers at once
        settings, size = self.settings, 0
        chunks: list[bytes] = []
        stream = request.stream().__aiter__()
        loop = asyncio.get_running_loop()
        try:
            # One deadline moved at each chunk: `wait_for` would start a task per chunk (Python 3.11).
            async with asyncio.timeout(settings.body_timeout_s), asyncio.timeout(None) as idle:
                while True:
                    idle.reschedule(loop.time() + settings.body_idle_timeout_s)
                    try:
                        chunk = await anext(stream)
                    except StopAsyncIteration:
                        return b"".join(chunks)
                    if size + len(chunk) > settings.max_upload_bytes:
                        raise ApiError(413, "PayloadTooLarge", too_large_message(settings.max_upload_bytes))
                    self.uploads.take(len(chunk))
                    size += len(chunk)
                    chunks.append(chunk)
        except TimeoutError:
            raise ApiError(
                408, "RequestTimeout", "the request body did not arrive in time", CLOSE_CONNECTION
            ) from None
        finally:
            self.uploads.give_back(size)

    def plan(self, name: str, post: PostOptions) -> PostPlan:
        """The request's post options checked for the model (422 if it lacks a group, a class or the
        heatmap asked for), before anything is read or loaded."""
        plan = _checked(lambda: plan_post(self.pool.served[name].spec, post))
        if plan.explain:
            _checked(lambda: self.pool.check(name, explain=True))
        return plan

    async def classify(self, name: str, uploads: list[Upload], plan: PostPlan) -> list[ServedResult]:
        """Each upload's result (and heatmap overlay with `plan.explain`), within the queue's bounds."""
        if name in self.unavailable:
            raise ApiError(503, "ModelUnavailable", self.unavailable[name])

        async def work() -> list[ServedResult]:
            served = self.pool.acquire_loaded(name)  # the common case: no thread hop
            if served is None:  # a load takes seconds: not on the event loop
                load = partial(_checked, partial(self.pool.acquire, name))
                served = await asyncio.get_running_loop().run_in_executor(None, load)
            try:
                ahead = self.settings.batch_limit
                return await classify_uploads(served, uploads, plan, self.queue.decoder, ahead)
            finally:
                self.pool.release(served)

        return await self.queue.run(work)

    def can_explain(self, name: str) -> bool:
        """Whether `?explain=true` works for this model here (the engine's own check, not a copy of it)."""
        return self.pool.can_explain(name)

    def prepare(self) -> None:
        """Make every model this server may load (converted, downloaded) before it reports ready: no
        request ever waits for a conversion. The default model must be made; another that cannot be (its
        weights are not here) is logged, and requests for it are answered 503 saying why."""
        for name in self.names:
            try:
                self.pool.check(name, explain=self.pool.can_explain(name)).prepare()
            except ImagenetZooError as exc:
                if name == self.names[0]:
                    raise
                self.unavailable[name] = f"{name} cannot be served: {type(exc).__name__}: {exc}"
                _log.warning(self.unavailable[name])

    def warm_up(self) -> None:
        """Prepare every model; load the default one and run it once, so the first request does not pay
        for compilation."""
        self.prepare()
        with self.pool.using(self.names[0]) as served:
            size = served.classifier.data_config.input_size
            served.classifier.forward(np.zeros((1, size, size, 3), np.uint8))

    def close(self) -> None:
        self.pool.close()
        self.queue.shutdown()


def _checked(call: Callable[[], T]) -> T:
    """`call`, its refusal of the request's options as the service answers one (422)."""
    try:
        return call()
    except ExplanationUnsupportedError as exc:
        raise ApiError(422, "ExplanationUnsupportedError", str(exc)) from None
    except UsageError as exc:
        raise ApiError(422, "InvalidParameter", str(exc)) from None


async def classify_uploads(
    served: ServedModel, uploads: list[Upload], plan: PostPlan, decoder: ThreadPoolExecutor, ahead: int
) -> list[ServedResult]:
    """The pipeline for a request, as an async adapter of `Classifier.run`: pre on `decoder`, forward
    through the model's dynamic batcher (rows from many requests in one engine call), and the same
    post as every other caller, on the request's whole batch."""
    classifier = served.classifier
    if classifier.batch_preprocessor is not None and not plan.explain:
        prepared, photos, outputs = await _forward_on_device(served, uploads, decoder)
    else:
        prepared, photos, outputs = await _forward_each(served, uploads, plan, decoder, ahead)
    forward = Forward.of_rows(outputs) if outputs else None
    results = list(classifier.postprocess(Batch([n for n, _ in uploads], prepared, forward), plan))
    loop = asyncio.get_running_loop()
    overlays = [
        None if photo is None else loop.run_in_executor(decoder, _overlay, photo, result)
        for photo, result in zip(photos, results, strict=True)
    ]
    return [(result, None if o is None else await o) for result, o in zip(results, overlays, strict=True)]


Forwarded = tuple[list[Prepared], list[Image | None], list[tuple[np.ndarray, Heat | None]]]


async def _forward_each(
    served: ServedModel, uploads: list[Upload], plan: PostPlan, decoder: ThreadPoolExecutor, ahead: int
) -> Forwarded:
    """Each upload decoded on `decoder` and moved on to the batcher as soon as it is, at most `ahead` of
    the request's images decoded and waiting at once. With a heatmap, the photo as decoded for the model
    is kept, reduced, to draw it on: one decode each."""
    loop = asyncio.get_running_loop()
    classifier = served.classifier
    side = OVERLAY_SIDE if plan.explain else None
    slots = asyncio.Semaphore(ahead)

    async def one(data: bytes) -> tuple[Prepared, Image | None, Any]:
        async with slots:
            item, photo = await loop.run_in_executor(decoder, classifier.preprocess_keeping, data, side)
            if isinstance(item, ErrorInfo):
                return item, None, None
            return item, photo, await asyncio.wrap_future(served.batcher.submit(item[1], plan.wanted))

    done = await asyncio.gather(*(one(data) for _, data in uploads))
    return [d[0] for d in done], [d[1] for d in done], [d[2] for d in done if d[2] is not None]


async def _forward_on_device(
    served: ServedModel, uploads: list[Upload], decoder: ThreadPoolExecutor
) -> Forwarded:
    """A request's uploads decoded and preprocessed on the engine's GPU as one batch (nvJPEG), their rows
    handed to the batcher there: Pillow's threads decode fewer photos a second than the GPU classifies."""
    preprocess = served.classifier.batch_preprocessor
    assert preprocess is not None
    loop = asyncio.get_running_loop()
    prepared = await loop.run_in_executor(decoder, preprocess, [data for _, data in uploads])
    rows = [
        asyncio.wrap_future(served.batcher.submit(item[1]))
        for item in prepared
        if not isinstance(item, ErrorInfo)
    ]
    outputs = await asyncio.gather(*rows)  # cancelled past the deadline: every row with it
    return prepared, [None] * len(prepared), list(outputs)


def _overlay(photo: Any, result: Classification) -> str | None:
    """The heatmap over the photo (as decoded for the model, reduced) as a PNG data URL."""
    if result.explanation is None or result.input is None:
        return None
    size = (result.input.width, result.input.height)
    png = heatmap_png(photo, result.explanation, size, max_side=OVERLAY_SIDE)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
