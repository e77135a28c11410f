"""The service's own dialect, `/v1`: multipart or raw-body uploads, answers as `classify --format json`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from imagenet_zoo.pipeline import PostOptions
from imagenet_zoo.server import schemas
from imagenet_zoo.server.errors import ApiError, image_error
from imagenet_zoo.server.multipart import image_files
from imagenet_zoo.server.service import ServedResult, Service, Upload
from imagenet_zoo.specs import MAX_CLASSES

MAX_FILENAME = 200
MAX_GROUPS = 16
MAX_TOP_K = MAX_CLASSES
GROUPS_HELP = "WordNet groups whose probability to report, comma-separated: dog,bird (or synset ids)"
EXPLAIN_HELP = "also a heatmap of the top-1 class's evidence: `explanation`, with a PNG overlay as a data URL"
MODEL_HELP = "a served model's name or alias (default: the first served)"


class ClassifyQuery(BaseModel):
    """The query parameters both classify routes take (one model: FastAPI validates it in one step)."""

    model: str | None = Field(None, description=MODEL_HELP)
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="at most the model's classes are reported")
    groups: str | None = Field(None, max_length=1000, description=GROUPS_HELP)
    explain: bool = Field(False, description=EXPLAIN_HELP)


def v1_router(service: Service, *, protected: tuple[int, ...] = ()) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["v1"])
    settings = service.settings

    async def uploads_of(request: Request, *, many: bool) -> list[Upload]:
        body = await service.read_request(request)
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return [("upload", body)]
        files = image_files(body, content_type, max_files=settings.max_batch_files if many else 1)
        return [(_safe_name(name), data) for name, data in files]

    async def classify(request: Request, query: ClassifyQuery, *, many: bool) -> list[ServedResult]:
        name = service.model_name(query.model)
        post = PostOptions(top=query.top_k, groups=_groups(query.groups), explain=query.explain)
        plan = service.plan(name, post)
        uploads = await uploads_of(request, many=many)
        return await service.classify(name, uploads, plan)

    @router.post(
        "/classify",
        summary="Classify one image (multipart field `file`, or the raw body)",
        response_model=schemas.Classification,
        response_model_exclude_none=True,
        responses=schemas.errors(*protected, 400, 404, 408, 413, 415, 422, 503, 504),
        openapi_extra={"requestBody": schemas.IMAGE_BODY},
    )
    async def classify_one(request: Request, query: Annotated[ClassifyQuery, Query()]) -> JSONResponse:
        [answer] = await classify(request, query, many=False)
        if answer[0].error is not None:
            raise image_error(answer[0])
        # Returned as built: the answers are the schema's by construction (the contract test checks),
        # and validating each again on the way out cost a measurable share of a request.
        return JSONResponse(_body(answer))

    @router.post(
        "/classify/batch",
        summary="Classify several images (multipart fields `file`); each answers on its own",
        response_model=list[schemas.Classification | schemas.FailedFile],
        response_model_exclude_none=True,
        responses=schemas.errors(*protected, 400, 404, 408, 413, 422, 503, 504),
        openapi_extra={"requestBody": schemas.images_body(settings.max_batch_files)},
    )
    async def classify_batch(request: Request, query: Annotated[ClassifyQuery, Query()]) -> JSONResponse:
        answers = await classify(request, query, many=True)
        return JSONResponse([_body(a) for a in answers])

    @router.get(
        "/models",
        summary="Served models and whether each is loaded",
        response_model=list[schemas.ModelInfo],
        responses=schemas.errors(*protected),
    )
    async def models() -> list[dict[str, Any]]:
        loaded = service.pool.loaded()
        rows = []
        for name, model in service.pool.served.items():
            if name in service.unavailable:  # said why in the log at start-up; requests for it get 503
                continue
            spec = model.spec
            rows.append(
                {
                    "name": name,
                    "default": name == service.names[0],
                    "input_size": spec.data_config.input_size,
                    "classes": spec.num_classes,
                    "top1": spec.accuracy.top1,
                    "explain": service.can_explain(name),
                    "engine": settings.load.engine,
                    "precision": settings.load.precision,
                    "loaded": name in loaded,
                    "ready": name in loaded and service.ready,
                }
            )
        return rows

    return router


def _safe_name(filename: str | None) -> str:
    """An uploaded file's name, reduced to something safe to echo (it is never used as a path)."""
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:MAX_FILENAME]
    return name or "upload"


def _body(answer: ServedResult) -> dict[str, Any]:
    result, overlay = answer
    body = result.to_dict()
    if overlay is not None:
        body["explanation"]["overlay"] = overlay
    return body


def _groups(words: str | None) -> tuple[str, ...]:
    """`?groups=dog,bird` as words (each checked against the model by the service: 422 if unknown or
    ambiguous, listing candidates)."""
    names = tuple(word.strip() for word in (words or "").split(",") if word.strip())
    if len(names) > MAX_GROUPS:
        raise ApiError(422, "InvalidParameter", f"at most {MAX_GROUPS} groups per request")
    return names
