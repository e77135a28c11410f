"""The files of a multipart/form-data body that is already in memory (read whole, within its limit).

python-multipart's parser, as Starlette uses it, with callbacks that keep each file's bytes and nothing
else: Starlette's form parsing spools every file into a temporary file object and awaits each write,
work a request that holds its body in memory does not need (a tenth of the event loop's time per
classify request in the load test).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from imagenet_zoo.server.errors import ApiError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FILE_FIELD = "file"
_MAX_HEADER_BYTES = 8 * 1024  # a part's headers: a name, a file name and a type fit in far less


def image_files(body: bytes, content_type: str, *, max_files: int) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each part; every part must be a file field named `file` (400 otherwise)."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise _malformed("the multipart Content-Type has no boundary")
    charset = options.get(b"charset", b"utf-8").decode("latin-1")
    parts = _Parts(charset, max_files)
    try:
        parser = MultipartParser(boundary, parts.callbacks(), max_header_size=_MAX_HEADER_BYTES)
        parser.write(body)
        parser.finalize()
    except FormParserError:
        raise _malformed("invalid multipart data") from None
    if not parts.files:
        raise _malformed(f"no file: send images as multipart file fields named {FILE_FIELD!r}")
    return [(name, b"".join(chunks)) for name, chunks in parts.files]


class _Parts:
    """The parser's callbacks: the current part's headers, then its bytes."""

    def __init__(self, charset: str, max_files: int) -> None:
        self.charset, self.max_files = charset, max_files
        self.files: list[tuple[str, list[bytes]]] = []
        self._header: list[bytes] = [b"", b""]  # field, value
        self._disposition = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
        }

    def _begin(self) -> None:
        self._disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header[0] += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header[1] += data[start:end]

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.files[-1][1].append(data[start:end])

    def _header_end(self) -> None:
        field, value = self._header
        if field.lower() == b"content-disposition":
            self._disposition = value
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if options.get(b"name") != FILE_FIELD.encode() or b"filename" not in options:
            raise _malformed(f"send images as multipart file fields named {FILE_FIELD!r} (nothing else)")
        if len(self.files) == self.max_files:
            raise _malformed(f"too many files: at most {self.max_files} per request")
        self.files.append((_decoded(options[b"filename"], self.charset), []))


def _decoded(raw: bytes, charset: str) -> str:
    """A file name in the body's charset, or as latin-1 when that is no text encoding or does not fit
    (`punycode` and `idna` raise plain UnicodeError; `base64` is not a text encoding: LookupError)."""
    try:
        return raw.decode(charset)
    except (UnicodeError, LookupError, ValueError):
        return raw.decode("latin-1")


def _malformed(message: str) -> ApiError:
    return ApiError(400, "MalformedRequest", message)
