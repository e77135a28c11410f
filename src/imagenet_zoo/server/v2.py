"""The Open Inference Protocol (KServe v2), REST: the dialect of Triton, KServe, TorchServe, MLServer and
OpenVINO Model Server, so their clients, health checks and dashboards work here too.

A model takes one input, `IMAGE`: a BYTES tensor of shape [N], each element an encoded image (in JSON,
base64 text; with the binary tensor data extension, the raw bytes). It answers with the top-k (`top_k`
request parameter, default 5) as `LABELS` (BYTES [N, k]), `SCORES` (FP32 softmax [N, k]) and
`CLASS_INDICES` (INT64 [N, k]), and `PROBABILITIES` (FP32 [N, classes]). An output requested with the
classification extension (`"parameters": {"classification": K}`) is BYTES [N, K] of "score:index:label".
Binary outputs follow Triton's binary tensor data extension (tritonclient's default). Errors answer
`{"error": "message"}`, as the protocol says.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.params import Depends
from pydantic import BaseModel, Field

from imagenet_zoo.pipeline import PostOptions
from imagenet_zoo.records import Classification
from imagenet_zoo.server import schemas
from imagenet_zoo.server.errors import ApiError
from imagenet_zoo.server.service import Service, Upload
from imagenet_zoo.specs import MAX_CLASSES

INPUT = "IMAGE"
OUTPUTS = ("LABELS", "SCORES", "CLASS_INDICES", "PROBABILITIES")
HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_TOP_K = MAX_CLASSES  # at most the model's classes are reported
_JSON = "application/json"


class TensorMetadata(BaseModel):
    name: str
    datatype: Literal["BYTES", "FP32", "INT64"]
    shape: list[int] = Field(description="-1: any size")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class RequestTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description="JSON data: each image base64-encoded")


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, description='{"binary_data": bool, "classification": K}')


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(None, description='{"top_k": 5, "binary_data_output": bool}')
    inputs: list[RequestTensor] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = None


class ResponseTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseTensor]


class ProtocolError(BaseModel):
    error: str


_MEANINGS = {
    400: "a malformed inference request, or an input that is not a decodable image",
    401: "no valid API key (the service was started with --api-key-file)",
    404: "the model is not served here",
    408: "the request body did not arrive within --body-timeout, or stopped for --body-idle-timeout",
    413: "the body is larger than --max-upload-mb",
    503: "overloaded (retry after Retry-After) or not ready",
    504: "no result within the deadline",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return schemas.errors(*statuses, body=ProtocolError, meanings=_MEANINGS)


_BINARY = {"type": "string", "format": "binary"}
# A 32x32 PNG: the document's example request classifies a real image.
_EXAMPLE_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAAD8GO2jAAAAK0lEQVR42u3NQQEAQAQAMC6XYIIJeCX4bQWW0xWXXhwTCAQCgUAgEAgE"
    "Wz6b1gGoIFfSOQAAAABJRU5ErkJggg=="
)
_EXAMPLE = {
    "parameters": {"top_k": 3},
    "inputs": [{"name": INPUT, "shape": [1], "datatype": "BYTES", "data": [_EXAMPLE_PNG]}],
}
_INFER_BODY: dict[str, Any] = {
    "required": True,
    "description": "An inference request in JSON, or with the binary tensor data extension: the JSON header "
    f"({HEADER_LENGTH} bytes long) followed by the tensors' bytes",
    "content": {
        _JSON: {"schema": {"$ref": "#/components/schemas/InferenceRequest"}, "example": _EXAMPLE},
        "application/octet-stream": {"schema": _BINARY},
    },
}


def request_schemas() -> dict[str, Any]:
    """The inference request's JSON schemas, for the OpenAPI document's components: the route reads the
    body itself (JSON, or JSON + binary tensors), so FastAPI cannot list them."""
    schema = InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs", {}), "InferenceRequest": schema}


def v2_router(service: Service, *, authorized: Sequence[Depends], protected: tuple[int, ...]) -> APIRouter:
    """Health and server metadata are open; model metadata and inference need a key if keys are set."""
    router = APIRouter(prefix="/v2", tags=["v2: Open Inference Protocol"])

    @router.get("/health/live", summary="Server liveness", response_model=Live)
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready", summary="Server readiness", response_model=Ready, responses=_errors(503))
    async def ready() -> dict[str, bool]:
        if not service.accepting:
            raise ApiError(503, "NotReady", "draining" if service.draining else "loading")
        return {"ready": True}

    @router.get("", summary="Server metadata", response_model=ServerMetadata)
    async def server_metadata() -> dict[str, Any]:
        from imagenet_zoo import __version__

        return {
            "name": "imagenet-zoo",
            "version": __version__,
            "extensions": ["classification", "binary_tensor_data"],
        }

    model_routes = APIRouter(dependencies=list(authorized))

    @model_routes.get(
        "/models/{name}/ready",
        summary="Model readiness",
        response_model=ModelReady,
        responses=_errors(*protected, 404),
    )
    async def model_ready(name: str) -> dict[str, Any]:
        canonical = service.model_name(name)
        return {"name": canonical, "ready": service.ready and canonical in service.pool.loaded()}

    @model_routes.get(
        "/models/{name}",
        summary="Model metadata: its input and outputs",
        response_model=ModelMetadata,
        responses=_errors(*protected, 404),
    )
    async def model_metadata(name: str) -> dict[str, Any]:
        canonical = service.model_name(name)
        classes = service.pool.served[canonical].spec.num_classes
        return {
            "name": canonical,
            "versions": ["1"],
            "platform": f"imagenet-zoo_{service.settings.load.engine}",
            "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": "LABELS", "datatype": "BYTES", "shape": [-1, -1]},
                {"name": "SCORES", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "CLASS_INDICES", "datatype": "INT64", "shape": [-1, -1]},
                {"name": "PROBABILITIES", "datatype": "FP32", "shape": [-1, classes]},
            ],
        }

    @model_routes.post(
        "/models/{name}/infer",
        summary="Classify a batch of encoded images",
        response_model=InferenceResponse,
        response_model_exclude_none=True,
        responses={
            200: {"content": {"application/octet-stream": {"schema": _BINARY}}},
            **_errors(*protected, 400, 404, 408, 413, 503, 504),
        },
        openapi_extra={"requestBody": _INFER_BODY},
    )
    async def infer(name: str, request: Request) -> Response:
        canonical = service.model_name(name)
        body, header_length = await service.read_request(request), request.headers.get(HEADER_LENGTH)
        limit = service.settings.max_batch_files
        # Parsing a body of up to --max-upload-mb is work of its size: off the event loop.
        parsed = await asyncio.get_running_loop().run_in_executor(
            None, partial(parse_request, body, header_length, max_images=limit)
        )
        classes = service.pool.served[canonical].spec.num_classes
        post = PostOptions(top=parsed.predictions_needed(classes), probabilities=parsed.probabilities)
        answers = await service.classify(canonical, parsed.images, service.plan(canonical, post))
        results = [result for result, _ in answers]
        for i, result in enumerate(results):
            if result.error is not None:
                raise ApiError(400, result.error.type, f"input {INPUT}[{i}]: {result.error.message}")
        return encode_response(canonical, parsed, results)

    router.include_router(model_routes)
    return router


@dataclass(frozen=True)
class ParsedRequest:
    images: list[Upload]
    top_k: int
    id: str | None
    outputs: dict[str, dict[str, Any]]  # requested output -> its parameters (every output if none asked)
    binary_default: bool

    @property
    def probabilities(self) -> bool:
        return "PROBABILITIES" in self.outputs

    def predictions_needed(self, classes: int) -> int:
        """How many ranked classes post-processing must keep for the outputs asked."""
        needed = [self.top_k] + [int(p.get("classification") or 0) for p in self.outputs.values()]
        return min(classes, max(needed))


def parse_request(body: bytes, header_length: str | None, *, max_images: int) -> ParsedRequest:
    """An inference request, JSON or JSON + binary tensors, checked against the model's one input: at
    most `max_images` images, counted from its shape before any element is unpacked."""
    json_size = len(body)
    if header_length is not None:
        if not (_whole_number(header_length) and int(header_length) <= len(body)):
            raise ApiError(400, "InvalidRequest", f"{HEADER_LENGTH} must be a length within the body")
        json_size = int(header_length)
    try:
        request = InferenceRequest.model_validate_json(body[:json_size])
    except ValueError as exc:
        raise ApiError(400, "InvalidRequest", f"not an inference request: {_first_line(exc)}") from None
    tensor = request.inputs[0]
    if tensor.name != INPUT or tensor.datatype != "BYTES" or len(tensor.shape) != 1:
        raise ApiError(400, "InvalidRequest", f"the input must be {INPUT}, BYTES, of shape [N]")
    if not 1 <= tensor.shape[0] <= max_images:
        raise ApiError(400, "InvalidRequest", f"{INPUT} takes 1 to {max_images} images per request")
    images = _images(tensor, body[json_size:], tensor.shape[0])
    parameters = request.parameters or {}
    top_k = parameters.get("top_k", 5)
    if not (_count(top_k) and top_k <= MAX_TOP_K):
        raise ApiError(400, "InvalidRequest", f"top_k must be a whole number from 1 to {MAX_TOP_K}")
    outputs = {o.name: o.parameters or {} for o in request.outputs or []}
    unknown = set(outputs) - set(OUTPUTS)
    if unknown:
        raise ApiError(
            400, "InvalidRequest", f"unknown outputs {sorted(unknown)}; this model has {list(OUTPUTS)}"
        )
    if not all(_count(p["classification"]) for p in outputs.values() if "classification" in p):
        raise ApiError(400, "InvalidRequest", "classification must be a positive whole number")
    binary = parameters.get("binary_data_output", False) is True
    return ParsedRequest(
        [(f"{INPUT}[{i}]", image) for i, image in enumerate(images)],
        top_k,
        request.id,
        outputs or {name: {} for name in OUTPUTS},
        binary,
    )


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300]


def _whole_number(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 20  # "¹²³" is digits too, to str.isdigit


def _count(value: Any) -> bool:
    """A positive whole number in JSON (not a boolean, a float, a string or Infinity)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _images(tensor: RequestTensor, binary: bytes, count: int) -> list[bytes]:
    """The `count` encoded images: base64 text in JSON, or length-prefixed bytes after the JSON header
    (a different number of elements is refused as soon as it shows)."""
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None:
        if tensor.data is not None or not _count(size) or size != len(binary):
            raise ApiError(400, "InvalidRequest", "binary_data_size must be the length of the binary data")
        return _unpack_bytes(binary, count)
    if binary or tensor.data is None:
        raise ApiError(400, "InvalidRequest", f"{INPUT} has no data")
    if len(tensor.data) != count:
        raise ApiError(
            400, "InvalidRequest", f"{INPUT} holds {len(tensor.data)} elements for shape [{count}]"
        )
    try:
        return [base64.b64decode(item, validate=True) for item in tensor.data]
    except (binascii.Error, TypeError, ValueError):
        raise ApiError(
            400, "InvalidRequest", f"in JSON, each {INPUT} element is an image in base64"
        ) from None


def _unpack_bytes(buffer: bytes, count: int) -> list[bytes]:
    """Triton's BYTES serialization: each element as a 4-byte little-endian length, then its bytes."""
    items: list[bytes] = []
    offset = 0
    while offset < len(buffer):
        if offset + 4 > len(buffer) or len(items) == count:
            raise ApiError(400, "InvalidRequest", f"the BYTES tensor is not {count} elements")
        (length,) = struct.unpack_from("<I", buffer, offset)
        offset += 4
        if offset + length > len(buffer):
            raise ApiError(400, "InvalidRequest", "truncated BYTES tensor")
        items.append(buffer[offset : offset + length])
        offset += length
    if len(items) != count:
        raise ApiError(400, "InvalidRequest", f"the BYTES tensor is not {count} elements")
    return items


def _pack_bytes(items: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def encode_response(model: str, request: ParsedRequest, results: list[Classification]) -> Response:
    """The outputs asked for, each as JSON data or binary (then appended after the JSON header)."""
    tensors = _output_tensors(results, request.top_k)
    outputs, chunks = [], []
    for name, parameters in request.outputs.items():
        datatype, array = tensors[name]()
        count = parameters.get("classification")
        if count is not None:
            datatype, array = "BYTES", _classification(results, count)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if parameters.get("binary_data", request.binary_default) is True:
            raw = _pack_bytes(list(array.reshape(-1))) if datatype == "BYTES" else array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            flat = array.reshape(-1).tolist()
            entry["data"] = [x.decode() for x in flat] if datatype == "BYTES" else flat
        outputs.append(entry)
    header = json.dumps(
        {"model_name": model, "model_version": "1", "outputs": outputs, **_id(request)}
    ).encode()
    if not chunks:
        return Response(header, media_type=_JSON)
    return Response(
        header + b"".join(chunks),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


def _id(request: ParsedRequest) -> dict[str, str]:
    return {"id": request.id} if request.id is not None else {}


def _output_tensors(
    results: list[Classification], top_k: int
) -> dict[str, Callable[[], tuple[str, np.ndarray]]]:
    rows = [r.predictions[:top_k] for r in results]
    return {
        "LABELS": lambda: (
            "BYTES",
            np.array([[p.label.encode() for p in row] for row in rows], dtype=object),
        ),
        "SCORES": lambda: ("FP32", np.array([[p.score for p in row] for row in rows], dtype=np.float32)),
        "CLASS_INDICES": lambda: (
            "INT64",
            np.array([[p.index for p in row] for row in rows], dtype=np.int64),
        ),
        "PROBABILITIES": lambda: ("FP32", np.stack([_probabilities(r) for r in results])),
    }


def _probabilities(result: Classification) -> np.ndarray:
    assert result.probabilities is not None, "kept by post-processing when PROBABILITIES is asked"
    return result.probabilities


def _classification(results: list[Classification], count: int) -> np.ndarray:
    """Triton's classification extension: the top `count` as "score:index:label", best first."""
    rows = [
        [f"{p.score:f}:{p.index}:{p.label}".encode() for p in result.predictions[:count]]
        for result in results
    ]
    return np.array(rows, dtype=object)
