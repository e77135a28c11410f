"""The HTTP service: `create_app(settings)` builds the whole FastAPI app, so tests drive the real thing.

Routes: the service's own `/v1` (`v1.py`), the Open Inference Protocol's `/v2` (`v2.py`), health,
metrics and the web page. Both protocols share one `Service`: the models, their dynamic batchers and
the bounds on work in flight. What an upload is gets decided by its bytes, never by its declared type or
file name, and file names are only echoed back, never used as paths.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from imagenet_zoo import __version__
from imagenet_zoo.server import schemas
from imagenet_zoo.server.errors import ApiError, error_response
from imagenet_zoo.server.metrics import Metrics
from imagenet_zoo.server.service import ASGIApp, Service, too_large_message
from imagenet_zoo.server.settings import Settings
from imagenet_zoo.server.v1 import v1_router
from imagenet_zoo.server.v2 import request_schemas, v2_router

_log = logging.getLogger(__name__)
_BEARER = HTTPBearer(auto_error=False, description="an API key from the file given to --api-key-file")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="imagenet-zoo"'}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = (settings or Settings()).with_engine_chosen()
    metrics = Metrics()
    service = Service(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(None, service.warm_up)
        service.ready = True
        yield
        service.ready = False
        service.close()

    app = FastAPI(title="imagenet-zoo", version=__version__, lifespan=lifespan)
    app.state.settings, app.state.service = settings, service
    _add_error_handlers(app, metrics)
    protected = (401,) if settings.api_keys else ()
    authorized = [Depends(_authorization(settings.api_keys))] if settings.api_keys else []
    app.include_router(v1_router(service, protected=protected), dependencies=authorized)
    app.include_router(v2_router(service, authorized=authorized, protected=protected))

    @app.get("/healthz", summary="Liveness", response_model=schemas.Status)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        summary="Readiness: the default model is loaded and warmed up, and not draining",
        response_model=schemas.Status,
        responses=schemas.errors(503),
    )
    async def readyz() -> dict[str, str]:
        if service.accepting:
            return {"status": "ready"}
        raise ApiError(503, "NotReady", "draining" if service.draining else "loading")

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **schemas.json_errors(*protected),
        },
        dependencies=authorized,
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", summary="The web page", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(files(__package__).joinpath("page.html").read_text(encoding="utf-8"))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            document.setdefault("components", {}).setdefault("schemas", {}).update(request_schemas())
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # Innermost first. Every answer, the body limit's 413 and an unexpected error's 500 included, passes
    # through the metrics and (outermost) the CORS headers.
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(DeclaredBodyLimit, max_bytes=settings.max_upload_bytes, metrics=metrics)
    app.add_middleware(Observed, metrics=metrics)
    if settings.cors_origins:  # browsers on these origins may call the API (preflight included)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Inference-Header-Content-Length"],
            expose_headers=["Inference-Header-Content-Length", "Retry-After", "WWW-Authenticate"],
        )
    return app


class UnexpectedErrors:
    """An error no handler answered becomes a 500 in the service's error shape here, inside the metrics
    and CORS middleware (Starlette's own 500 is sent outside all of them)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except ClientDisconnect:
            _log.info("the client hung up while sending %s %s", scope.get("method"), scope.get("path"))
            raise  # counted as the client's (499) by `Observed`; there is no one to answer
        except Exception:
            if started:
                raise
            _log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            response = error_response(500, "InternalError", "an unexpected error", path=scope.get("path", ""))
            await response(scope, receive, send)


class DeclaredBodyLimit:
    """Refuse a request whose declared Content-Length is over the limit, before reading any of it.

    Bodies without a declared length (chunked) are counted as they are read (`Service.read_request`).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics) -> None:
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = declared is not None and not (
            declared.isdigit() and len(declared) <= 20 and int(declared) <= self.max_bytes
        )
        if scope["type"] == "http" and too_large:
            self.metrics.errors.labels("PayloadTooLarge").inc()
            message = too_large_message(self.max_bytes)
            response = error_response(413, "PayloadTooLarge", message, path=scope.get("path", ""))
            return await response(scope, receive, send)
        await self.app(scope, receive, send)


CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that hung up before the answer
# The method label's values: another method (h11 passes any token through) is counted as OTHER, so the
# metrics cannot grow without bound.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


class Observed:
    """Counts and times every request by route and status (plain ASGI: Starlette's `BaseHTTPMiddleware`
    ran each request in a task group of its own, a measurable share of the event loop's time)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except ClientDisconnect:
            status = CLIENT_CLOSED_REQUEST
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in HTTP_METHODS else "OTHER"
            self.metrics.observe(method, path, status, time.perf_counter() - start)


def _authorization(keys: tuple[str, ...]) -> Callable[..., Awaitable[None]]:
    """A dependency that lets a request through only with `Authorization: Bearer <one of keys>`."""
    encoded = [key.encode() for key in keys]

    async def authorize(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        given = credentials.credentials.encode() if credentials else b""
        # Every key is compared, in constant time each: the answer's timing tells nothing of the keys.
        if not any([hmac.compare_digest(given, key) for key in encoded]):
            raise ApiError(
                401, "Unauthorized", "a valid API key is needed: Authorization: Bearer <key>", _CHALLENGE
            )

    return authorize


def _add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        metrics.errors.labels(exc.type).inc()
        return error_response(exc.status, exc.type, exc.message, exc.headers, path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 405's `Allow` header (RFC 9110) and any other header Starlette set are kept.
        path = request.url.path
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, "HTTPError", str(exc.detail), headers, path=path)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.errors.labels("InvalidParameter").inc()
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        status = 400 if request.url.path.startswith("/v2/") else 422  # the protocol's status for it
        return error_response(status, "InvalidParameter", details, path=request.url.path)
