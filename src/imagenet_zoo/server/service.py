"""What both protocols share: the served models, the bounds on work in flight, and classification of
uploaded bytes as pre (decoding, in parallel threads), core (the model's dynamic batcher, which runs
images from many requests in one engine call) and post. The routes (`v1.py`, `v2.py`) only route.

Bodies are limited before they are read whole, for declared and chunked lengths alike; requests in
flight are bounded (past `max_queue` a request answers 503 at once; past its deadline, 504).
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import numpy as np
from fastapi import Request

from imagenet_zoo.classifier import PostPlan, plan_post
from imagenet_zoo.errors import ExplanationUnsupportedError, UsageError
from imagenet_zoo.explain import heatmap_png
from imagenet_zoo.pipeline import PostOptions, Prepared
from imagenet_zoo.records import Classification, ErrorInfo
from imagenet_zoo.registry import normalize_name
from imagenet_zoo.server.errors import RETRY, ApiError, error_response
from imagenet_zoo.server.metrics import Metrics
from imagenet_zoo.server.models import ModelPool, ServedModel
from imagenet_zoo.server.settings import Settings

T = TypeVar("T")
OVERLAY_SIDE = 512  # the overlay's longer side in pixels: enough for a page, small in a JSON answer
Upload = tuple[str, bytes]  # a name to echo, and the bytes
ServedResult = tuple[Classification, str | None]  # a result, and its heatmap overlay as a data URL
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


class DeclaredBodyLimit:
    """Refuse a request whose declared Content-Length is over the limit, before reading any of it.

    Bodies without a declared length (chunked) are counted as they are read, by `read_body`.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes)
        if scope["type"] == "http" and too_large:
            message = _too_large(self.max_bytes)
            response = error_response(413, "PayloadTooLarge", message, path=scope.get("path", ""))
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


def _too_large(max_bytes: int) -> str:
    return f"the request body exceeds the limit of {max_bytes:,} bytes"


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, read chunk by chunk and refused (413) as soon as it passes `max_bytes`."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, "PayloadTooLarge", _too_large(max_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


class InferenceQueue:
    """The bound on requests in flight (decoding, waiting for an engine call, in one), and the threads
    that decode their uploads."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        threads = settings.decode_threads or os.cpu_count() or 1
        self.decoder = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")
        self._settings, self._metrics = settings, metrics
        self.pending = 0

    def check_capacity(self) -> None:
        if self.pending >= self._settings.max_queue:
            raise ApiError(503, "Overloaded", "the inference queue is full; retry shortly", RETRY)

    async def run(self, work: Awaitable[T]) -> T:
        self.check_capacity()  # again: the queue may have filled while the upload was being read
        task = asyncio.ensure_future(work)
        self._track(+1)
        task.add_done_callback(self._finished)  # the slot frees when the work really ends
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._settings.deadline_s)
        except TimeoutError:
            raise ApiError(
                504, "DeadlineExceeded", f"no result within {self._settings.deadline_s:g} s"
            ) from None

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
        self.ready = False
        self.draining = False
        self._buffered = 0

    def model_name(self, requested: str | None) -> str:
        """The canonical name of a served model (404 if it is not served here)."""
        name = self._requestable.get(normalize_name(requested or self.names[0]))
        if name is None:
            served = ", ".join(self.names)
            raise ApiError(404, "UnknownModelError", f"{requested!r} is not served here; served: {served}")
        return name

    async def read_request(self, request: Request) -> bytes:
        """The body, once the queue and the upload buffer have room for it (503 at once if not)."""
        self.queue.check_capacity()  # refuse before reading the upload: a full queue answers at once
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else self.settings.max_upload_bytes  # larger got 413
        if self._buffered + size > self.settings.max_upload_buffer_bytes:
            raise ApiError(503, "Overloaded", "too many uploads in progress; retry shortly", RETRY)
        self._buffered += size
        try:
            return await read_body(request, self.settings.max_upload_bytes)
        finally:
            self._buffered -= size

    def plan(self, name: str, post: PostOptions) -> PostPlan:
        """The request's post options checked for the model (422 if it lacks a group, a class or the
        heatmap asked for), before anything is read or loaded."""
        plan = _checked(lambda: plan_post(self.pool.served[name].spec, post))
        if plan.explain:
            _checked(lambda: self.pool.check(name, explain=True))
        return plan

    async def classify(self, name: str, uploads: list[Upload], plan: PostPlan) -> list[ServedResult]:
        """Each upload's result (and heatmap overlay with `plan.explain`), within the queue's bounds."""

        async def work() -> list[ServedResult]:
            served = self.pool.loaded_model(name, explain=plan.explain)  # the common case: no thread hop
            if served is None:  # loading takes seconds: not on the event loop
                served = await asyncio.get_running_loop().run_in_executor(
                    None, self._load, name, plan.explain
                )
            return await classify_uploads(served, uploads, plan, self.queue.decoder)

        return await self.queue.run(work())

    def _load(self, name: str, explain: bool) -> ServedModel:
        return _checked(lambda: self.pool.get(name, explain=explain))

    def can_explain(self, name: str) -> bool:
        """Whether `?explain=true` works for this model here (the engine's own check, not a copy of it)."""
        try:
            self.pool.check(name, explain=True)
        except UsageError:
            return False
        return True

    def warm_up(self) -> None:
        """Load the default model and run it once, so the first request does not pay for compilation."""
        classifier = self.pool.get(self.names[0]).classifier
        size = classifier.data_config.input_size
        classifier.forward(np.zeros((1, size, size, 3), np.float32))

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
    served: ServedModel, uploads: list[Upload], plan: PostPlan, decoder: ThreadPoolExecutor
) -> list[ServedResult]:
    """Pre (decoding, in parallel on `decoder`), forward (the model's batcher), post, for each upload.
    A heatmap's overlay is drawn on the photo as decoded for the model, reduced: one decode each."""
    loop = asyncio.get_running_loop()
    classifier = served.classifier
    side = OVERLAY_SIDE if plan.explain else None
    prepared = await asyncio.gather(
        *(loop.run_in_executor(decoder, classifier.preprocess_keeping, data, side) for _, data in uploads)
    )
    outputs = await asyncio.gather(*(_forward(served, item) for item, _ in prepared))
    answers: list[ServedResult] = []
    for (name, _), (item, photo), output in zip(uploads, prepared, outputs, strict=True):
        row, heat = output if served.explain and output is not None else (output, None)
        info = item if isinstance(item, ErrorInfo) else item[0]
        result = classifier.postprocess(name, info, row, heat, plan)
        overlay = None
        if result.explanation is not None and photo is not None:
            overlay = await loop.run_in_executor(decoder, _overlay, photo, result)
        answers.append((result, overlay))
    return answers


async def _forward(served: ServedModel, item: Prepared) -> Any:
    if isinstance(item, ErrorInfo):
        return None
    return await asyncio.wrap_future(served.batcher.submit(item[1]))


def _overlay(photo: Any, result: Classification) -> str | None:
    """The heatmap over the photo (as decoded for the model, reduced) as a PNG data URL."""
    if result.explanation is None or result.input is None:
        return None
    size = (result.input.width, result.input.height)
    png = heatmap_png(photo, result.explanation, size, max_side=OVERLAY_SIDE)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
