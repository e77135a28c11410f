"""The HTTP service: `create_app(settings)` builds the whole FastAPI app, so tests drive the real thing.

Inference never runs on the event loop: requests wait in a bounded queue for a small thread pool (a full
queue answers 503 at once; a request past its deadline answers 504). Bodies are limited before they are
read whole, for declared and chunked lengths alike. What an upload is gets decided by its bytes, never by
its declared type or file name, and file names are only echoed back, never used as paths.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from importlib.resources import files
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from imagenet_zoo.classifier import Classification
from imagenet_zoo.data.hierarchy import groups_for
from imagenet_zoo.data.images import decode_image
from imagenet_zoo.errors import (
    CorruptImageError,
    EmptyImageError,
    ExplanationUnsupportedError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
    UsageError,
)
from imagenet_zoo.explain import heatmap_png
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.registry import normalize_name
from imagenet_zoo.server.metrics import Metrics
from imagenet_zoo.server.models import ModelPool
from imagenet_zoo.server.settings import Settings

MAX_FILENAME = 200
GROUPS_HELP = "WordNet groups whose probability to report, comma-separated: dog,bird (or synset ids)"
EXPLAIN_HELP = "also a heatmap of the top-1 class's evidence: `explanation`, with a PNG overlay as a data URL"
OVERLAY_SIDE = 512  # the overlay's longer side in pixels: enough for a page, small in a JSON answer
_IMAGE_ERROR_STATUS: dict[type[ImageError], int] = {
    UnsupportedImageError: 415,
    EmptyImageError: 422,
    CorruptImageError: 422,
    ImageTooLargeError: 422,
}


@dataclass
class ApiError(Exception):
    status: int
    type: str
    message: str
    headers: dict[str, str] | None = None


def error_response(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)


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
            response = error_response(413, "PayloadTooLarge", _too_large(self.max_bytes))
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
    """A bounded queue in front of the inference threads."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=settings.inference_threads, thread_name_prefix="inference"
        )
        self._settings, self._metrics = settings, metrics
        self.pending = 0

    def check_capacity(self) -> None:
        if self.pending >= self._settings.max_queue:
            raise ApiError(
                503, "Overloaded", "the inference queue is full; retry shortly", {"Retry-After": "1"}
            )

    async def run(self, work: Callable[[], Any]) -> Any:
        self.check_capacity()  # again: the queue may have filled while the upload was being read
        future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        self._track(+1)
        future.add_done_callback(lambda _: self._track(-1))  # the slot frees when the work really ends
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._settings.deadline_s)
        except TimeoutError:
            raise ApiError(
                504, "DeadlineExceeded", f"no result within {self._settings.deadline_s:g} s"
            ) from None

    def _track(self, delta: int) -> None:
        self.pending += delta
        self._metrics.queue_depth.set(self.pending)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


def _safe_name(filename: str | None) -> str:
    """An uploaded file's name, reduced to something safe to echo (it is never used as a path)."""
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:MAX_FILENAME]
    return name or "upload"


Answer = tuple[Classification, str | None]  # a result, and its heatmap overlay as a data URL


def _classify_bytes(
    pool: ModelPool, name: str, uploads: list[tuple[str, bytes]], top: int, groups: list[str], explain: bool
) -> list[Answer]:
    try:
        classifier = pool.get(name, explain=explain)
        results = classifier.classify_many(
            [data for _, data in uploads], top=top, groups=groups, explain=explain
        )
    except ExplanationUnsupportedError as exc:
        raise ApiError(422, "ExplanationUnsupportedError", str(exc)) from None
    return [
        (replace(r, source=name), _overlay(data, r, classifier.max_pixels) if explain else None)
        for (name, data), r in zip(uploads, results, strict=True)
    ]


def _overlay(data: bytes, result: Classification, max_pixels: int) -> str | None:
    """The heatmap over the photo as a PNG data URL, from a reduced decode of the upload."""
    if result.explanation is None or result.input is None:
        return None
    photo = decode_image(data, max_pixels=max_pixels, min_short_side=OVERLAY_SIDE).image
    size = (result.input.width, result.input.height)
    png = heatmap_png(photo, result.explanation, size, max_side=OVERLAY_SIDE)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _answer(answer: Answer) -> dict[str, Any]:
    result, overlay = answer
    body = result.to_dict()
    if overlay is not None:
        body["explanation"]["overlay"] = overlay
    return body


MAX_GROUPS = 16


def _groups(words: str | None, model: RegisteredModel) -> list[str]:
    """`?groups=dog,bird` as synset ids; an unknown or ambiguous word is a 422 that lists candidates."""
    names = [word for word in (words or "").split(",") if word.strip()]
    if not names:
        return []
    if len(names) > MAX_GROUPS:
        raise ApiError(422, "InvalidParameter", f"at most {MAX_GROUPS} groups per request")
    try:
        return [synset.id for synset in groups_for(names, model.spec.labels, model.spec.name)]
    except UsageError as exc:
        raise ApiError(422, "InvalidParameter", str(exc)) from None


def _as_api_error(result: Classification) -> ApiError:
    assert result.error is not None
    exception = result.error.exception
    status = 422 if exception is None else _IMAGE_ERROR_STATUS.get(type(exception), 422)
    return ApiError(status, result.error.type, result.error.message)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    pool = ModelPool(settings)
    served = list(pool.served)  # canonical names; a bundle's is its path
    # What a request may name: the served models and their aliases, never a path on this server's disk.
    requestable = {
        normalize_name(alias): name
        for name, model in pool.served.items()
        for alias in (name, *model.spec.aliases)
    }
    queue = InferenceQueue(settings, metrics)
    state = {"ready": False, "draining": False, "buffered": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(None, _warm_up, pool, served[0])
        state["ready"] = True
        yield
        state["ready"] = False
        queue.shutdown()

    app = FastAPI(title="imagenet-zoo", version="0.1.0", lifespan=lifespan)
    app.state.settings, app.state.pool, app.state.status = settings, pool, state

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.observe(request.method, path, response.status_code, time.perf_counter() - start)
        return response

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        metrics.errors.labels(exc.type).inc()
        return error_response(exc.status, exc.type, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, "HTTPError", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("InvalidParameter").inc()
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error_response(422, "InvalidParameter", details)

    async def read_uploads(request: Request, *, many: bool) -> list[tuple[str, bytes]]:
        body = await read_body(request, settings.max_upload_bytes)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return [("upload", body)]
        request._body = body  # Starlette parses the form from the bounded bytes already read
        try:
            form = await request.form(
                max_files=settings.max_batch_files if many else 1,
                max_fields=max(settings.max_batch_files, 8),
                max_part_size=64 * 1024,  # non-file fields: a model name fits in far less
            )
        except MultiPartException as exc:
            raise ApiError(400, "MalformedRequest", str(exc)) from None
        uploads = [
            v for key, v in form.multi_items() if key in ("file", "files") and isinstance(v, UploadFile)
        ]
        if not uploads:
            raise ApiError(
                400, "MalformedRequest", "send the image as a multipart field named 'file' or as the body"
            )
        return [(_safe_name(u.filename), await u.read()) for u in uploads]

    async def classify(
        request: Request, model: str | None, top_k: int, groups: str | None, explain: bool, *, many: bool
    ) -> list[Answer]:
        name = requestable.get(normalize_name(model or served[0]))
        if name is None:
            raise ApiError(
                404, "UnknownModelError", f"{model!r} is not served here; served: {', '.join(served)}"
            )
        synsets = _groups(groups, pool.served[name])
        queue.check_capacity()  # refuse before reading the upload: a full queue answers at once
        declared = request.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else settings.max_upload_bytes  # larger ones got 413
        if state["buffered"] + size > settings.max_upload_buffer_bytes:
            raise ApiError(
                503, "Overloaded", "too many uploads in progress; retry shortly", {"Retry-After": "1"}
            )
        state["buffered"] += size
        try:
            uploads = await read_uploads(request, many=many)
        finally:
            state["buffered"] -= size
        work = lambda: _classify_bytes(pool, name, uploads, top_k, synsets, explain)  # noqa: E731
        return await queue.run(work)  # type: ignore[no-any-return]

    @app.post("/v1/classify", summary="Classify one image (multipart field `file`, or the raw body)")
    async def classify_one(
        request: Request,
        model: str | None = None,
        top_k: int = Query(5, ge=1, le=1000),
        groups: str | None = Query(None, max_length=1000, description=GROUPS_HELP),
        explain: bool = Query(False, description=EXPLAIN_HELP),
    ) -> dict[str, Any]:
        [answer] = await classify(request, model, top_k, groups, explain, many=False)
        if answer[0].error is not None:
            raise _as_api_error(answer[0])
        return _answer(answer)

    @app.post("/v1/classify/batch", summary="Classify several images (multipart fields `file`)")
    async def classify_batch(
        request: Request,
        model: str | None = None,
        top_k: int = Query(5, ge=1, le=1000),
        groups: str | None = Query(None, max_length=1000, description=GROUPS_HELP),
        explain: bool = Query(False, description=EXPLAIN_HELP),
    ) -> list[dict[str, Any]]:
        return [_answer(a) for a in await classify(request, model, top_k, groups, explain, many=True)]

    @app.get("/v1/models", summary="Served models and whether each is loaded")
    async def models() -> list[dict[str, Any]]:
        loaded = pool.loaded()
        rows = []
        for model in pool.served.values():
            spec = model.spec
            rows.append(
                {
                    "name": spec.name,
                    "default": spec.name == served[0],
                    "input_size": spec.data_config.input_size,
                    "classes": spec.num_classes,
                    "explain": settings.engine == "keras"
                    or (spec.explain_method == "cam" and settings.precision != "int8"),
                    "top1": spec.accuracy.top1,
                    "loaded": spec.name in loaded,
                    "ready": spec.name in loaded and state["ready"],
                }
            )
        return rows

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the default model is loaded and warmed up, and not draining")
    async def readyz() -> JSONResponse:
        if state["ready"] and not state["draining"]:
            return JSONResponse({"status": "ready"})
        reason = "draining" if state["draining"] else "loading"
        return error_response(503, "NotReady", reason)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(files(__package__).joinpath("page.html").read_text(encoding="utf-8"))

    app.add_middleware(DeclaredBodyLimit, max_bytes=settings.max_upload_bytes)  # outermost: nothing read yet
    return app


def _warm_up(pool: ModelPool, name: str) -> None:
    """Load the default model and run it once, so the first request does not pay for compilation."""
    classifier = pool.get(name)
    size = classifier.data_config.input_size
    classifier.classify(np.full((size, size, 3), 127, np.uint8), top=1)
