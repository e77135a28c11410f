"""Errors as the service answers them: a status, a type and a message, in one JSON shape for every route
(the Open Inference Protocol's routes answer in its own shape, see `v2.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.responses import JSONResponse

from imagenet_zoo.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from imagenet_zoo.records import Classification

_IMAGE_ERROR_STATUS: dict[type[ImageError], int] = {
    UnsupportedImageError: 415,
    EmptyImageError: 422,
    CorruptImageError: 422,
    ImageTooLargeError: 422,
}
RETRY = {"Retry-After": "1"}
CLOSE_CONNECTION = {"Connection": "close"}  # the request's body was not read to its end


@dataclass
class ApiError(Exception):
    status: int
    type: str
    message: str
    headers: dict[str, str] | None = None


def error_response(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None, *, path: str = ""
) -> JSONResponse:
    """The error body: `{"error": {"type", "message"}}`, or under /v2 the protocol's `{"error": message}`."""
    body: dict[str, object] = (
        {"error": message} if path.startswith("/v2/") else {"error": {"type": type_, "message": message}}
    )
    return JSONResponse(body, status_code=status, headers=headers)


def image_error(result: Classification) -> ApiError:
    """The answer to a single upload that could not be classified: 415 for what is not an image, else 422."""
    assert result.error is not None
    exception = result.error.exception
    status = 422 if exception is None else _IMAGE_ERROR_STATUS.get(type(exception), 422)
    return ApiError(status, result.error.type, result.error.message)
