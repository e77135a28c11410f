"""The service's contract as types: every request body, answer and error the OpenAPI document declares.

Answers are built as plain dictionaries (`Classification.to_dict`) and validated against these models by
FastAPI, so the document and the answers cannot drift apart: a test fuzzes one against the other.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    type: str = Field(
        description="the error's type: UnknownModelError, UnsupportedImageError, Overloaded, ..."
    )
    message: str = Field(description="what went wrong, in words")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Prediction(BaseModel):
    rank: int = Field(ge=1)
    index: int = Field(ge=0, description="the class's index in the model's outputs")
    synset: str = Field(description="the WordNet id (ImageNet classes) or the class name (bundles)")
    label: str
    score: float = Field(ge=0, le=1, description="softmax probability")


class InputInfo(BaseModel):
    format: str | None = Field(description="the decoded format (JPEG, PNG, ...)")
    width: int = Field(ge=1, description="after EXIF rotation")
    height: int = Field(ge=1)
    mode: str = Field(description="the decoded pixel mode before conversion to RGB")
    exif_transposed: bool
    warnings: list[str] | None = Field(None, description="what the decoder warned about (only when it did)")


class GroupScore(BaseModel):
    name: str
    synset: str
    score: float = Field(ge=0, le=1, description="probability that the photo shows something of this group")
    classes: int = Field(ge=1, description="how many of the model's classes the group holds")


class Explanation(BaseModel):
    method: Literal["cam", "grad-cam"]
    class_index: int = Field(ge=0)
    label: str
    grid: list[list[float]] = Field(
        description="the heatmap at the network's resolution, rows top first, in [0, 1]"
    )
    region: list[float] = Field(
        min_length=4, max_length=4, description="[left, top, right, bottom]: the photo's box the model saw"
    )
    overlay: str | None = Field(None, description="the heatmap over the photo: a PNG as a data URL")


class Classification(BaseModel):
    path: str = Field(description="the upload's file name (only echoed, never used as a path)")
    model: str
    input: InputInfo
    predictions: list[Prediction]
    groups: list[GroupScore] | None = Field(None, description="with ?groups=")
    explanation: Explanation | None = Field(None, description="with ?explain=true")


class FailedFile(BaseModel):
    path: str
    error: ErrorDetail


class ModelInfo(BaseModel):
    name: str
    default: bool
    input_size: int
    classes: int
    top1: float = Field(
        description="published ImageNet top-1 accuracy, percent (a bundle's validation accuracy)"
    )
    explain: bool = Field(description="whether ?explain=true works for this model on this server")
    engine: str = Field(description="the engine that runs it (see `imagenet-zoo classify --help`)")
    precision: str
    loaded: bool
    ready: bool


class Status(BaseModel):
    status: Literal["ok", "ready"]


# Request bodies: an upload is read and checked by the service itself (its bytes decide what it is), so
# FastAPI cannot derive these; they are declared for clients and fuzzers.
_BINARY = {"type": "string", "format": "binary"}
IMAGE_BODY: dict[str, Any] = {
    "required": True,
    "description": "One image: a multipart field `file`, or the raw bytes as the body (an empty body is 422)",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": _BINARY},
                "required": ["file"],
                "additionalProperties": False,
            }
        },
        "application/octet-stream": {"schema": _BINARY},
        "image/*": {"schema": _BINARY},
    },
}


def images_body(max_files: int) -> dict[str, Any]:
    return {
        "required": True,
        "description": "Several images as multipart fields `file` (each answered on its own)",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": _BINARY, "minItems": 1, "maxItems": max_files}
                    },
                    "required": ["file"],
                    "additionalProperties": False,
                }
            }
        },
    }


_MEANINGS = {
    400: "a malformed multipart body, or one without a `file` field",
    401: "no valid API key (the service was started with --api-key-file)",
    404: "the model is not served here",
    413: "the body is larger than --max-upload-mb",
    415: "the upload is not an image, or a format this service cannot decode",
    422: "an invalid parameter, or an empty, corrupt or too large image",
    408: "the request body did not arrive within --body-timeout, or stopped for --body-idle-timeout",
    503: "overloaded (the queue or the upload buffer is full: retry after Retry-After), not ready, or "
    "the model cannot be served here (its weights are not on the server)",
    504: "no result within the deadline",
}


def errors(
    *statuses: int, body: type[BaseModel] = ErrorBody, meanings: dict[int, str] = _MEANINGS
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with its error body and what it means."""
    return {status: {"model": body, "description": meanings[status]} for status in statuses}


def json_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`errors` for a route whose own answer is not JSON (FastAPI would give them the route's type)."""
    schema = {"$ref": "#/components/schemas/ErrorBody"}
    return {
        status: {"description": _MEANINGS[status], "content": {"application/json": {"schema": schema}}}
        for status in statuses
    }
