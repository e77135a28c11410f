"""The server's multipart reading: it reads what httpx encodes as Starlette's form parser does (the one
it replaces); anything else is a 400."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import UploadFile
from starlette.requests import Request

from imagenet_zoo.server.errors import ApiError
from imagenet_zoo.server.multipart import image_files


def _encoded(files: list[tuple[str, tuple[str, bytes, str]]]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://test/", files=files)
    return request.read(), request.headers["content-type"]


def _starlette(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    async def parse() -> list[tuple[str, bytes]]:
        request = Request({"type": "http", "headers": [(b"content-type", content_type.encode())]})
        request._body = body
        form = await request.form()
        files = [f for _, f in form.multi_items() if isinstance(f, UploadFile)]
        return [(f.filename or "", await f.read()) for f in files]

    return asyncio.run(parse())


names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@given(st.lists(st.tuples(names, st.binary(max_size=3000)), min_size=1, max_size=5))
@settings(max_examples=200, deadline=None)
def test_files_read_as_starlette_reads_them(files: list[tuple[str, bytes]]) -> None:
    body, content_type = _encoded([("file", (name, data, "image/jpeg")) for name, data in files])
    parsed = image_files(body, content_type, max_files=5)
    assert parsed == _starlette(body, content_type)
    assert [data for _, data in parsed] == [data for _, data in files]


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_any_bytes_are_files_or_a_400(noise: bytes) -> None:
    body, content_type = _encoded([("file", ("a.jpg", b"\xff\xd8jpeg", "image/jpeg"))])
    for candidate in (noise, body[: len(noise) % len(body)] + noise, body.replace(b"\r\n", noise[:2])):
        try:
            image_files(candidate, content_type, max_files=1)
        except ApiError as exc:
            assert (exc.status, exc.type) == (400, "MalformedRequest")


@pytest.mark.parametrize(
    ("files", "max_files", "message"),
    [
        ([("notes", ("a.txt", b"hi", "text/plain"))], 1, "named 'file'"),
        ([("file", ("a.jpg", b"x", "image/jpeg"))] * 3, 2, "too many files: at most 2"),
    ],
)
def test_refusals(files: list[tuple[str, tuple[str, bytes, str]]], max_files: int, message: str) -> None:
    body, content_type = _encoded(files)
    with pytest.raises(ApiError, match=message):
        image_files(body, content_type, max_files=max_files)


def test_malformed_bodies() -> None:
    body, content_type = _encoded([("file", ("a.jpg", b"\xff\xd8jpeg", "image/jpeg"))])
    field_only = body.replace(b'; filename="a.jpg"', b"")
    for broken, header in [
        (body, "multipart/form-data"),  # no boundary
        (b"", content_type),  # no part at all
        (field_only, content_type),  # a plain field, not a file
        (body.replace(b"Content-Disposition", b"X-Nothing"), content_type),  # a part without a name
    ]:
        with pytest.raises(ApiError) as caught:
            image_files(broken, header, max_files=1)
        assert caught.value.status == 400
